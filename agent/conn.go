package main

// One connection to the daemon: the read loop that dispatches frames, the serialized writer, and the
// channels that live only as long as the connection (stdin and file-write inputs, output attachments,
// watches). Processes outlive a connection; the next one re-attaches to them.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

type userSpec struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
	// The daemon's key for the content of /etc/passwd and /etc/group as it just found them (see
	// currentNames); empty when it has none.
	Accounts string `json:"accounts,omitempty"`
}

type ttySize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// request is every message the daemon sends; each op reads the fields it needs.
type request struct {
	ID   uint32 `json:"id"`
	Op   string `json:"op"`
	Proc string `json:"proc,omitempty"`

	Args   []string        `json:"args,omitempty"`
	Env    []string        `json:"env,omitempty"`
	Cwd    string          `json:"cwd,omitempty"`
	User   *userSpec       `json:"user,omitempty"`
	Tty    *ttySize        `json:"tty,omitempty"`
	Nproc  uint64          `json:"nproc,omitempty"`
	Meta   json.RawMessage `json:"meta,omitempty"`
	Stdout uint32          `json:"stdout,omitempty"`
	Stderr uint32          `json:"stderr,omitempty"`
	Stdin  uint32          `json:"stdin,omitempty"`
	From   []uint64        `json:"from,omitempty"`
	Window int             `json:"window,omitempty"`
	Frame  int             `json:"frame,omitempty"` // largest data payload the daemon takes (default maxData)
	Signal int             `json:"signal,omitempty"`
	Tree   bool            `json:"tree,omitempty"`
	Cols   uint16          `json:"cols,omitempty"`
	Rows   uint16          `json:"rows,omitempty"`

	Path       string  `json:"path,omitempty"`
	To         string  `json:"to,omitempty"`
	Follow     bool    `json:"follow,omitempty"`
	Depth      int     `json:"depth,omitempty"`
	Mode       *uint32 `json:"mode,omitempty"`
	Append     bool    `json:"append,omitempty"`
	Parents    bool    `json:"parents,omitempty"`
	OwnParents bool    `json:"ownParents,omitempty"`
	Recursive  bool    `json:"recursive,omitempty"`
	MissingOk  bool    `json:"missingOk,omitempty"`
	Ch         uint32  `json:"ch,omitempty"`
	UID        *int64  `json:"uid,omitempty"`
	GID        *int64  `json:"gid,omitempty"`
	Name       string  `json:"name,omitempty"`
	Value      []byte  `json:"value,omitempty"`
	Action     string  `json:"action,omitempty"`
	MaxEntries int     `json:"maxEntries,omitempty"`
	// read: the largest file (bytes) the daemon takes inline in the reply (0: stream it).
	Inline int `json:"inline,omitempty"`
	// write with ch 0: the whole content (the daemon sends it only to an agent whose hello offers inline).
	Data []byte `json:"data,omitempty"`
}

// opError is an error with the errno name the daemon maps to its own error codes.
type opError struct {
	Errno   string `json:"errno"`
	Message string `json:"message"`
}

func (e *opError) Error() string { return e.Message }

type conn struct {
	a   *agent
	nc  *rawConn
	wmu sync.Mutex

	mu      sync.Mutex
	in      map[uint32]*inChan
	out     map[uint32]creditTarget
	watches map[uint32]*watcher
	closed  bool
}

// creditTarget is an outbound channel that the daemon's acks grant more room to.
type creditTarget interface {
	ack(off uint64) error
	detach()
}

func newConn(a *agent, nc *rawConn) *conn {
	return &conn{a: a, nc: nc, in: map[uint32]*inChan{}, out: map[uint32]creditTarget{}, watches: map[uint32]*watcher{}}
}

// send writes one frame: header and payload in one writev, without copying the payload. It returns
// once the frame is written, so the caller may reuse the payload's buffer.
func (c *conn) send(typ byte, ch uint32, payload []byte) error {
	var hdr [headerLen]byte
	putHeader(hdr[:], typ, ch, len(payload))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := c.nc.writev(hdr[:], payload)
	if err != nil {
		c.nc.Close()
	}
	return err
}

func (c *conn) sendJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxPayload {
		return fmt.Errorf("message of %d bytes is too large", len(b))
	}
	return c.send(frameJSON, 0, b)
}

func (c *conn) reply(id uint32, body map[string]any) {
	if body == nil {
		body = map[string]any{}
	}
	body["id"] = id
	c.sendJSON(body)
}

func (c *conn) replyErr(id uint32, err error) {
	c.sendJSON(map[string]any{"id": id, "error": toOpError(err)})
}

// serve runs the connection until it ends.
func (c *conn) serve() {
	r := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		f, err := readFrame(r)
		if err != nil {
			break
		}
		if err := c.handle(f); err != nil {
			break
		}
	}
	c.shutdown()
}

// handle acts on one frame. A data frame's payload goes to its channel's consumer, which recycles it;
// every other payload is recycled here (json.Unmarshal copies what it keeps).
func (c *conn) handle(f frame) error {
	if f.typ != frameData {
		defer recycle(f.payload)
	}
	switch f.typ {
	case frameJSON:
		var req request
		if err := json.Unmarshal(f.payload, &req); err != nil {
			return err
		}
		c.dispatch(&req)
	case frameData:
		if ic := c.inChan(f.ch); ic != nil {
			return ic.push(f.payload)
		}
		recycle(f.payload)
	case frameEOF:
		if ic := c.inChan(f.ch); ic != nil {
			ic.pushEOF()
		}
	case frameAck:
		if len(f.payload) != 8 {
			return errors.New("ack frame without an 8-byte offset")
		}
		c.mu.Lock()
		t := c.out[f.ch]
		c.mu.Unlock()
		if t != nil {
			return t.ack(beUint64(f.payload))
		}
	default:
		return fmt.Errorf("unknown frame type %d", f.typ)
	}
	return nil
}

func (c *conn) inChan(id uint32) *inChan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.in[id]
}

// openIn registers an input channel before anything can arrive on it.
func (c *conn) openIn(id uint32, window int) *inChan {
	ic := newInChan(c, id, window)
	c.mu.Lock()
	if c.closed {
		ic.closed = true
	} else {
		c.in[id] = ic
	}
	c.mu.Unlock()
	return ic
}

func (c *conn) closeIn(id uint32) {
	c.mu.Lock()
	delete(c.in, id)
	c.mu.Unlock()
}

// registerOut makes acks on channel id reach t; false when the connection is already gone.
func (c *conn) registerOut(id uint32, t creditTarget) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.out[id] = t
	return true
}

func (c *conn) unregisterOut(id uint32, t creditTarget) {
	c.mu.Lock()
	if c.out[id] == t {
		delete(c.out, id)
	}
	c.mu.Unlock()
}

func (c *conn) shutdown() {
	c.nc.Close()
	c.mu.Lock()
	c.closed = true
	ins, outs, ws := c.in, c.out, c.watches
	c.in, c.out, c.watches = map[uint32]*inChan{}, map[uint32]creditTarget{}, map[uint32]*watcher{}
	c.mu.Unlock()
	for _, ic := range ins {
		ic.close()
	}
	for _, t := range outs {
		t.detach()
	}
	for _, w := range ws {
		w.stop()
	}
	c.a.dropConn(c)
}

func (c *conn) dispatch(req *request) {
	switch req.Op {
	case "ping":
		c.reply(req.ID, nil)
	case "quiesce":
		// Before a checkpoint: nothing the checkpoint cannot save (this host socket) may stay open.
		// The daemon has already closed its listener, so the dial loop finds nothing until restore.
		fastRedialUntil.Store(time.Now().Add(quiescedRedialS * time.Second).UnixNano())
		// The descriptor is closed outright, with no call on it (see rawConn.Close): this runs on the
		// reading goroutine, and holding the write lock waits out a frame being sent.
		c.reply(req.ID, nil)
		c.wmu.Lock()
		c.nc.Close()
		c.wmu.Unlock()
	case "start":
		stdin := c.openIn(req.Stdin, stdinWindow)
		go c.run(req, func() (map[string]any, error) { return c.a.start(c, req, stdin) })
	case "attach":
		go c.run(req, func() (map[string]any, error) { return c.a.attach(c, req) })
	case "signal":
		go c.run(req, func() (map[string]any, error) { return nil, c.a.signal(req) })
	case "resize":
		go c.run(req, func() (map[string]any, error) { return nil, c.a.resize(req) })
	case "release":
		c.a.release(req.Proc)
		c.reply(req.ID, nil)
	case "write":
		var in *inChan
		if req.Ch != 0 {
			in = c.openIn(req.Ch, writeWindow)
		}
		go c.run(req, func() (map[string]any, error) { return writeFile(c, req, in) })
	case "read":
		go c.run(req, func() (map[string]any, error) { return readFile(c, req) })
	case "stat", "list", "mkdir", "move", "remove", "chmod", "chown", "xattr":
		go c.run(req, func() (map[string]any, error) { return fileOp(c, req) })
	case "watch":
		go c.run(req, func() (map[string]any, error) { return startWatch(c, req) })
	case "wsync":
		go c.run(req, func() (map[string]any, error) { return nil, c.syncWatch(req.Ch) })
	case "cancel":
		// The daemon stops reading a file, or abandons a write: end that channel's work.
		c.mu.Lock()
		t, ic := c.out[req.Ch], c.in[req.Ch]
		delete(c.out, req.Ch)
		delete(c.in, req.Ch)
		c.mu.Unlock()
		if t != nil {
			t.detach()
		}
		if ic != nil {
			ic.close()
		}
		c.reply(req.ID, nil)
	case "unwatch":
		c.stopWatch(req.Ch)
		c.reply(req.ID, nil)
	default:
		c.replyErr(req.ID, &opError{"EINVAL", "unknown op " + req.Op})
	}
}

func (c *conn) run(req *request, fn func() (map[string]any, error)) {
	body, err := fn()
	if err == errReplied {
		return
	}
	if err != nil {
		c.replyErr(req.ID, err)
		return
	}
	c.reply(req.ID, body)
}
