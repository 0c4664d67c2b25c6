package main

// Streamed file contents: a read pumps a file out in chunks the daemon acknowledges (its window bounds
// what is in flight); a write copies the daemon's stream into the file.

import (
	"errors"
	"io"
	"os"
	"path"
	"syscall"
)

// readFile opens a file (following symlinks, never blocking on a FIFO) and streams it on req.Ch.
// errNotRegular refuses reads and writes of anything but a regular file.
var errNotRegular = &opError{"ENOTREG", "not a regular file"}

func readFile(c *conn, req *request) (map[string]any, error) {
	if req.Path == "" || req.Path[0] != '/' {
		return nil, &opError{"EINVAL", "path must be absolute"}
	}
	fd := -1
	var e *entry
	err := asUser(req.User, func() error {
		var err error
		fd, err = syscall.Open(req.Path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			fd = -1
			return &os.PathError{Op: "open", Path: req.Path, Err: err}
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			syscall.Close(fd)
			fd = -1
			return err
		}
		if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			syscall.Close(fd)
			fd = -1
			return &os.PathError{Op: "read", Path: req.Path, Err: syscall.EISDIR}
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			// A FIFO or device would block the stream or touch hardware; the exec path refuses them too.
			syscall.Close(fd)
			fd = -1
			return errNotRegular
		}
		e = entryOf(req.Path, &st, currentNames(req.User))
		return nil
	})
	if err != nil {
		return nil, err
	}
	// A small file is read and closed on the descriptor itself: an os.File costs three more system
	// calls (a flags query and the poller's registration and removal), each a trip into gVisor.
	if limit := min(req.Inline, maxInline); limit > 0 && e.Size <= int64(limit) {
		if data, ok := readSmall(fd, limit, e.Size); ok {
			syscall.Close(fd)
			return map[string]any{"entry": e, "data": data}, nil
		}
		// It grew since the stat: stream it from the start.
		if _, err := syscall.Seek(fd, 0, io.SeekStart); err != nil {
			syscall.Close(fd)
			return nil, err
		}
	}
	f := os.NewFile(uintptr(fd), req.Path)
	frame := frameSize(req.Frame)
	s := &readStream{c: c, ch: req.Ch, f: f, window: uint64(max(req.Window, frame)), frame: frame}
	s.limit = s.window
	s.cond.L = &s.mu
	if !c.registerOut(req.Ch, s) {
		f.Close()
		return nil, &opError{"EIO", "connection closed"}
	}
	c.reply(req.ID, map[string]any{"entry": e})
	go s.pump()
	return nil, errReplied
}

// readSmall reads a whole regular file of at most min(size, limit) bytes, size being what fstat said;
// false when there is more (it grew since) or a read fails. The buffer is the file's size, not the
// bound (no 64 KiB of garbage per small read), and a first read that stops short at exactly size
// bytes found the file as it was: the read that would only confirm the end is saved.
func readSmall(fd int, limit int, size int64) ([]byte, bool) {
	buf := make([]byte, int(min(int64(limit), size))+1)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || m < 0 {
			return nil, false
		}
		if m == 0 || (n == 0 && int64(m) == size && m < len(buf)) {
			return buf[:n+m], true
		}
		n += m
	}
	return nil, false
}

type readStream struct {
	c        *conn
	ch       uint32
	f        *os.File
	mu       syncMutex
	cond     syncCond
	sent     uint64
	limit    uint64
	window   uint64
	frame    int
	detached bool
}

func (s *readStream) ack(off uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off > s.sent {
		return errors.New("ack beyond the bytes sent")
	}
	if off+s.window > s.limit {
		s.limit = off + s.window
	}
	s.cond.Broadcast()
	return nil
}

func (s *readStream) detach() {
	s.mu.Lock()
	s.detached = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.f.Close()
}

func (s *readStream) pump() {
	defer s.f.Close()
	buf := make([]byte, s.frame)
	for {
		s.mu.Lock()
		for !s.detached && s.sent >= s.limit {
			s.cond.Wait()
		}
		if s.detached {
			s.mu.Unlock()
			return
		}
		room := int(min(s.limit-s.sent, uint64(len(buf))))
		s.mu.Unlock()
		n, err := s.f.Read(buf[:room])
		if n > 0 {
			noteWork(uint64(n))
			s.mu.Lock()
			s.sent += uint64(n)
			s.mu.Unlock()
			// send returns once the frame is written: buf is free again for the next read.
			if s.c.send(frameData, s.ch, buf[:n]) != nil {
				return
			}
		}
		if err == io.EOF {
			s.c.send(frameEOF, s.ch, nil)
			s.waitDetach()
			return
		}
		if err != nil {
			s.c.sendJSON(map[string]any{"op": "chErr", "ch": s.ch, "error": toOpError(err)})
			s.waitDetach()
			return
		}
	}
}

// waitDetach keeps the channel registered until the daemon cancels it (its last acks may still come).
func (s *readStream) waitDetach() {
	s.mu.Lock()
	for !s.detached {
		s.cond.Wait()
	}
	s.mu.Unlock()
}

// writeFile creates (or appends to) a file and copies the daemon's stream on req.Ch into it (or
// writes req.Data when the content came inline: in is nil); the reply comes once everything is written.
func writeFile(c *conn, req *request, in *inChan) (map[string]any, error) {
	if in != nil {
		defer c.closeIn(req.Ch)
	}
	if req.Path == "" || req.Path[0] != '/' {
		return nil, &opError{"EINVAL", "path must be absolute"}
	}
	fd := -1
	open := func() error {
		flags := syscall.O_WRONLY | syscall.O_CREAT | syscall.O_NONBLOCK | syscall.O_CLOEXEC
		if req.Append {
			flags |= syscall.O_APPEND
		} else {
			flags |= syscall.O_TRUNC
		}
		opened, err := syscall.Open(req.Path, flags, 0o666)
		if err == syscall.ENXIO { // a FIFO nobody reads (O_NONBLOCK)
			return errNotRegular
		}
		if err != nil {
			return &os.PathError{Op: "open", Path: req.Path, Err: err}
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(opened, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			syscall.Close(opened)
			if err != nil {
				return err
			}
			return errNotRegular
		}
		fd = opened
		return nil
	}
	err := asUser(req.User, func() error {
		// The file's directory usually exists: try the open first and make parents only when it fails
		// (a stat saved per write); the open is then tried again, so errors are what they were.
		if req.Parents && open() == nil {
			return nil
		}
		if req.Parents {
			if err := os.MkdirAll(path.Dir(req.Path), 0o777); err != nil {
				if !req.OwnParents || !errors.Is(err, syscall.EACCES) {
					return err
				}
				return errNeedParents
			}
		}
		return open()
	})
	if errors.Is(err, errNeedParents) {
		if err = ensureDirs(path.Dir(req.Path), req.User); err == nil {
			err = asUser(req.User, open)
		}
	}
	if err != nil {
		return nil, err
	}
	if in == nil {
		// Content that came inline is written and closed on the descriptor itself (see readFile).
		if err := writeAll(fd, req.Data); err != nil {
			syscall.Close(fd)
			return nil, &os.PathError{Op: "write", Path: req.Path, Err: err}
		}
		if err := syscall.Close(fd); err != nil {
			return nil, &os.PathError{Op: "close", Path: req.Path, Err: err}
		}
		return writeReply(req)
	}
	f := os.NewFile(uintptr(fd), req.Path)
	defer f.Close()
	var werr error
	for in != nil {
		b, eof, ok := in.next()
		if !ok {
			return nil, &opError{"EIO", "connection closed during the write"}
		}
		if eof {
			break
		}
		if werr == nil {
			_, werr = f.Write(b)
		}
		noteWork(uint64(len(b)))
		in.done(b)
		if werr != nil {
			return nil, werr
		}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return writeReply(req)
}

// writeAll writes b to a regular file's descriptor (a short write goes on where it stopped).
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// writeReply sets a written file's mode when asked and answers with its entry.
func writeReply(req *request) (map[string]any, error) {
	var out map[string]any
	err := asUser(req.User, func() error {
		if req.Mode != nil {
			if err := syscall.Chmod(req.Path, *req.Mode&0o7777); err != nil {
				return &os.PathError{Op: "chmod", Path: req.Path, Err: err}
			}
		}
		var e error
		out, e = statReply(req.Path, currentNames(req.User))
		return e
	})
	return out, err
}

var errNeedParents = errors.New("parents need root")
