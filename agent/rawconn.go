package main

// The connection to the daemon on a plain blocking descriptor instead of Go's network poller. Under
// gVisor every system call is a trip into the sentry: with the poller, each request costs an epoll
// wait, the read that gets it and a read that finds nothing more; a blocking read is one call that
// returns with the request. Writes are one writev of header and payload.

import (
	"io"
	"net"
	"sync"
	"syscall"
	"unsafe"
)

type rawConn struct {
	fd int
	// Calls in progress, and whether Close came: the descriptor is closed by Close when nothing uses
	// it, else by the last call to return, so its number is never reused by another open while a
	// call may still use it, and Close never waits.
	mu      sync.Mutex
	users   int
	closing bool
}

// dialRaw connects a blocking Unix stream socket to path.
func dialRaw(path string) (*rawConn, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return &rawConn{fd: fd}, nil
}

func (r *rawConn) Read(p []byte) (int, error) {
	if !r.acquire() {
		return 0, net.ErrClosed
	}
	defer r.release()
	for {
		n, err := syscall.Read(r.fd, p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(p) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// writev writes all of bufs, in as few calls as the socket takes.
func (r *rawConn) writev(bufs ...[]byte) error {
	if !r.acquire() {
		return net.ErrClosed
	}
	defer r.release()
	for {
		iov := make([]syscall.Iovec, 0, len(bufs))
		for _, b := range bufs {
			if len(b) > 0 {
				v := syscall.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				iov = append(iov, v)
			}
		}
		if len(iov) == 0 {
			return nil
		}
		n, _, e := syscall.Syscall(syscall.SYS_WRITEV, uintptr(r.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		// A partial write: drop what went, go on with the rest.
		left := int(n)
		for len(bufs) > 0 && left >= len(bufs[0]) {
			left -= len(bufs[0])
			bufs = bufs[1:]
		}
		if len(bufs) == 0 {
			return nil
		}
		bufs[0] = bufs[0][left:]
	}
}

// shutdownSocket is syscall.Shutdown; the agent's tests count its calls.
var shutdownSocket = syscall.Shutdown

func (r *rawConn) acquire() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.users++
	return true
}

func (r *rawConn) release() {
	r.mu.Lock()
	r.users--
	last := r.closing && r.users == 0
	r.mu.Unlock()
	if last {
		syscall.Close(r.fd)
	}
}

// Close closes the descriptor at once when no call uses it. Otherwise it shuts the socket down, so a
// blocked read or write returns, and the last call to return closes it. It never waits.
//
// The shutdown is only for that case: the daemon takes the shutdown for the hang-up, and after a
// quiesce it then freezes the sandbox at once. A socket to the host that is shut down but still open
// cannot be checkpointed (runsc 20240729 fails to encode it, a nil pointer), so the quiesce closes
// with no call in progress (the "quiesce" case of conn.dispatch).
func (r *rawConn) Close() error {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return nil
	}
	r.closing = true
	if r.users == 0 {
		r.mu.Unlock()
		return syscall.Close(r.fd)
	}
	shutdownSocket(r.fd, syscall.SHUT_RDWR)
	r.mu.Unlock()
	return nil
}
