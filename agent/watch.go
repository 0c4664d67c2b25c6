package main

// Directory watches with inotify: one inotify instance per watch, a watch on every directory below
// the root when recursive (new directories are added as they appear, and what they already hold is
// reported as created). Events go to the daemon in batches as they are read, within a credit of
// events the daemon grants back as it consumes them; past it the agent stops reading and the
// kernel's queue absorbs (and, full, reports an overflow). A sync request returns only after every
// event already queued by the kernel has been sent, so an API write can wait for its own events.

import (
	"errors"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

const (
	watchMask = syscall.IN_CREATE | syscall.IN_MODIFY | syscall.IN_DELETE | syscall.IN_MOVED_FROM |
		syscall.IN_MOVED_TO | syscall.IN_ATTRIB | syscall.IN_DELETE_SELF | syscall.IN_MOVE_SELF | syscall.IN_ONLYDIR
	maxWatchesPerConn = 256
	maxDirsPerWatch   = 65536
	// Paths reported by a scan of a new directory: an inotify create for them right after is the same one.
	scanMemory = time.Second
)

type watchEvent struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	IsDir bool   `json:"isDir"`
}

type watcher struct {
	c         *conn
	ch        uint32
	root      string
	recursive bool
	user      *userSpec
	f         *os.File
	fd        int

	mu      sync.Mutex
	cond    sync.Cond
	dirs    map[int32]string // watch descriptor → directory relative to root ("" is the root)
	sent    uint64
	limit   uint64
	window  uint64
	syncs   []chan error
	stopped bool
	scanned map[string]time.Time
}

func startWatch(c *conn, req *request) (map[string]any, error) {
	if req.Path == "" || req.Path[0] != '/' {
		return nil, &opError{"EINVAL", "path must be absolute"}
	}
	c.mu.Lock()
	n := len(c.watches)
	c.mu.Unlock()
	if n >= maxWatchesPerConn {
		return nil, &opError{"EMFILE", "too many watches"}
	}
	w := &watcher{c: c, ch: req.Ch, root: req.Path, recursive: req.Recursive, user: req.User, dirs: map[int32]string{}, scanned: map[string]time.Time{}}
	w.cond.L = &w.mu
	w.window = uint64(max(req.Window, 1))
	w.limit = w.window
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, err
	}
	w.fd = fd
	w.f = os.NewFile(uintptr(fd), "inotify")
	if err := asUser(req.User, func() error { return w.addTree("", false) }); err != nil {
		w.f.Close()
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		w.f.Close()
		return nil, &opError{"EIO", "connection closed"}
	}
	c.watches[req.Ch] = w
	c.out[req.Ch] = w
	c.mu.Unlock()
	c.reply(req.ID, nil)
	go w.read()
	return nil, errReplied
}

// addTree watches rel (and, when recursive, every directory below it). With report, entries found
// below it are sent as created: they may have appeared before the watch did.
func (w *watcher) addTree(rel string, report bool) error {
	abs := path.Join(w.root, rel)
	wd, err := syscall.InotifyAddWatch(w.fd, abs, watchMask)
	if err != nil {
		if rel == "" {
			return &os.PathError{Op: "watch", Path: abs, Err: err}
		}
		return nil
	}
	w.mu.Lock()
	if len(w.dirs) >= maxDirsPerWatch {
		w.mu.Unlock()
		syscall.InotifyRmWatch(w.fd, uint32(wd))
		return nil
	}
	w.dirs[int32(wd)] = rel
	w.mu.Unlock()
	if !w.recursive {
		return nil
	}
	names, err := readDirNames(abs)
	if err != nil {
		return nil
	}
	var found []watchEvent
	for _, name := range names {
		child := path.Join(rel, name)
		var st syscall.Stat_t
		if syscall.Lstat(path.Join(w.root, child), &st) != nil {
			continue
		}
		isDir := st.Mode&syscall.S_IFMT == syscall.S_IFDIR
		if report {
			found = append(found, watchEvent{child, "create", isDir})
		}
		if isDir {
			w.addTree(child, report)
		}
	}
	if len(found) > 0 {
		now := time.Now()
		w.mu.Lock()
		for _, e := range found {
			w.scanned[e.Name] = now
		}
		w.mu.Unlock()
		w.emit(found)
	}
	return nil
}

func (w *watcher) ack(off uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if off > w.sent {
		return errors.New("ack beyond the events sent")
	}
	if off+w.window > w.limit {
		w.limit = off + w.window
	}
	w.cond.Broadcast()
	return nil
}

func (w *watcher) detach() { w.stop() }

func (w *watcher) stop() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	syncs := w.syncs
	w.syncs = nil
	w.cond.Broadcast()
	w.mu.Unlock()
	for _, s := range syncs {
		s <- errors.New("watch stopped")
	}
	w.f.Close()
}

// emit sends events, waiting for credit; false once the watch is stopped.
func (w *watcher) emit(evs []watchEvent) bool {
	for len(evs) > 0 {
		w.mu.Lock()
		for !w.stopped && w.sent >= w.limit {
			w.cond.Wait()
		}
		if w.stopped {
			w.mu.Unlock()
			return false
		}
		n := int(min(uint64(len(evs)), w.limit-w.sent, 256))
		w.sent += uint64(n)
		w.mu.Unlock()
		if w.c.sendJSON(map[string]any{"op": "wev", "ch": w.ch, "events": evs[:n]}) != nil {
			return false
		}
		evs = evs[n:]
	}
	return true
}

func (w *watcher) read() {
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if n > 0 {
			if !w.emit(w.decode(buf[:n])) {
				return
			}
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			w.mu.Lock()
			stopped := w.stopped
			w.mu.Unlock()
			if !stopped {
				w.c.sendJSON(map[string]any{"op": "chErr", "ch": w.ch, "error": toOpError(err)})
				w.stop()
			}
			return
		}
		if err != nil || n == 0 {
			// The deadline a sync set: everything queued before it has been read and sent.
			w.mu.Lock()
			syncs := w.syncs
			w.syncs = nil
			w.f.SetReadDeadline(time.Time{})
			w.mu.Unlock()
			for _, s := range syncs {
				s <- nil
			}
		}
	}
}

// sync resolves once every event the kernel queued before the call has been sent.
func (w *watcher) sync() error {
	done := make(chan error, 1)
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return errors.New("watch stopped")
	}
	w.syncs = append(w.syncs, done)
	// A deadline in the past makes the blocked read return once the queue is empty.
	w.f.SetReadDeadline(time.Now())
	w.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("sync timed out")
	}
}

func (w *watcher) decode(buf []byte) []watchEvent {
	var out []watchEvent
	now := time.Now()
	for off := 0; off+syscall.SizeofInotifyEvent <= len(buf); {
		raw := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
		nameBytes := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(raw.Len)]
		off += syscall.SizeofInotifyEvent + int(raw.Len)
		name := strings.TrimRight(string(nameBytes), "\x00")
		mask := raw.Mask
		if mask&syscall.IN_Q_OVERFLOW != 0 {
			out = append(out, watchEvent{Name: "", Type: "overflow"})
			continue
		}
		w.mu.Lock()
		dir, known := w.dirs[raw.Wd]
		if mask&syscall.IN_IGNORED != 0 {
			delete(w.dirs, raw.Wd)
		}
		for p, t := range w.scanned {
			if now.Sub(t) > scanMemory {
				delete(w.scanned, p)
			}
		}
		w.mu.Unlock()
		if !known || name == "" {
			if known && dir == "" && mask&(syscall.IN_DELETE_SELF|syscall.IN_MOVE_SELF) != 0 {
				out = append(out, watchEvent{Name: "", Type: "gone"})
			}
			continue
		}
		rel := path.Join(dir, name)
		isDir := mask&syscall.IN_ISDIR != 0
		switch {
		case mask&syscall.IN_CREATE != 0, mask&syscall.IN_MOVED_TO != 0:
			w.mu.Lock()
			_, dup := w.scanned[rel]
			delete(w.scanned, rel)
			w.mu.Unlock()
			if !dup {
				out = append(out, watchEvent{rel, "create", isDir})
			}
			if isDir && w.recursive {
				// Flush first so the events stay in order, then watch (and report) the new tree.
				if !w.emit(out) {
					return nil
				}
				out = nil
				asUser(w.user, func() error { return w.addTree(rel, true) })
			}
		case mask&syscall.IN_MODIFY != 0:
			out = append(out, watchEvent{rel, "write", isDir})
		case mask&syscall.IN_ATTRIB != 0:
			out = append(out, watchEvent{rel, "chmod", isDir})
		case mask&syscall.IN_DELETE != 0:
			out = append(out, watchEvent{rel, "remove", isDir})
		case mask&syscall.IN_MOVED_FROM != 0:
			out = append(out, watchEvent{rel, "rename", isDir})
		}
	}
	return out
}

func (c *conn) syncWatch(ch uint32) error {
	c.mu.Lock()
	w := c.watches[ch]
	c.mu.Unlock()
	if w == nil {
		return &opError{"ENOENT", "no such watch"}
	}
	return w.sync()
}

func (c *conn) stopWatch(ch uint32) {
	c.mu.Lock()
	w := c.watches[ch]
	delete(c.watches, ch)
	if c.out[ch] == w {
		delete(c.out, ch)
	}
	c.mu.Unlock()
	if w != nil {
		w.stop()
	}
}
