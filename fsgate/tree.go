package main

import (
	"context"
	"path"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Operations that change the directory tree: each checks the rules with the sandbox's path first, then
// acts through a descriptor of the parent directory opened beneath the root (see node.go).

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if errno := n.g.check("create", n.sandboxPath(name)); errno != 0 {
		return nil, nil, 0, errno
	}
	fd, err := n.g.open(path.Join(n.rel(), name), int(flags&^syscall.O_APPEND)|unix.O_CREAT, mode)
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	d, errno := n.dir()
	if errno != 0 {
		unix.Close(fd)
		return nil, nil, 0, errno
	}
	defer unix.Close(d)
	owner(ctx, d, name)
	ch, errno := n.child(ctx, d, name, out)
	if errno != 0 {
		unix.Close(fd)
		return nil, nil, 0, errno
	}
	return ch, fs.NewLoopbackFile(fd), 0, 0
}

// made: the common tail of mkdir, mknod, symlink and link.
func (n *node) made(ctx context.Context, d int, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	owner(ctx, d, name)
	return n.child(ctx, d, name, out)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.g.check("create", n.sandboxPath(name)); errno != 0 {
		return nil, errno
	}
	d, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(d)
	if err := unix.Mkdirat(d, name, mode); err != nil {
		return nil, toErrno(err)
	}
	return n.made(ctx, d, name, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	// Device nodes would be the host's devices to anyone on the host who opens them.
	if t := mode & syscall.S_IFMT; t == syscall.S_IFCHR || t == syscall.S_IFBLK {
		return nil, syscall.EPERM
	}
	if errno := n.g.check("create", n.sandboxPath(name)); errno != 0 {
		return nil, errno
	}
	d, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(d)
	if err := unix.Mknodat(d, name, mode, 0); err != nil {
		return nil, toErrno(err)
	}
	return n.made(ctx, d, name, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.g.check("create", n.sandboxPath(name)); errno != 0 {
		return nil, errno
	}
	d, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(d)
	if err := unix.Symlinkat(target, d, name); err != nil {
		return nil, toErrno(err)
	}
	return n.made(ctx, d, name, out)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	if errno := n.g.check("create", n.sandboxPath(name)); errno != 0 {
		return nil, errno
	}
	td, tname, errno := t.at()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(td)
	d, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(d)
	if err := unix.Linkat(td, tname, d, name, 0); err != nil {
		return nil, toErrno(err)
	}
	return n.made(ctx, d, name, out)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, 0)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, unix.AT_REMOVEDIR)
}

func (n *node) remove(name string, flags int) syscall.Errno {
	if errno := n.g.check("remove", n.sandboxPath(name)); errno != 0 {
		return errno
	}
	d, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(d)
	return toErrno(unix.Unlinkat(d, name, flags))
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if errno := n.g.check("rename", n.sandboxPath(name)); errno != 0 {
		return errno
	}
	if errno := n.g.check("rename", np.sandboxPath(newName)); errno != 0 {
		return errno
	}
	d1, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(d1)
	d2, errno := np.dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(d2)
	return toErrno(unix.Renameat2(d1, name, d2, newName, uint(flags)))
}
