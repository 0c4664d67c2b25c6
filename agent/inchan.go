package main

// Input channels: bytes the daemon streams to the agent (a process's stdin, a file being written).
// The daemon may send at most `window` bytes beyond what the agent acknowledged; the agent
// acknowledges as the consumer takes the bytes, so neither side buffers more than one window.

import (
	"encoding/binary"
	"fmt"
	"sync"
)

const (
	stdinWindow = 256 << 10
	// A file being written: the hello tells the daemon (a daemon that does not read it uses 512 KiB).
	// Large enough that the daemon never waits for an ack while the agent writes.
	writeWindow = 2 << 20
)

type inChan struct {
	c      *conn
	id     uint32
	window int

	mu       sync.Mutex
	cond     *sync.Cond
	q        [][]byte
	queued   int
	consumed uint64
	acked    uint64
	eof      bool
	closed   bool
}

func newInChan(c *conn, id uint32, window int) *inChan {
	ic := &inChan{c: c, id: id, window: window}
	ic.cond = sync.NewCond(&ic.mu)
	return ic
}

func (ic *inChan) push(b []byte) error {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.eof {
		return fmt.Errorf("data on channel %d after its end", ic.id)
	}
	if ic.queued+len(b) > ic.window {
		return fmt.Errorf("channel %d: the daemon sent past its credit", ic.id)
	}
	if len(b) == 0 {
		recycle(b)
		return nil
	}
	ic.q = append(ic.q, b)
	ic.queued += len(b)
	ic.cond.Broadcast()
	return nil
}

func (ic *inChan) pushEOF() {
	ic.mu.Lock()
	ic.eof = true
	ic.cond.Broadcast()
	ic.mu.Unlock()
}

func (ic *inChan) close() {
	ic.mu.Lock()
	ic.closed = true
	ic.cond.Broadcast()
	ic.mu.Unlock()
}

// next blocks for the next chunk. eof: the daemon ended the stream; ok false: the connection is gone.
func (ic *inChan) next() (b []byte, eof bool, ok bool) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	for len(ic.q) == 0 && !ic.eof && !ic.closed {
		ic.cond.Wait()
	}
	if len(ic.q) > 0 {
		b = ic.q[0]
		ic.q[0] = nil
		ic.q = ic.q[1:]
		return b, false, true
	}
	if ic.eof {
		return nil, true, true
	}
	return nil, false, false
}

// done acknowledges a consumed chunk (and recycles it: the consumer must not keep it); acks go out
// once a quarter window has gathered or the queue is empty.
func (ic *inChan) done(b []byte) {
	n := len(b)
	recycle(b)
	ic.mu.Lock()
	ic.queued -= n
	ic.consumed += uint64(n)
	send := ic.consumed-ic.acked >= uint64(ic.window/4) || len(ic.q) == 0
	off := ic.consumed
	if send {
		ic.acked = off
	}
	ic.mu.Unlock()
	if send {
		ic.c.send(frameAck, ic.id, ackPayload(off))
	}
}

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
