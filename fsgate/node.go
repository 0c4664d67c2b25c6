package main

import (
	"context"
	"fmt"
	"path"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// gate is the state every node shares: the source directory (held open) and the policy.
type gate struct {
	rootFd int
	dev    uint64
	cfg    *Config
	ev     *emitter
}

// node serves one file of the source. Every host access goes through openat2 from the held root with
// RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS, then *at calls with the last name and no following: a link
// in the source (or one swapped in by someone else sharing the directory) never leads the gate outside.
// Links are handed to the sandbox as links; its own kernel resolves them in its own view.
type node struct {
	fs.Inode
	g *gate
}

var (
	_ fs.NodeLookuper   = (*node)(nil)
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeCreater    = (*node)(nil)
	_ fs.NodeMkdirer    = (*node)(nil)
	_ fs.NodeMknoder    = (*node)(nil)
	_ fs.NodeUnlinker   = (*node)(nil)
	_ fs.NodeRmdirer    = (*node)(nil)
	_ fs.NodeRenamer    = (*node)(nil)
	_ fs.NodeSymlinker  = (*node)(nil)
	_ fs.NodeLinker     = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
	_ fs.NodeReaddirer  = (*node)(nil)
	_ fs.NodeOpendirer  = (*node)(nil)
	_ fs.NodeStatfser   = (*node)(nil)
)

func (n *node) rel() string { return n.Path(n.Root()) }

// sandboxPath: what the sandbox calls this file (rules and events speak in these paths).
func (n *node) sandboxPath(name string) string {
	return path.Join(n.g.cfg.Prefix, n.rel(), name)
}

// check applies the rules to op on p: EACCES (and a block event) when refused, an allow event when
// events cover p.
func (g *gate) check(op, p string) syscall.Errno {
	if blocked(g.cfg.Rules, op, p) {
		g.ev.emit(op, p, "block")
		return syscall.EACCES
	}
	if reported(g.cfg.Events, p) {
		g.ev.emit(op, p, "allow")
	}
	return 0
}

// openFlags: what an open from the sandbox may carry to the host (openat2 refuses unknown bits).
const openFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_NONBLOCK |
	unix.O_DSYNC | unix.O_SYNC | unix.O_DIRECTORY | unix.O_NOATIME | unix.O_LARGEFILE | unix.O_PATH

func (g *gate) open(rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(g.rootFd, rel, &unix.OpenHow{
		Flags:   uint64(flags&openFlags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode & 07777),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// dir opens the node's own directory (as the parent of a name).
func (n *node) dir() (int, syscall.Errno) {
	fd, err := n.g.open(n.rel(), unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, fs.ToErrno(err)
}

// at: the parent directory and last name of this node (the root: itself and "").
func (n *node) at() (int, string, syscall.Errno) {
	rel := n.rel()
	if rel == "" {
		fd, err := unix.Dup(n.g.rootFd)
		return fd, "", fs.ToErrno(err)
	}
	fd, err := n.g.open(path.Dir(rel), unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, path.Base(rel), fs.ToErrno(err)
}

func (n *node) stat(st *unix.Stat_t) syscall.Errno {
	fd, name, errno := n.at()
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	if name == "" {
		return fs.ToErrno(unix.Fstat(fd, st))
	}
	return fs.ToErrno(unix.Fstatat(fd, name, st, unix.AT_SYMLINK_NOFOLLOW))
}

func (g *gate) stable(st *unix.Stat_t) fs.StableAttr {
	swapped := (uint64(st.Dev) << 32) | (uint64(st.Dev) >> 32)
	root := (g.dev << 32) | (g.dev >> 32)
	return fs.StableAttr{Mode: st.Mode, Gen: 1, Ino: (swapped ^ root) ^ st.Ino}
}

func toSyscall(st *unix.Stat_t) *syscall.Stat_t {
	return &syscall.Stat_t{Dev: st.Dev, Ino: st.Ino, Nlink: st.Nlink, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Rdev: st.Rdev,
		Size: st.Size, Blksize: st.Blksize, Blocks: st.Blocks,
		Atim: syscall.Timespec{Sec: st.Atim.Sec, Nsec: st.Atim.Nsec}, Mtim: syscall.Timespec{Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec}, Ctim: syscall.Timespec{Sec: st.Ctim.Sec, Nsec: st.Ctim.Nsec}}
}

// child looks name up in dir fd and makes its inode.
func (n *node) child(ctx context.Context, fd int, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fs.ToErrno(err)
	}
	out.Attr.FromStat(toSyscall(&st))
	return n.NewInode(ctx, &node{g: n.g}, n.g.stable(&st)), 0
}

// owner gives a new file to the caller (the gate runs as root).
func owner(ctx context.Context, fd int, name string) {
	if c, ok := fuse.FromContext(ctx); ok {
		unix.Fchownat(fd, name, int(c.Uid), int(c.Gid), unix.AT_SYMLINK_NOFOLLOW)
	}
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	fd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(fd)
	return n.child(ctx, fd, name, out)
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fg, ok := f.(fs.FileGetattrer); ok && f != nil {
		return fg.Getattr(ctx, out)
	}
	var st unix.Stat_t
	if errno := n.stat(&st); errno != 0 {
		return errno
	}
	out.FromStat(toSyscall(&st))
	return 0
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	p := n.sandboxPath("")
	fd, name, errno := n.at()
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	if m, ok := in.GetMode(); ok {
		if errno := n.g.check("chmod", p); errno != 0 {
			return errno
		}
		// chmod has no "do not follow" form before Linux 6.6: change it through a descriptor of the file itself.
		target, err := unix.Openat(fd, nonEmpty(name), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		err = unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", target), m&07777)
		unix.Close(target)
		if err != nil {
			return fs.ToErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		if errno := n.g.check("chown", p); errno != 0 {
			return errno
		}
		su, sg := -1, -1
		if uok {
			su = int(uid)
		}
		if gok {
			sg = int(gid)
		}
		if err := unix.Fchownat(fd, name, su, sg, unix.AT_SYMLINK_NOFOLLOW|atEmpty(name)); err != nil {
			return fs.ToErrno(err)
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		if errno := n.g.check("write", p); errno != 0 {
			return errno
		}
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		if err := unix.UtimesNanoAt(fd, nonEmpty(name), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fs.ToErrno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		if errno := n.g.check("write", p); errno != 0 {
			return errno
		}
		if fsa, ok := f.(fs.FileSetattrer); ok && f != nil {
			// Through the open descriptor (already allowed to write).
			sizeOnly := fuse.SetAttrIn{}
			sizeOnly.Valid = fuse.FATTR_SIZE
			sizeOnly.Size = sz
			if errno := fsa.Setattr(ctx, &sizeOnly, out); errno != 0 {
				return errno
			}
		} else {
			w, err := n.g.open(n.rel(), unix.O_WRONLY, 0)
			if err != nil {
				return toErrno(err)
			}
			err = unix.Ftruncate(w, int64(sz))
			unix.Close(w)
			if err != nil {
				return toErrno(err)
			}
		}
	}
	return n.Getattr(ctx, nil, out)
}

func nonEmpty(name string) string {
	if name == "" {
		return "."
	}
	return name
}

func atEmpty(name string) int {
	if name == "" {
		return unix.AT_EMPTY_PATH
	}
	return 0
}

func toErrno(err error) syscall.Errno { return fs.ToErrno(err) }

// accessOp: what opening with these flags does.
func accessOps(flags uint32) []string {
	switch {
	case flags&syscall.O_ACCMODE == syscall.O_RDWR:
		return []string{"read", "write"}
	case flags&syscall.O_ACCMODE == syscall.O_WRONLY || flags&syscall.O_TRUNC != 0:
		return []string{"write"}
	}
	return []string{"read"}
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	p := n.sandboxPath("")
	for _, op := range accessOps(flags) {
		if errno := n.g.check(op, p); errno != 0 {
			return nil, 0, errno
		}
	}
	fd, err := n.g.open(n.rel(), int(flags&^(syscall.O_APPEND|syscall.O_CREAT|syscall.O_EXCL)), 0)
	if err != nil {
		return nil, 0, toErrno(err)
	}
	return fs.NewLoopbackFile(fd), 0, 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if errno := n.g.check("read", n.sandboxPath("")); errno != 0 {
		return nil, errno
	}
	fd, name, errno := n.at()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	sz, err := unix.Readlinkat(fd, name, buf)
	if err != nil {
		return nil, toErrno(err)
	}
	return buf[:sz], 0
}

func (n *node) Opendir(ctx context.Context) syscall.Errno {
	return n.g.check("list", n.sandboxPath(""))
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	fd, err := n.g.open(n.rel(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, toErrno(err)
	}
	defer unix.Close(fd)
	// The descriptor is the directory already resolved beneath the root; its /proc name reopens exactly it.
	return fs.NewLoopbackDirStream(fmt.Sprintf("/proc/self/fd/%d", fd))
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s unix.Statfs_t
	if err := unix.Fstatfs(n.g.rootFd, &s); err != nil {
		return toErrno(err)
	}
	out.Blocks, out.Bfree, out.Bavail, out.Files, out.Ffree = s.Blocks, s.Bfree, s.Bavail, s.Files, s.Ffree
	out.Bsize, out.NameLen, out.Frsize = uint32(s.Bsize), uint32(s.Namelen), uint32(s.Frsize)
	return 0
}
