package main

import (
	"errors"
	"syscall"
)

var errnoNames = map[syscall.Errno]string{
	syscall.ENOENT: "ENOENT", syscall.EACCES: "EACCES", syscall.EPERM: "EPERM", syscall.EEXIST: "EEXIST",
	syscall.ENOTDIR: "ENOTDIR", syscall.EISDIR: "EISDIR", syscall.ENOSPC: "ENOSPC", syscall.EDQUOT: "EDQUOT",
	syscall.EROFS: "EROFS", syscall.ENOTEMPTY: "ENOTEMPTY", syscall.EXDEV: "EXDEV", syscall.ELOOP: "ELOOP",
	syscall.ENAMETOOLONG: "ENAMETOOLONG", syscall.EINVAL: "EINVAL", syscall.ENODATA: "ENODATA",
	syscall.EOPNOTSUPP: "EOPNOTSUPP", syscall.E2BIG: "E2BIG", syscall.EMFILE: "EMFILE", syscall.EBUSY: "EBUSY",
	syscall.ETXTBSY: "ETXTBSY", syscall.EFBIG: "EFBIG", syscall.EIO: "EIO", syscall.ERANGE: "ERANGE",
	syscall.ESRCH: "ESRCH", syscall.ENOTTY: "ENOTTY", syscall.EAGAIN: "EAGAIN",
}

// toOpError names the errno behind err, so the daemon can map it to its own error codes.
func toOpError(err error) *opError {
	var oe *opError
	if errors.As(err, &oe) {
		return oe
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		name, ok := errnoNames[errno]
		if !ok {
			name = "EIO"
		}
		return &opError{Errno: name, Message: errno.Error()}
	}
	return &opError{Errno: "EIO", Message: err.Error()}
}
