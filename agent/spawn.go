package main

// Starting a process: the command is looked up on the PATH it will run with, the working directory
// checked, and the process started as its user in a process group of its own (a session with a
// controlling terminal for a PTY), with pipes or a terminal for its stdio.

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func envValue(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if strings.HasPrefix(env[i], key+"=") {
			return env[i][len(key)+1:], true
		}
	}
	return "", false
}

// lookPath finds the program as execve would run it, on the PATH of the process's own environment.
func lookPath(name string, env []string, cwd string) (string, *startFailure) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		return p, checkExecutable(p, name)
	}
	path, ok := envValue(env, "PATH")
	if !ok {
		path = defaultPath
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &startFailure{127, "cordon: " + name + ": command not found\n"}
}

func checkExecutable(p, name string) *startFailure {
	st, err := os.Stat(p)
	if err != nil {
		return &startFailure{127, "cordon: " + name + ": command not found\n"}
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return &startFailure{126, "cordon: " + name + ": permission denied (not an executable file)\n"}
	}
	return nil
}

// spawn starts args with env; execPath, when set, is the program already found (args[0] stays argv[0]).
func spawn(req *request, execPath string, args, env []string) (*proc, *startFailure, error) {
	cwd := req.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if st, err := os.Stat(cwd); err != nil || !st.IsDir() {
		return nil, &startFailure{126, "cordon: working directory " + cwd + " does not exist in the sandbox\n"}, nil
	}
	path := execPath
	if path == "" {
		var fail *startFailure
		if path, fail = lookPath(args[0], env, cwd); fail != nil {
			return nil, fail, nil
		}
	}
	cred := &syscall.Credential{Uid: req.User.UID, Gid: req.User.GID, Groups: req.User.Groups}
	if cred.Groups == nil {
		cred.Groups = []uint32{}
	}
	p := &proc{}
	sys := &syscall.SysProcAttr{Credential: cred}
	var files []*os.File
	var childEnds []*os.File
	if req.Tty != nil {
		master, slave, err := openPty(req.Tty.Cols, req.Tty.Rows)
		if err != nil {
			return nil, nil, err
		}
		files = []*os.File{slave, slave, slave}
		childEnds = []*os.File{slave}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
		p.tty, p.stdinW = master, master
		p.out = []*ring{newRing(outputRing)}
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, nil, err
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			closeAll(inR, inW)
			return nil, nil, err
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			closeAll(inR, inW, outR, outW)
			return nil, nil, err
		}
		files = []*os.File{inR, outW, errW}
		childEnds = files
		sys.Setpgid = true
		p.stdinW = inW
		p.out = []*ring{newRing(outputRing), newRing(outputRing)}
		defer func() {
			if p.p == nil {
				closeAll(inW, outR, errR)
			}
		}()
		p.out[0].src, p.out[1].src = outR, errR
	}
	proc, err := os.StartProcess(path, args, &os.ProcAttr{Dir: cwd, Env: env, Files: files, Sys: sys})
	closeAll(childEnds...)
	if err != nil {
		if p.tty != nil {
			p.tty.Close()
		}
		var errno syscall.Errno
		if errors.As(err, &errno) && (errno == syscall.ENOENT || errno == syscall.ENOTDIR) {
			return nil, &startFailure{127, "cordon: " + args[0] + ": command not found\n"}, nil
		}
		if errors.As(err, &errno) && errno == syscall.EAGAIN {
			// No process slot left (a pids limit): the daemon can still start it from outside.
			return nil, nil, err
		}
		return nil, &startFailure{126, "cordon: " + args[0] + ": " + errText(err) + "\n"}, nil
	}
	p.p, p.pid = proc, proc.Pid
	if p.tty != nil {
		p.out[0].src = p.tty
	}
	for _, r := range p.out {
		go r.fill(r.src)
	}
	return p, nil, nil
}

func errText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == syscall.EACCES || errno == syscall.ENOEXEC {
			return "permission denied (not an executable file)"
		}
		return errno.Error()
	}
	return err.Error()
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// openPty opens a new terminal pair on the sandbox's devpts without cgo: unlock the master and ask
// for its number, then open the slave by path.
func openPty(cols, rows uint16) (*os.File, *os.File, error) {
	fd, err := syscall.Open("/dev/ptmx", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		fd, err = syscall.Open("/dev/pts/ptmx", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, nil, err
		}
	}
	var unlock int32
	if err := ioctl(fd, syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
		syscall.Close(fd)
		return nil, nil, err
	}
	var n uint32
	if err := ioctl(fd, syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); err != nil {
		syscall.Close(fd)
		return nil, nil, err
	}
	syscall.SetNonblock(fd, true)
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	slave, err := os.OpenFile("/dev/pts/"+itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	if err := setWinsize(master, cols, rows); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

type winsize struct{ rows, cols, x, y uint16 }

func setWinsize(f *os.File, cols, rows uint16) error {
	ws := winsize{rows: rows, cols: cols}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	rc.Control(func(fd uintptr) { ierr = ioctl(int(fd), syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws))) })
	return ierr
}

func ioctl(fd int, req uint, arg uintptr) error {
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(req), arg)
	if e != 0 {
		return e
	}
	return nil
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
