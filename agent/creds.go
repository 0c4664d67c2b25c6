package main

// File operations run with the requesting user's identity, so the sandbox's own permission checks
// apply. Credentials are per thread in the kernel (and in gVisor), so a few goroutines each locked to
// an OS thread of their own take the jobs: switch the thread's effective ids and groups with raw
// system calls, run the operation, switch back to root (the real and saved ids stay 0, so that is
// allowed, and the kernel gives the capabilities back). A thread that cannot be switched back ends
// with its goroutine. Long-lived threads matter: threads count against a pids limit, and a thread
// the runtime cannot create under a full one would be fatal. setfsuid would be the natural call, but
// gVisor does not implement it.

import (
	"errors"
	"runtime"
	"syscall"
	"unsafe"
)

const credWorkers = 2

type credJob struct {
	u    *userSpec
	fn   func() error
	done chan error
}

var credJobs = make(chan credJob)

func isRoot(u *userSpec) bool { return u == nil || (u.UID == 0 && u.GID == 0) }

func startCredWorkers() {
	for i := 0; i < credWorkers; i++ {
		go credWorker()
	}
}

func credWorker() {
	runtime.LockOSThread()
	// No UnlockOSThread: should the thread keep a user's identity, it ends with this goroutine.
	groups, err := syscall.Getgroups()
	if err != nil {
		go credWorker()
		return
	}
	own := make([]uint32, len(groups))
	for i, g := range groups {
		own[i] = uint32(g)
	}
	// The thread keeps the last user's identity between jobs: the next job for the same user (the
	// usual case: a client works as one user) needs no switch, where each switch and switch back was
	// eight system calls, every one a trip into gVisor. Nothing but these jobs runs on this thread,
	// and the Go runtime starts no thread from a locked one, so no other code sees that identity.
	var cur *userSpec // nil: root
	for job := range credJobs {
		var err error
		if cur == nil || !sameIDs(cur, job.u) {
			if cur != nil && !toRoot(own) {
				job.done <- errors.New("a credential thread could not return to root")
				go credWorker()
				return
			}
			cur = nil
			if err = setIDs(job.u); err == nil {
				cur = &userSpec{UID: job.u.UID, GID: job.u.GID, Groups: append([]uint32(nil), job.u.Groups...)}
			} else if !toRoot(own) {
				job.done <- err
				go credWorker()
				return
			}
		}
		if err == nil {
			err = job.fn()
		}
		job.done <- err
	}
}

// toRoot switches this thread back to root with the agent's own groups, and says whether it is.
func toRoot(own []uint32) bool {
	return setIDs(&userSpec{UID: 0, GID: 0, Groups: own}) == nil && syscall.Geteuid() == 0 && syscall.Getegid() == 0
}

func sameIDs(a, b *userSpec) bool {
	if a.UID != b.UID || a.GID != b.GID || len(a.Groups) != len(b.Groups) {
		return false
	}
	for i := range a.Groups {
		if a.Groups[i] != b.Groups[i] {
			return false
		}
	}
	return true
}

// asUser runs fn with u's effective uid, gid and groups (root runs it in place). fn must not start
// goroutines of its own: they would run as root.
func asUser(u *userSpec, fn func() error) error {
	if isRoot(u) {
		return fn()
	}
	done := make(chan error, 1)
	credJobs <- credJob{u: u, fn: fn, done: done}
	return <-done
}

// setIDs switches this thread: groups first (that needs root), then the gid, then the uid.
func setIDs(u *userSpec) error {
	keep := ^uintptr(0) // -1: leave unchanged (the real and saved ids stay root)
	if u.UID == 0 {
		// Back to root: the uid first, which restores the capabilities the rest needs.
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, keep, 0, keep); e != 0 {
			return e
		}
	}
	groups := u.Groups
	var ptr unsafe.Pointer
	if len(groups) > 0 {
		ptr = unsafe.Pointer(&groups[0])
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, uintptr(len(groups)), uintptr(ptr), 0); e != 0 {
		return e
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, keep, uintptr(u.GID), keep); e != 0 {
		return e
	}
	if u.UID != 0 {
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, keep, uintptr(u.UID), keep); e != 0 {
			return e
		}
	}
	return nil
}
