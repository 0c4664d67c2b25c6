// cordon-spawner starts programs for the daemon. A Node process starts a child by fork(), which copies
// the page tables of the whole daemon and blocks its event loop meanwhile: ~30 ms at the daemon's
// usual 150 MiB, longer as it grows, for every mount, nft or runsc call. Go starts a child with
// clone(CLONE_VFORK|CLONE_VM), which costs the same at any size, and this process is small anyway.
//
// Protocol: one JSON object per line on stdin (a request) and on stdout (its answer), matched by id;
// requests run concurrently. A request with a log file starts a long-lived program (the runtime's shim)
// whose output goes there: it is answered twice, once started (its pid) and once it has exited. The daemon is its only client; stdin closing (the daemon gone) ends it.
// Programs it started keep running then, as they would had the daemon started them itself.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type request struct {
	ID   uint64   `json:"id"`
	Path string   `json:"path"`
	Args []string `json:"args"`
	Dir  string   `json:"dir,omitempty"`
	// Env nil: the spawner's own environment (the daemon's, when it started the spawner).
	Env       *[]string `json:"env,omitempty"`
	Stdin     []byte    `json:"stdin,omitempty"`
	TimeoutMs int64     `json:"timeoutMs"`
	MaxOutput int       `json:"maxOutput"`
	// Log, when set: start the program detached, stdin /dev/null and stdout/stderr to this file, and
	// neither capture its output nor bound its time.
	Log string `json:"log,omitempty"`
}

type answer struct {
	ID uint64 `json:"id"`
	// Code is -1 when a signal ended the program (Signal says which).
	Code     int    `json:"code"`
	Signal   int    `json:"signal,omitempty"`
	Stdout   []byte `json:"stdout,omitempty"`
	Stderr   []byte `json:"stderr,omitempty"`
	TimedOut bool   `json:"timedOut,omitempty"`
	// Errno names why the program could not be started (ENOENT, EACCES, ...), as Node's spawn would.
	Errno string `json:"errno,omitempty"`
	Error string `json:"error,omitempty"`
	// Started: the first answer to a detached start, with its pid; the second says how it ended.
	Started bool `json:"started,omitempty"`
	Pid     int  `json:"pid,omitempty"`
}

func main() {
	var outMu sync.Mutex
	out := bufio.NewWriterSize(os.Stdout, 64*1024)
	reply := func(a answer) {
		line, err := json.Marshal(a)
		if err != nil {
			line, _ = json.Marshal(answer{ID: a.ID, Code: -1, Errno: "EIO", Error: err.Error()})
		}
		outMu.Lock()
		defer outMu.Unlock()
		out.Write(line)
		out.WriteByte('\n')
		if out.Flush() != nil {
			os.Exit(1) // the daemon is gone
		}
	}
	// Registered before any request is read: a detached program that ends early still signals its end.
	signal.Notify(sigchld, syscall.SIGCHLD)
	go reapDetached()
	// Only stdin closing ends this process. A Ctrl-C at the daemon's terminal, or a service manager
	// stopping the daemon, signals its whole group: the daemon shuts down gracefully and still runs
	// helper programs meanwhile (unmounts, network teardown), through here. Caught, not ignored:
	// an ignored signal stays ignored in the programs started here; a caught one is reset at exec.
	stops := make(chan os.Signal, 1)
	signal.Notify(stops, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		for range stops {
		}
	}()
	in := bufio.NewReaderSize(os.Stdin, 64*1024)
	for {
		line, err := in.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var req request
			if jerr := json.Unmarshal(line, &req); jerr != nil {
				// Answered under its id when that can be read, so the call fails now rather than at its timeout.
				var idOnly struct {
					ID uint64 `json:"id"`
				}
				json.Unmarshal(line, &idOnly)
				reply(answer{ID: idOnly.ID, Code: -1, Errno: "EINVAL", Error: "bad request: " + jerr.Error()})
			} else if req.Log != "" {
				go startDetached(req, reply)
			} else {
				go func() { reply(run(req)) }()
			}
		}
		if err != nil {
			return
		}
	}
}

// command is the request's program, found on the PATH it runs with, in a session of its own as Node's
// detached spawn starts it (the deadline ends the whole group); or the answer saying it cannot start.
func command(req request) (*exec.Cmd, *answer) {
	env := os.Environ()
	if req.Env != nil {
		env = *req.Env
	}
	path, errno := lookPath(req.Path, env)
	if errno != "" {
		return nil, &answer{ID: req.ID, Code: -1, Errno: errno, Error: "spawn " + req.Path + " " + errno}
	}
	cmd := &exec.Cmd{Path: path, Args: append([]string{req.Path}, req.Args...), Env: env, Dir: req.Dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd, nil
}

func run(req request) answer {
	a := answer{ID: req.ID, Code: -1}
	cmd, failed := command(req)
	if failed != nil {
		return *failed
	}
	// Stdin is written here, not by os/exec: Wait would wait for that copy, and a descendant that holds
	// stdin without reading it would hold the answer past the program's end (Node does not wait for it).
	stdin, err0 := cmd.StdinPipe()
	stdout, err1 := cmd.StdoutPipe()
	stderr, err2 := cmd.StderrPipe()
	if err := errors.Join(err0, err1, err2); err != nil {
		// The pipes made before the one that failed (out of descriptors) are not left open: both ends.
		// os/exec keeps the child's ends until Start, which with Err set closes every end and returns.
		cmd.Err = err
		cmd.Start()
		a.Errno, a.Error = "EMFILE", err.Error()
		return a
	}
	if err := cmd.Start(); err != nil {
		a.Errno, a.Error = errnoName(err), err.Error()
		return a
	}
	// Wait closes stdin's pipe once the program has ended, which ends a write still blocked on it.
	go func() { stdin.Write(req.Stdin); stdin.Close() }()
	outBuf, errBuf := &capped{max: req.MaxOutput}, &capped{max: req.MaxOutput}
	var copies sync.WaitGroup
	copies.Add(2)
	go func() { io.Copy(outBuf, stdout); copies.Done() }()
	go func() { io.Copy(errBuf, stderr); copies.Done() }()
	done := make(chan error, 1)
	go func() {
		// Wait closes the pipes: only after both copies have read to their end.
		copies.Wait()
		done <- cmd.Wait()
	}()
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		select {
		case <-done: // it ended as the deadline came: its result stands
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			// Descendants in other groups may still hold the pipes: do not wait for them.
			stdout.Close()
			stderr.Close()
			a.TimedOut = true
			return a
		}
	}
	st := cmd.ProcessState
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		a.Signal = int(ws.Signal())
	} else {
		a.Code = st.ExitCode()
	}
	a.Stdout, a.Stderr = outBuf.buf.Bytes(), errBuf.buf.Bytes()
	return a
}

// startDetached starts a long-lived program and answers when it has started and when it has exited.
// Its exit is reaped by reapDetached: a goroutine blocked in wait per program would hold an OS thread
// each, one per running sandbox.
func startDetached(req request, reply func(answer)) {
	a := answer{ID: req.ID, Code: -1}
	cmd, failed := command(req)
	if failed != nil {
		reply(*failed)
		return
	}
	log, err := os.OpenFile(req.Log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		a.Errno, a.Error = errnoName(err), err.Error()
		reply(a)
		return
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	reaping.Lock()
	if err := cmd.Start(); err != nil {
		reaping.Unlock()
		a.Errno, a.Error = errnoName(err), err.Error()
		reply(a)
		return
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	// The exit answer waits until the start answer is out, whatever the order reaping finds them in.
	startedOut := make(chan struct{})
	reaped[pid] = func(ws syscall.WaitStatus) {
		<-startedOut
		end := answer{ID: req.ID, Code: -1, Pid: pid}
		if ws.Signaled() {
			end.Signal = int(ws.Signal())
		} else {
			end.Code = ws.ExitStatus()
		}
		reply(end)
	}
	reaping.Unlock()
	reply(answer{ID: req.ID, Started: true, Pid: pid})
	close(startedOut)
	reapNow()
}

var (
	reaping sync.Mutex
	reaped  = map[int]func(syscall.WaitStatus){}
	sigchld = make(chan os.Signal, 1)
)

func reapDetached() {
	for range sigchld {
		reapNow()
	}
}

// reapNow collects the detached programs that have exited (only those: os/exec waits for its own).
func reapNow() {
	reaping.Lock()
	defer reaping.Unlock()
	for pid, done := range reaped {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if got == pid || err == syscall.ECHILD {
			delete(reaped, pid)
			go done(ws)
		}
	}
}

// lookPath finds a program as execvp would, on the PATH of the environment it will run with.
func lookPath(name string, env []string) (string, string) {
	if strings.Contains(name, "/") {
		return name, ""
	}
	// Without a PATH, the default Node's spawn (libuv) searches: glibc's _PATH_DEFPATH.
	dirs := "/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			dirs = v
		}
	}
	denied := false
	for _, dir := range filepath.SplitList(dirs) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if st.Mode()&0o111 == 0 {
			denied = true
			continue
		}
		return p, ""
	}
	if denied {
		return "", "EACCES"
	}
	return "", "ENOENT"
}

func errnoName(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.ENOENT:
			return "ENOENT"
		case syscall.EACCES:
			return "EACCES"
		case syscall.ENOTDIR:
			return "ENOTDIR"
		case syscall.EPERM:
			return "EPERM"
		case syscall.ENOEXEC:
			return "ENOEXEC"
		case syscall.E2BIG:
			return "E2BIG"
		case syscall.EAGAIN:
			return "EAGAIN"
		case syscall.ENOMEM:
			return "ENOMEM"
		case syscall.ELOOP:
			return "ELOOP"
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return "ENOENT"
	}
	return "EIO"
}

// capped keeps the first max bytes written to it and drops the rest (the program is not made to block
// or fail on a full pipe: helper programs print little, more is noise).
type capped struct {
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
