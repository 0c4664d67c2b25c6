package main

import (
	"bufio"
	"encoding/json"
	"syscall"
	"testing"
	"time"
)

// pair gives a rawConn on one end of a Unix stream socket pair and the other end's descriptor.
func pair(t *testing.T) (*rawConn, int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fds[1]) })
	return &rawConn{fd: fds[0]}, fds[1]
}

// countShutdowns makes shutdownSocket count its calls for the rest of the test.
func countShutdowns(t *testing.T) *int {
	n := new(int)
	orig := shutdownSocket
	shutdownSocket = func(fd, how int) error { *n++; return orig(fd, how) }
	t.Cleanup(func() { shutdownSocket = orig })
	return n
}

func isOpen(fd int) bool {
	_, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	return e == 0
}

type fdReader int

func (f fdReader) Read(p []byte) (int, error) {
	n, err := syscall.Read(int(f), p)
	if n < 0 {
		n = 0
	}
	return n, err
}

// The daemon takes the agent's hang-up for the moment to freeze the sandbox for its checkpoint, and
// runsc cannot save a host socket that is shut down but still open: the quiesce must close the
// descriptor outright, never shut it down first.
func TestQuiesceClosesTheSocketWithoutShuttingItDown(t *testing.T) {
	shutdowns := countShutdowns(t)
	rc, peer := pair(t)
	fd := rc.fd
	c := newConn(nil, rc)
	c.dispatch(&request{ID: 7, Op: "quiesce"})
	if *shutdowns != 0 {
		t.Fatalf("the quiesce shut the socket down %d time(s) before closing it", *shutdowns)
	}
	if isOpen(fd) {
		t.Fatal("the descriptor is still open after the quiesce")
	}
	f, err := readFrame(bufio.NewReader(fdReader(peer)))
	if err != nil {
		t.Fatalf("no reply before the hang-up: %v", err)
	}
	var reply map[string]any
	if err := json.Unmarshal(f.payload, &reply); err != nil || reply["id"] != float64(7) {
		t.Fatalf("reply %q (%v), want id 7", f.payload, err)
	}
}

// A call in progress is woken by a shutdown, and the last call to return closes the descriptor;
// Close itself does not wait for it.
func TestCloseWakesABlockedReadAndTheReadClosesTheDescriptor(t *testing.T) {
	shutdowns := countShutdowns(t)
	rc, _ := pair(t)
	fd := rc.fd
	done := make(chan error, 1)
	go func() {
		_, err := rc.Read(make([]byte, 16))
		done <- err
	}()
	// Wait for the read to be in progress.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		rc.mu.Lock()
		users := rc.users
		rc.mu.Unlock()
		if users == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the read never started")
		}
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the read returned no error after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the blocked read")
	}
	if *shutdowns != 1 {
		t.Fatalf("%d shutdowns, want 1 (to wake the read)", *shutdowns)
	}
	if isOpen(fd) {
		t.Fatal("the descriptor stayed open after the last call returned")
	}
	if _, err := rc.Read(make([]byte, 1)); err == nil {
		t.Fatal("a read after Close did not fail")
	}
}
