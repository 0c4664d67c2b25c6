package main

// File operations inside the sandbox, each with the requesting user's identity (creds.go). Paths are
// resolved by the sandbox's own kernel as the agent sees them, so `..` and symlinks stay inside.

import (
	"bytes"
	"errors"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"
)

const (
	listBatch      = 1000
	entryOverhead  = 512      // JSON of one entry besides its path (names, mode, times), generously
	maxListBytes   = 64 << 20 // as the exec path's listing bound (src/engine/files.ts)
	defaultMaxList = 100_000
	maxXattrValue  = 64 << 10
	busyboxPath    = "/.cordon/busybox"
	helperDeadline = 60 * time.Second
)

type entry struct {
	Path     string    `json:"path"`
	Type     string    `json:"type"`
	Size     int64     `json:"size"`
	Mode     uint32    `json:"mode"`
	UID      uint32    `json:"uid"`
	GID      uint32    `json:"gid"`
	Owner    string    `json:"owner"`
	Group    string    `json:"group"`
	Mtime    int64     `json:"mtime"`
	MtimeNs  int64     `json:"mtimeNs,omitempty"`
	Target   *string   `json:"target,omitempty"`
	Resolved *resolved `json:"resolved,omitempty"`
}

type resolved struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
}

func typeOf(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return "dir"
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFLNK:
		return "symlink"
	}
	return "other"
}

func entryOf(p string, st *syscall.Stat_t, n *names) *entry {
	e := &entry{
		Path: p, Type: typeOf(st.Mode), Size: st.Size, Mode: st.Mode, UID: st.Uid, GID: st.Gid,
		Owner: n.user(st.Uid), Group: n.group(st.Gid), Mtime: st.Mtim.Sec, MtimeNs: st.Mtim.Nsec,
	}
	if e.Type == "symlink" {
		if t, err := os.Readlink(p); err == nil {
			e.Target = &t
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			var rs syscall.Stat_t
			if syscall.Stat(r, &rs) == nil {
				abs := r
				if !filepath.IsAbs(abs) {
					abs = filepath.Join("/", abs)
				}
				e.Resolved = &resolved{Path: abs, Mode: rs.Mode}
			}
		}
	}
	return e
}

func statEntry(p string, follow bool, n *names) (*entry, error) {
	var st syscall.Stat_t
	var err error
	if follow {
		err = syscall.Stat(p, &st)
	} else {
		err = syscall.Lstat(p, &st)
	}
	if err != nil {
		return nil, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	return entryOf(p, &st, n), nil
}

func fileOp(c *conn, req *request) (map[string]any, error) {
	if req.Path == "" || req.Path[0] != '/' {
		return nil, &opError{"EINVAL", "path must be absolute"}
	}
	var out map[string]any
	err := asUser(req.User, func() error {
		var err error
		out, err = fileOpAsUser(c, req)
		return err
	})
	return out, err
}

func fileOpAsUser(c *conn, req *request) (map[string]any, error) {
	n := currentNames(req.User)
	switch req.Op {
	case "stat":
		e, err := statEntry(req.Path, req.Follow, n)
		if err != nil {
			return nil, err
		}
		return map[string]any{"entry": e}, nil
	case "list":
		return list(c, req, n)
	case "mkdir":
		if err := os.MkdirAll(req.Path, 0o777); err != nil {
			if !req.OwnParents || !errors.Is(err, syscall.EACCES) {
				return nil, err
			}
			if err := ensureDirs(req.Path, req.User); err != nil {
				return nil, err
			}
		}
		return statReply(req.Path, n)
	case "move":
		if req.To == "" || req.To[0] != '/' {
			return nil, &opError{"EINVAL", "to must be absolute"}
		}
		if err := move(req.Path, req.To, req.User); err != nil {
			return nil, err
		}
		return statReply(req.To, n)
	case "remove":
		if req.Path == "/" {
			return nil, &opError{"EINVAL", "refusing to remove /"}
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(req.Path, &st); err != nil {
			if errors.Is(err, syscall.ENOENT) && req.MissingOk {
				return nil, nil
			}
			return nil, &os.PathError{Op: "remove", Path: req.Path, Err: err}
		}
		if req.Recursive {
			return nil, os.RemoveAll(req.Path)
		}
		if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			return nil, &os.PathError{Op: "remove", Path: req.Path, Err: syscall.EISDIR}
		}
		return nil, syscall.Unlink(req.Path)
	case "chmod":
		if req.Mode == nil {
			return nil, &opError{"EINVAL", "chmod needs mode"}
		}
		if err := syscall.Chmod(req.Path, *req.Mode&0o7777); err != nil {
			return nil, err
		}
		return statReply(req.Path, n)
	case "chown":
		uid, gid := -1, -1
		if req.UID != nil {
			uid = int(*req.UID)
		}
		if req.GID != nil {
			gid = int(*req.GID)
		}
		if err := os.Chown(req.Path, uid, gid); err != nil {
			return nil, err
		}
		return statReply(req.Path, n)
	case "xattr":
		return xattr(req)
	}
	return nil, &opError{"EINVAL", "unknown file op"}
}

func statReply(p string, n *names) (map[string]any, error) {
	e, err := statEntry(p, false, n)
	if err != nil {
		return nil, err
	}
	return map[string]any{"entry": e}, nil
}

// list walks below dir to depth levels in WalkDir order (depth first, names in byte order); a
// symlink is listed, not followed. Entries go out in batches; unreadable subdirectories are skipped.
func list(c *conn, req *request, n *names) (map[string]any, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(req.Path, &st); err != nil {
		return nil, &os.PathError{Op: "list", Path: req.Path, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, &opError{"ENOTDIR", req.Path + " is not a directory"}
	}
	depth := max(1, min(req.Depth, 64))
	limit := req.MaxEntries
	if limit <= 0 {
		limit = defaultMaxList
	}
	batch := make([]*entry, 0, 64)
	// Long names make big entries: a batch goes out well before it could outgrow a frame.
	batchBytes, totalBytes := 0, 0
	total := 0
	var walk func(dir string, level int) error
	walk = func(dir string, level int) error {
		names, err := readDirNames(dir)
		if err != nil {
			if dir == req.Path {
				return err
			}
			return nil
		}
		for _, name := range names {
			p := path.Join(dir, name)
			var est syscall.Stat_t
			if syscall.Lstat(p, &est) != nil {
				continue
			}
			total++
			if total > limit {
				return &opError{"E2BIG", "more entries than the daemon accepts in one listing"}
			}
			batch = append(batch, entryOf(p, &est, n))
			batchBytes += len(p) + entryOverhead
			totalBytes += len(p) + entryOverhead
			if totalBytes > maxListBytes {
				return &opError{"E2BIG", "a listing larger than the daemon accepts"}
			}
			if len(batch) >= listBatch || batchBytes >= maxPayload/4 {
				if err := c.sendJSON(map[string]any{"id": req.ID, "more": true, "entries": batch}); err != nil {
					return err
				}
				batch = batch[:0]
				batchBytes = 0
			}
			if level < depth && est.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				if err := walk(p, level+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(req.Path, 1); err != nil {
		return nil, err
	}
	return map[string]any{"entries": batch}, nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sortStrings(names)
	return names, nil
}

// ensureDirs is envd's EnsureDirs: as root, create each missing component (0755) and give it to the
// user; an existing component that is not a directory is an error.
func ensureDirs(dir string, u *userSpec) error {
	return asRoot(func() error {
		p := "/"
		for _, part := range splitPath(dir) {
			p = path.Join(p, part)
			var st syscall.Stat_t
			err := syscall.Stat(p, &st)
			if err == nil {
				if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
					return &os.PathError{Op: "mkdir", Path: p, Err: syscall.ENOTDIR}
				}
				continue
			}
			if err := syscall.Mkdir(p, 0o755); err != nil && !errors.Is(err, syscall.EEXIST) {
				return &os.PathError{Op: "mkdir", Path: p, Err: err}
			}
			if u != nil {
				if err := os.Lchown(p, int(u.UID), int(u.GID)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// asRoot runs fn with root's identity even when called from a thread that switched to a user.
func asRoot(fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	return <-done
}

func splitPath(p string) []string {
	var out []string
	for _, s := range bytes.Split([]byte(p), []byte("/")) {
		if len(s) > 0 {
			out = append(out, string(s))
		}
	}
	return out
}

// move renames; moving onto an existing directory (into it) and across file systems are left to
// busybox mv, as the exec path does.
func move(from, to string, u *userSpec) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(from, &st); err != nil {
		return &os.PathError{Op: "move", Path: from, Err: err}
	}
	var dst syscall.Stat_t
	intoDir := syscall.Stat(to, &dst) == nil && dst.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if !intoDir {
		err := syscall.Rename(from, to)
		if err == nil || !errors.Is(err, syscall.EXDEV) {
			if err != nil {
				return &os.PathError{Op: "move", Path: to, Err: err}
			}
			return nil
		}
	}
	return runHelper(u, busyboxPath, "mv", "-f", "--", from, to)
}

// runHelper runs a short busybox command as the user and turns its failure into an error.
func runHelper(u *userSpec, args ...string) error {
	var cred *syscall.Credential
	if !isRoot(u) {
		groups := u.Groups
		if groups == nil {
			groups = []uint32{}
		}
		cred = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: groups}
	}
	_, stderr, ws, err := runCaptured(args[0], args, []string{"PATH=" + defaultPath}, "/", cred, helperDeadline)
	if err != nil {
		return err
	}
	if ws.ExitStatus() != 0 || ws.Signaled() {
		msg := string(stderr)
		for _, e := range []struct {
			text  string
			errno syscall.Errno
		}{{"No such file", syscall.ENOENT}, {"Permission denied", syscall.EACCES}, {"Operation not permitted", syscall.EPERM}, {"No space left", syscall.ENOSPC}, {"Read-only", syscall.EROFS}, {"Not a directory", syscall.ENOTDIR}, {"Is a directory", syscall.EISDIR}} {
			if bytes.Contains(stderr, []byte(e.text)) {
				return e.errno
			}
		}
		return &opError{"EIO", "mv failed: " + msg}
	}
	return nil
}

func xattr(req *request) (map[string]any, error) {
	switch req.Action {
	case "list":
		size, err := syscall.Listxattr(req.Path, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size)
		size, err = syscall.Listxattr(req.Path, buf)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, b := range bytes.Split(buf[:size], []byte{0}) {
			if len(b) > 0 {
				names = append(names, string(b))
			}
		}
		return map[string]any{"names": names}, nil
	case "get":
		buf := make([]byte, maxXattrValue)
		size, err := syscall.Getxattr(req.Path, req.Name, buf)
		if err != nil {
			return nil, err
		}
		return map[string]any{"value": buf[:size]}, nil
	case "set":
		if len(req.Value) > maxXattrValue {
			return nil, &opError{"E2BIG", "xattr value too large"}
		}
		return nil, syscall.Setxattr(req.Path, req.Name, req.Value, 0)
	case "remove":
		return nil, syscall.Removexattr(req.Path, req.Name)
	}
	return nil, &opError{"EINVAL", "xattr action must be list, get, set or remove"}
}
