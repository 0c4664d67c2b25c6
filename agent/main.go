// cordon-agent runs inside every sandbox, started by the sandbox's init (under cordon-supervise), and
// serves the daemon: processes (pipes or a terminal, signals, reconnect), file operations and
// inotify watches, over one connection to a Unix socket the daemon listens on in a directory
// bind-mounted read-only at /.cordon/run. It dials out, so it needs no port and no listening
// socket, and it redials (with backoff) whenever the connection ends: a daemon restart, a
// checkpoint (the daemon asks it to hang up first and removes the socket until the restore), or a
// protocol error. Only Go's standard library; built static (CGO_ENABLED=0).
package main

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	protocolVersion = 1
	defaultSocket   = "/.cordon/run/agent.sock"
	dialMin         = 5 * time.Millisecond
	dialMax         = 500 * time.Millisecond
	// After a quiesce the daemon comes back within a checkpoint's time (a resume, or the sandbox runs
	// on): redial at a steady short interval then, so the backoff does not delay the reconnect.
	dialQuiesced    = 5 * time.Millisecond
	quiescedRedialS = 30
)

// fastRedialUntil is when (unix ns) the steady redial after a quiesce gives way to the backoff again.
var fastRedialUntil atomic.Int64

func main() {
	if len(os.Args) > 1 && os.Args[1] == "dump-env" {
		os.Exit(dumpEnv())
	}
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		// The init runs it through cordon-supervise (supervisor/), which starts it again when it exits.
		os.Stderr.WriteString("usage: cordon-agent serve [-socket PATH] | dump-env\n")
		os.Exit(2)
	}
	socket := defaultSocket
	if len(os.Args) > 3 && os.Args[2] == "-socket" {
		socket = os.Args[3]
	}
	// Memory: see memory.go. Few threads: they count against a pids
	// limit (the sandbox gets a little headroom for them), and the agent waits on I/O anyway.
	setupMemory()
	runtime.GOMAXPROCS(2)
	startReaper()
	startCredWorkers()
	warmThreads()
	a := newAgent()
	backoff := dialMin
	for {
		nc, err := dialRaw(socket)
		if err != nil {
			if time.Now().UnixNano() < fastRedialUntil.Load() {
				time.Sleep(dialQuiesced)
				continue
			}
			time.Sleep(backoff)
			backoff = min(backoff*2, dialMax)
			continue
		}
		backoff = dialMin
		c := newConn(a, nc)
		a.setConn(c)
		c.serve()
	}
}

// warmThreads makes the runtime start a few threads now, while it can: they stay parked for later
// blocking calls, so the agent does not need a new thread (which would be fatal to fail) when a
// full pids limit leaves none. Five: the socket's blocking reader holds one for good, and a frame
// held up by a slow daemon holds another in its write.
func warmThreads() {
	const n = 5
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts := syscall.Timespec{Nsec: 20e6}
			syscall.Nanosleep(&ts, nil) // blocks its thread, so the others need threads of their own
		}()
	}
	wg.Wait()
}
