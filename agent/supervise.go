package main

// The agent as the sandbox init's child: a small supervisor that runs the serving agent as its own
// child and starts it again a second after it exits, so a crashed or killed agent never takes the
// sandbox down. It needs no fork to wait (a shell loop would, and a shell exits when a fork fails,
// as it does under a pids limit filled by a fork bomb); a fork that fails is simply tried again.
// Its stdio, and the agent's, go to /dev/null: the init's own output would reach a host log file.

import (
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

func supervise() {
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(20)
	devnull, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err == nil {
		for fd := 0; fd < 3; fd++ {
			syscall.Dup3(int(devnull.Fd()), fd, 0)
		}
	}
	self, err := os.Executable()
	if err != nil {
		self = "/.cordon/agent"
	}
	var mu sync.Mutex
	var child *os.Process
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		s := <-sigs
		mu.Lock()
		if child != nil {
			child.Signal(s)
		}
		mu.Unlock()
		os.Exit(0)
	}()
	for {
		p, err := os.StartProcess(self, []string{self, "serve"}, &os.ProcAttr{Env: os.Environ(), Files: []*os.File{devnull, devnull, devnull}})
		if err == nil {
			mu.Lock()
			child = p
			mu.Unlock()
			p.Wait()
			mu.Lock()
			child = nil
			mu.Unlock()
		}
		time.Sleep(time.Second)
	}
}
