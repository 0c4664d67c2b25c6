package main

// The wire format between the daemon and the agent. Every frame is a 9-byte header (payload length
// u32, type u8, channel u32, all big-endian) and its payload. Both sides refuse a frame whose payload
// is larger than maxPayload, and the connection ends on the first frame that breaks a rule.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	frameJSON = 1 // one JSON object: a request, a reply or an event
	frameData = 2 // raw bytes on a channel
	frameEOF  = 3 // the sender will put no more bytes on the channel
	frameAck  = 4 // u64: the receiver consumed the channel up to this absolute offset (grants credit)

	headerLen  = 9
	maxPayload = 1 << 20
	// Data frames carry at most this much, so one busy channel never holds the connection for long.
	maxData = 64 << 10
)

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
		f.payload = make([]byte, n)
		if _, err := io.ReadFull(r, f.payload); err != nil {
			return frame{}, err
		}
	}
	return f, nil
}

func encodeFrame(typ byte, ch uint32, payload []byte) []byte {
	buf := make([]byte, headerLen+len(payload))
	binary.BigEndian.PutUint32(buf[0:4], uint32(len(payload)))
	buf[4] = typ
	binary.BigEndian.PutUint32(buf[5:9], ch)
	copy(buf[headerLen:], payload)
	return buf
}

func ackPayload(off uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], off)
	return b[:]
}
