package main

// Processes the agent starts: they are its children, so they live in the sandbox init's process
// tree (a checkpoint/restore brings them back) and outlive any one connection to the daemon. Each
// keeps its output in rings for replay and its stdin pipe open until the daemon closes it.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const (
	outputRing = 1 << 20
	// Exited processes the daemon never released (it was down) are kept up to this many.
	keepExited = 64
)

type proc struct {
	id     string
	pid    int
	p      *os.Process
	meta   json.RawMessage
	tty    *os.File // the terminal's master side, for a PTY process
	stdinW *os.File // write end of the stdin pipe, or the master for a PTY
	out    []*ring  // stdout, stderr (one ring for a PTY)

	// Guarded by agent.mu.
	announced bool
	exited    bool
	code      int
	signal    string
	stdinOpen bool
	stdinBusy bool
	seq       uint64
}

type agent struct {
	mu      sync.Mutex
	conn    *conn
	procs   map[string]*proc
	seq     uint64
	bootID  string
	nprocMu sync.Mutex
	nproc   uint64
	login   *loginCache
}

func newAgent() *agent {
	return &agent{procs: map[string]*proc{}, bootID: randomID(), login: newLoginCache()}
}

func (a *agent) setConn(c *conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.conn = c
	// The hello lists every process, so that a daemon that restarted (or a restore) can re-attach.
	list := make([]map[string]any, 0, len(a.procs))
	for _, p := range a.procs {
		list = append(list, p.describe())
	}
	c.sendJSON(map[string]any{"op": "hello", "version": protocolVersion, "boot": a.bootID, "pid": os.Getpid(), "processes": list, "writeWindow": writeWindow, "inline": maxInline})
}

func (a *agent) dropConn(c *conn) {
	a.mu.Lock()
	if a.conn == c {
		a.conn = nil
	}
	a.mu.Unlock()
}

// describe is called with agent.mu held.
func (p *proc) describe() map[string]any {
	outs := make([]map[string]any, len(p.out))
	for i, r := range p.out {
		base, written, eof := r.state()
		outs[i] = map[string]any{"base": base, "written": written, "eof": eof}
	}
	d := map[string]any{"proc": p.id, "pid": p.pid, "meta": p.meta, "out": outs, "stdinOpen": p.stdinOpen, "tty": p.tty != nil}
	if p.exited {
		d["exit"] = map[string]any{"code": p.code, "signal": p.signal}
	}
	return d
}

// startFailure is a command that could not start, reported the way a shell would (126, 127).
type startFailure struct {
	code    int
	message string
}

func (a *agent) start(c *conn, req *request, stdin *inChan) (map[string]any, error) {
	if req.Proc == "" || len(req.Args) == 0 || req.User == nil {
		c.closeIn(req.Stdin)
		return nil, &opError{"EINVAL", "start needs proc, args and user"}
	}
	a.mu.Lock()
	_, taken := a.procs[req.Proc]
	a.mu.Unlock()
	if taken {
		c.closeIn(req.Stdin)
		return nil, &opError{"EEXIST", "process " + req.Proc + " exists"}
	}
	if req.Nproc > 0 {
		a.setNproc(req.Nproc)
	}
	run := a.login.rewrite(req.Args, req.Env, req.Cwd, req.User)
	var p *proc
	var fail *startFailure
	var err error
	if run.direct != nil {
		p, fail, err = spawn(req, run.direct.path, run.direct.args, run.direct.env)
	}
	if run.direct == nil || fail != nil {
		// A direct exec that could not start leaves nothing behind: bash then says what is wrong.
		p, fail, err = spawn(req, "", run.args, run.env)
	}
	if err != nil {
		c.closeIn(req.Stdin)
		return nil, err
	}
	if fail != nil {
		// Drain what the daemon sends on stdin so its writer is not left waiting.
		go drainIn(stdin)
		return map[string]any{"fail": map[string]any{"code": fail.code, "message": fail.message}}, nil
	}
	p.id, p.meta, p.stdinOpen = req.Proc, req.Meta, true
	a.mu.Lock()
	a.seq++
	p.seq = a.seq
	a.procs[req.Proc] = p
	a.trimExited()
	p.stdinBusy = true
	a.mu.Unlock()
	go a.feedStdin(p, stdin)
	chans := []uint32{req.Stdout, req.Stderr}
	for i, r := range p.out {
		att, _ := r.attach(c, chans[i], 0, window(req.Window), frameSize(req.Frame))
		go att.pump()
	}
	go a.wait(p)
	c.reply(req.ID, map[string]any{"pid": p.pid})
	a.mu.Lock()
	p.announced = true
	exited := p.exited
	a.mu.Unlock()
	if exited {
		c.sendJSON(p.exitMsg())
	}
	return nil, errReplied
}

// errReplied tells run that the handler sent its own reply.
var errReplied = errors.New("replied")

func (p *proc) exitMsg() map[string]any {
	return map[string]any{"op": "exit", "proc": p.id, "code": p.code, "signal": p.signal}
}

func (a *agent) wait(p *proc) {
	ws := waitPid(p.pid)
	code, sig := ws.ExitStatus(), ""
	if ws.Signaled() {
		code, sig = 128+int(ws.Signal()), signalName(ws.Signal())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p.exited, p.code, p.signal = true, code, sig
	if p.announced && a.conn != nil {
		a.conn.sendJSON(p.exitMsg())
	}
}

// trimExited forgets the oldest exited processes past keepExited (agent.mu held).
func (a *agent) trimExited() {
	var exited []*proc
	for _, p := range a.procs {
		if p.exited {
			exited = append(exited, p)
		}
	}
	for len(exited) > keepExited {
		oldest := 0
		for i, p := range exited {
			if p.seq < exited[oldest].seq {
				oldest = i
			}
		}
		a.forget(exited[oldest])
		exited = append(exited[:oldest], exited[oldest+1:]...)
	}
}

// forget drops a process record and closes what the agent holds of it (agent.mu held).
func (a *agent) forget(p *proc) {
	delete(a.procs, p.id)
	for _, r := range p.out {
		r.stop()
		r.mu.Lock()
		if r.att != nil {
			r.att.detached = true
			r.cond.Broadcast()
		}
		r.mu.Unlock()
	}
	if p.stdinW != nil {
		p.stdinW.Close()
	}
}

func (a *agent) release(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.procs[id]; p != nil && p.exited {
		a.forget(p)
	}
}

func (a *agent) lookup(id string) (*proc, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.procs[id]
	if p == nil {
		return nil, &opError{"ESRCH", "no process " + id}
	}
	return p, nil
}

// attach re-connects a known process's output (from the given offsets) and stdin to this connection.
func (a *agent) attach(c *conn, req *request) (map[string]any, error) {
	p, err := a.lookup(req.Proc)
	if err != nil {
		return nil, err
	}
	chans := []uint32{req.Stdout, req.Stderr}
	starts := make([]uint64, len(p.out))
	atts := make([]*attachment, len(p.out))
	for i, r := range p.out {
		var from uint64
		if i < len(req.From) {
			from = req.From[i]
		}
		atts[i], starts[i] = r.attach(c, chans[i], from, window(req.Window), frameSize(req.Frame))
	}
	a.mu.Lock()
	feed := p.stdinOpen && !p.stdinBusy && req.Stdin != 0
	if feed {
		p.stdinBusy = true
	}
	a.mu.Unlock()
	if feed {
		go a.feedStdin(p, c.openIn(req.Stdin, stdinWindow))
	}
	// The offsets go out before any byte, so the daemon counts from the right place.
	c.reply(req.ID, map[string]any{"starts": starts, "stdin": feed})
	for _, att := range atts {
		go att.pump()
	}
	return nil, errReplied
}

// window bounds the credit the daemon asks for.
func window(w int) int {
	return min(max(w, maxData), outputRing)
}

// feedStdin copies the daemon's stdin channel into the process until the daemon ends it (then the
// pipe is closed, or ^D typed on a terminal) or the connection goes (the pipe stays open).
func (a *agent) feedStdin(p *proc, in *inChan) {
	defer in.c.closeIn(in.id)
	ended := false
	for {
		b, eof, ok := in.next()
		if !ok {
			break
		}
		if eof {
			ended = true
			break
		}
		if _, err := p.stdinW.Write(b); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, os.ErrClosed) {
			in.done(b)
			continue
		}
		in.done(b)
	}
	a.mu.Lock()
	p.stdinBusy = false
	if ended {
		p.stdinOpen = false
	}
	a.mu.Unlock()
	if ended {
		if p.tty != nil {
			p.stdinW.Write([]byte{4}) // ^D: end of input on a terminal
		} else {
			p.stdinW.Close()
		}
	}
}

func drainIn(in *inChan) {
	defer in.c.closeIn(in.id)
	for {
		b, eof, ok := in.next()
		if !ok || eof {
			return
		}
		in.done(b)
	}
}

func (a *agent) signal(req *request) error {
	p, err := a.lookup(req.Proc)
	if err != nil {
		return err
	}
	a.mu.Lock()
	exited := p.exited
	a.mu.Unlock()
	if exited {
		return nil
	}
	sig := syscall.Signal(req.Signal)
	if req.Tree {
		killTree(p.pid, sig)
		return nil
	}
	if err := p.p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// killTree signals a process, its process group and every descendant found through /proc (a
// descendant may have left the group with setsid).
func killTree(pid int, sig syscall.Signal) {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], n)
	}
	all := []int{pid}
	for i := 0; i < len(all); i++ {
		all = append(all, children[all[i]]...)
	}
	syscall.Kill(-pid, sig)
	for _, p := range all {
		syscall.Kill(p, sig)
	}
}

func (a *agent) resize(req *request) error {
	p, err := a.lookup(req.Proc)
	if err != nil {
		return err
	}
	if p.tty == nil {
		return &opError{"ENOTTY", "process has no terminal"}
	}
	return setWinsize(p.tty, req.Cols, req.Rows)
}

// setNproc sets RLIMIT_NPROC on the agent, which its children inherit. Root (the agent) is exempt
// from it; a process started as another user is bound by it, as with `ulimit -u`.
func (a *agent) setNproc(n uint64) {
	a.nprocMu.Lock()
	defer a.nprocMu.Unlock()
	if a.nproc == n {
		return
	}
	if syscall.Setrlimit(rlimitNproc, &syscall.Rlimit{Cur: n, Max: n}) == nil {
		a.nproc = n
	}
}

func signalName(s syscall.Signal) string {
	names := map[syscall.Signal]string{
		syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT", syscall.SIGILL: "SIGILL",
		syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE", syscall.SIGKILL: "SIGKILL",
		syscall.SIGUSR1: "SIGUSR1", syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2", syscall.SIGPIPE: "SIGPIPE",
		syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM", syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("SIG%d", int(s))
}

// RLIMIT_NPROC on Linux (the syscall package does not name it).
const rlimitNproc = 6
