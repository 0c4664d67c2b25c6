// cordon-agent runs inside every sandbox, started by the sandbox's init (under a respawn loop), and
// serves the daemon: processes (pipes or a terminal, signals, reconnect), file operations and
// inotify watches, over one connection to a Unix socket the daemon listens on in a directory
// bind-mounted read-only at /.cordon/run. It dials out, so it needs no port and no listening
// socket, and it redials (with backoff) whenever the connection ends: a daemon restart, a
// checkpoint (the daemon asks it to hang up first and removes the socket until the restore), or a
// protocol error. Only Go's standard library; built static (CGO_ENABLED=0).
package main

import (
	"net"
	"os"
	"runtime/debug"
	"time"
)

const (
	protocolVersion = 1
	defaultSocket   = "/.cordon/run/agent.sock"
	dialMin         = 5 * time.Millisecond
	dialMax         = 500 * time.Millisecond
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "dump-env" {
		os.Exit(dumpEnv())
	}
	socket := defaultSocket
	if len(os.Args) > 2 && os.Args[1] == "-socket" {
		socket = os.Args[2]
	}
	// A small heap target: the agent idles in every sandbox.
	debug.SetGCPercent(50)
	a := newAgent()
	backoff := dialMin
	for {
		nc, err := net.Dial("unix", socket)
		if err != nil {
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
