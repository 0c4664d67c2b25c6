package main

// File operations run with the requesting user's identity, so the sandbox's own permission checks
// apply. Credentials are per thread in the kernel (and in gVisor): the operation runs on a goroutine
// locked to its own OS thread that switches its effective ids and groups with raw system calls, and
// that thread is never reused (a goroutine that exits while locked takes its thread with it).
// setfsuid would be the natural call, but gVisor does not implement it.

import (
	"runtime"
	"syscall"
	"unsafe"
)

func isRoot(u *userSpec) bool { return u == nil || (u.UID == 0 && u.GID == 0) }

// asUser runs fn with u's effective uid, gid and groups (root runs it in place).
func asUser(u *userSpec, fn func() error) error {
	if isRoot(u) {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread ends with this goroutine, its changed identity with it.
		if err := becomeUser(u); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}

func becomeUser(u *userSpec) error {
	groups := u.Groups
	var ptr unsafe.Pointer
	if len(groups) > 0 {
		ptr = unsafe.Pointer(&groups[0])
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, uintptr(len(groups)), uintptr(ptr), 0); e != 0 {
		return e
	}
	keep := ^uintptr(0) // -1: leave unchanged (the real and saved ids stay root)
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, keep, uintptr(u.GID), keep); e != 0 {
		return e
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, keep, uintptr(u.UID), keep); e != 0 {
		return e
	}
	return nil
}
