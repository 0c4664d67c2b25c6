package main

// The wire format between the daemon and the agent. Every frame is a 9-byte header (payload length
// u32, type u8, channel u32, all big-endian) and its payload. Both sides refuse a frame whose payload
// is larger than maxPayload, and the connection ends on the first frame that breaks a rule.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

const (
	frameJSON = 1 // one JSON object: a request, a reply or an event
	frameData = 2 // raw bytes on a channel
	frameEOF  = 3 // the sender will put no more bytes on the channel
	frameAck  = 4 // u64: the receiver consumed the channel up to this absolute offset (grants credit)

	headerLen  = 9
	maxPayload = 1 << 20
	// Data frames carry at most maxData unless the daemon's request says it takes larger ones (up to
	// maxDataLimit): fewer, larger frames cost fewer system calls and wake-ups under gVisor, and one
	// busy channel still never holds the connection for long.
	maxData      = 64 << 10
	maxDataLimit = 256 << 10
	// A file of at most this many bytes travels inside the request or reply itself (base64 in the
	// JSON) instead of on a channel: a small read or write is then one frame each way, with no
	// channel, acknowledgement, end-of-stream frame or cancel round trip. The hello says so.
	maxInline = 64 << 10
)

// frameSize is the data payload to use for a request: what the daemon said it accepts, within bounds.
func frameSize(asked int) int {
	if asked <= maxData {
		return maxData
	}
	return min(asked, maxDataLimit)
}

var errFrameTooBig = errors.New("frame larger than the protocol allows")

type frame struct {
	typ     byte
	ch      uint32
	payload []byte
}

func readFrame(r io.Reader) (frame, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n > maxPayload {
		return frame{}, fmt.Errorf("%w: %d bytes", errFrameTooBig, n)
	}
	f := frame{typ: hdr[4], ch: binary.BigEndian.Uint32(hdr[5:9])}
	if n > 0 {
		f.payload = payloadBuf(int(n))
		if _, err := io.ReadFull(r, f.payload); err != nil {
			return frame{}, err
		}
	}
	return f, nil
}

// Payload buffers are reused: a stream of 100 MiB would otherwise allocate 100 MiB, and with the
// agent's small heap target every few hundred KiB of garbage is a collection (costly in gVisor).
var payloadPool = sync.Pool{New: func() any { b := make([]byte, maxDataLimit); return &b }}

func payloadBuf(n int) []byte {
	if n > maxDataLimit {
		return make([]byte, n)
	}
	return (*payloadPool.Get().(*[]byte))[:n]
}

// recycle hands a payload back once nothing refers to it any more.
func recycle(b []byte) {
	if cap(b) == maxDataLimit {
		b = b[:maxDataLimit]
		payloadPool.Put(&b)
	}
}

func putHeader(hdr []byte, typ byte, ch uint32, n int) {
	binary.BigEndian.PutUint32(hdr[0:4], uint32(n))
	hdr[4] = typ
	binary.BigEndian.PutUint32(hdr[5:9], ch)
}

func ackPayload(off uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], off)
	return b[:]
}
