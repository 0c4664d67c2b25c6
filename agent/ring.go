package main

// The output of one process stream: read from its pipe into a bounded ring that keeps the newest
// bytes for replay, and sent to the daemon as credit allows. The pipe is read only while the bytes
// the daemon has not acknowledged fit in the ring, so a daemon that stops acknowledging (its client
// is slow, or the daemon is restarting) makes the process block in write, and nothing unacknowledged
// is ever dropped. Offsets are absolute byte counts since the stream began.

import (
	"fmt"
	"io"
	"os"
	"sync"
)

const readChunk = 32 << 10

type ring struct {
	capacity int

	mu      sync.Mutex
	cond    *sync.Cond
	data    []byte // bytes [base, written)
	base    uint64
	written uint64
	acked   uint64
	eof     bool
	att     *attachment
	src     *os.File // the pipe or terminal it is filled from
}

func newRing(capacity int) *ring {
	r := &ring{capacity: capacity}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// fill copies the pipe into the ring until it ends; closes src afterwards.
func (r *ring) fill(src io.ReadCloser) {
	defer src.Close()
	buf := make([]byte, readChunk)
	for {
		r.mu.Lock()
		for r.written-r.acked >= uint64(r.capacity) && !r.eof {
			r.cond.Wait()
		}
		if r.eof { // released while waiting
			r.mu.Unlock()
			return
		}
		room := r.capacity - int(r.written-r.acked)
		r.mu.Unlock()
		n, err := src.Read(buf[:min(room, len(buf))])
		r.mu.Lock()
		if n > 0 {
			noteWork(uint64(n))
			r.data = append(r.data, buf[:n]...)
			r.written += uint64(n)
			if over := len(r.data) - r.capacity; over > 0 {
				// Only acknowledged bytes are ever this old (see the wait above).
				r.base += uint64(over)
				if cap(r.data) > 2*r.capacity {
					r.data = append([]byte(nil), r.data[over:]...)
				} else {
					r.data = r.data[over:]
				}
			}
			r.cond.Broadcast()
		}
		if err != nil {
			r.eof = true
			r.cond.Broadcast()
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
}

// stop makes fill return without reading more (the process was released).
func (r *ring) stop() {
	r.mu.Lock()
	r.eof = true
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *ring) state() (base, written uint64, eof bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.base, r.written, r.eof
}

// attachment sends a ring's bytes from an offset on one channel of one connection.
type attachment struct {
	r        *ring
	c        *conn
	ch       uint32
	window   uint64
	frame    uint64
	sent     uint64
	limit    uint64
	detached bool
}

// attach prepares sending from `from` (or the oldest byte kept) on channel ch and returns the
// attachment and its first offset; the caller starts it with go att.pump() once the daemon has been
// told that offset.
func (r *ring) attach(c *conn, ch uint32, from uint64, window, frame int) (*attachment, uint64) {
	r.mu.Lock()
	if r.att != nil {
		r.att.detached = true
	}
	start := max(from, r.base)
	if start > r.written {
		start = r.written
	}
	a := &attachment{r: r, c: c, ch: ch, window: uint64(window), frame: uint64(frame), sent: start, limit: start + uint64(window)}
	r.att = a
	r.cond.Broadcast()
	r.mu.Unlock()
	if !c.registerOut(ch, a) {
		a.detach()
	}
	return a, start
}

func (a *attachment) ack(off uint64) error {
	r := a.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if off > a.sent {
		return fmt.Errorf("channel %d: ack of offset %d beyond the %d bytes sent", a.ch, off, a.sent)
	}
	if off > r.acked {
		r.acked = off
	}
	if off+a.window > a.limit {
		a.limit = off + a.window
	}
	r.cond.Broadcast()
	return nil
}

func (a *attachment) detach() {
	a.r.mu.Lock()
	a.detached = true
	a.r.cond.Broadcast()
	a.r.mu.Unlock()
}

func (a *attachment) pump() {
	r := a.r
	defer a.c.unregisterOut(a.ch, a)
	var buf []byte // one frame's bytes, copied out of the ring (which moves) and reused: send is synchronous
	for {
		r.mu.Lock()
		for !a.detached && min(r.written, a.limit) <= a.sent && !(r.eof && a.sent >= r.written) {
			r.cond.Wait()
		}
		if a.detached {
			r.mu.Unlock()
			return
		}
		if end := min(r.written, a.limit); end > a.sent {
			start := max(a.sent, r.base)
			end = min(end, start+a.frame)
			chunk := append(buf[:0], r.data[start-r.base:end-r.base]...)
			buf = chunk
			a.sent = end
			r.mu.Unlock()
			if a.c.send(frameData, a.ch, chunk) != nil {
				return
			}
			continue
		}
		r.mu.Unlock()
		a.c.send(frameEOF, a.ch, nil)
		// Stay registered: the daemon's last acks still arrive on this channel.
		r.mu.Lock()
		for !a.detached {
			r.cond.Wait()
		}
		r.mu.Unlock()
		return
	}
}
