package main

// One reaper for every child: on SIGCHLD it collects exit statuses with wait4(-1, WNOHANG) and hands
// each to whoever waits for that pid. os.Process.Wait would park an OS thread per running child,
// and threads count against a sandbox's pids limit like processes do.

import (
	"bytes"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

var (
	reapMu  sync.Mutex
	waiters = map[int]chan syscall.WaitStatus{}
	// Statuses of children that exited before anyone asked (a fast child, before waitPid).
	early = map[int]syscall.WaitStatus{}
)

func startReaper() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD)
	go func() {
		tick := time.NewTicker(5 * time.Second) // a lost signal cannot strand a waiter
		for {
			select {
			case <-ch:
			case <-tick.C:
			}
			reapAll()
		}
	}()
}

func reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		reapMu.Lock()
		if c := waiters[pid]; c != nil {
			delete(waiters, pid)
			c <- ws
		} else if len(early) < 4096 {
			early[pid] = ws
		}
		reapMu.Unlock()
	}
}

// waitPid blocks until the child exits and returns its status.
func waitPid(pid int) syscall.WaitStatus {
	reapMu.Lock()
	if ws, ok := early[pid]; ok {
		delete(early, pid)
		reapMu.Unlock()
		return ws
	}
	c := make(chan syscall.WaitStatus, 1)
	waiters[pid] = c
	reapMu.Unlock()
	reapAll()
	return <-c
}

// runCaptured runs a short helper as cred (nil: as the agent), waits for it (killing it at the
// deadline) and returns its output.
func runCaptured(path string, args, env []string, dir string, cred *syscall.Credential, deadline time.Duration) (stdout, stderr []byte, ws syscall.WaitStatus, err error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, 0, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(outR, outW)
		return nil, nil, 0, err
	}
	devnull, _ := os.Open("/dev/null")
	sys := &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	var p *os.Process
	err = asRoot(func() error {
		var e error
		p, e = os.StartProcess(path, args, &os.ProcAttr{Dir: dir, Env: env, Files: []*os.File{devnull, outW, errW}, Sys: sys})
		return e
	})
	closeAll(outW, errW, devnull)
	if err != nil {
		closeAll(outR, errR)
		return nil, nil, 0, err
	}
	timer := time.AfterFunc(deadline, func() { syscall.Kill(-p.Pid, syscall.SIGKILL) })
	defer timer.Stop()
	var wg sync.WaitGroup
	var ob, eb bytes.Buffer
	wg.Add(2)
	go func() { io.Copy(&limitedBuffer{b: &ob}, outR); outR.Close(); wg.Done() }()
	go func() { io.Copy(&limitedBuffer{b: &eb}, errR); errR.Close(); wg.Done() }()
	ws = waitPid(p.Pid)
	syscall.Kill(-p.Pid, syscall.SIGKILL) // whatever it left behind holding the pipes
	wg.Wait()
	return ob.Bytes(), eb.Bytes(), ws, nil
}
