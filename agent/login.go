package main

// E2B runs every command as `/bin/bash -l -c CMD`: a login shell that reads /etc/profile and the
// user's profile first, which under gVisor costs ~45 ms per command. The agent learns the
// environment a login shell ends up with, once per user, directory and environment, and then runs
// `bash -c CMD` with it. The learned environment is used only while the profile files are unchanged
// (checked on every call: a stat of bash, /etc/profile, /etc/bash.bashrc, each file in /etc/profile.d
// and the user's ~/.bash_profile, ~/.bash_login, ~/.profile and ~/.bashrc: inode, size, mtime and
// ctime; a file added to or removed from /etc/profile.d counts too), only when the profile printed
// nothing, left the directory and umask as they were and exited 0; otherwise the real login shell
// runs. A file changed within the last second is not trusted to show its next change (timestamps
// move in clock ticks), so the real login shell runs until it has settled.
// Commands that are plain words skip even `bash -c` (directexec.go).
// What differs: shell variables and functions the profile set without exporting them, shell options
// (shopt login_shell), and side effects of running the profile (other than its environment).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	dumpMarker   = "\x00CORDON-LOGIN-ENV\x00"
	learnTimeout = 10 * time.Second
	settleTime   = time.Second
	maxLearned   = 64
	maxDump      = 1 << 20
)

type loginEntry struct {
	stamps string
	env    []string // nil: not usable, run the real login shell
	direct []string // what `bash -c` hands a command it execs (without `_`); nil: always run bash
}

// launch is what start runs: args with env, or first the direct form when there is one (a start
// failure of the direct form falls back to args, which then fails or runs the way bash would).
type launch struct {
	args, env []string
	direct    *directCmd
}

type loginCache struct {
	mu      sync.Mutex
	entries map[string]*loginEntry
	pending map[string]bool
	umask   int
	self    string
}

func newLoginCache() *loginCache {
	old := syscall.Umask(0o022)
	syscall.Umask(old)
	self, _ := os.Executable()
	return &loginCache{entries: map[string]*loginEntry{}, pending: map[string]bool{}, umask: old, self: self}
}

func isLoginShell(args []string) bool {
	return len(args) == 4 && args[1] == "-l" && args[2] == "-c" && path.Base(args[0]) == "bash" && path.IsAbs(args[0])
}

// rewrite returns what to run: the cached form of a login shell when known, and the command
// itself when bash would only exec it (directexec.go).
func (l *loginCache) rewrite(args, env []string, cwd string, u *userSpec) launch {
	if !isLoginShell(args) || l.self == "" {
		return launch{args: args, env: env}
	}
	key := cacheKey(args[0], env, cwd, u)
	home, _ := envValue(env, "HOME")
	stamps, newest := profileStamps(args[0], home)
	if time.Since(newest) < settleTime {
		return launch{args: args, env: env}
	}
	l.mu.Lock()
	e := l.entries[key]
	if e != nil && e.stamps == stamps {
		l.mu.Unlock()
		if e.env == nil {
			return launch{args: args, env: env}
		}
		return launch{args: []string{args[0], "-c", args[3]}, env: mergeShellVars(e.env, env), direct: directCommand(args[3], e.direct, cwd, u)}
	}
	start := !l.pending[key]
	if start {
		l.pending[key] = true
	}
	l.mu.Unlock()
	if start {
		go l.learn(key, stamps, args[0], env, cwd, u)
	}
	return launch{args: args, env: env}
}

func cacheKey(shell string, env []string, cwd string, u *userSpec) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00%v\x00", shell, cwd, u.UID, u.GID, u.Groups)
	for _, e := range env {
		h.Write([]byte(e))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// profileStamps identifies the files a bash login shell reads (and bash itself), and says when the
// most recently changed of them changed.
func profileStamps(shell, home string) (string, time.Time) {
	files := []string{shell, "/etc/profile", "/etc/bash.bashrc", "/etc/profile.d"}
	if home != "" {
		for _, f := range []string{".bash_profile", ".bash_login", ".profile", ".bashrc"} {
			files = append(files, path.Join(home, f))
		}
	}
	if names, err := readDirNames("/etc/profile.d"); err == nil {
		for _, n := range names {
			files = append(files, path.Join("/etc/profile.d", n))
		}
	}
	var b strings.Builder
	var newest time.Time
	for _, f := range files {
		var st syscall.Stat_t
		if syscall.Stat(f, &st) != nil {
			b.WriteString("-|")
			continue
		}
		fmt.Fprintf(&b, "%d:%d:%d:%d.%d:%d.%d|", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		for _, t := range []syscall.Timespec{st.Mtim, st.Ctim} {
			if u := time.Unix(t.Sec, t.Nsec); u.After(newest) {
				newest = u
			}
		}
	}
	return b.String(), newest
}

// learn runs the login shell once to print its environment (the agent's dump-env mode).
func (l *loginCache) learn(key, stamps, shell string, env []string, cwd string, u *userSpec) {
	learned := l.run(shell, []string{shell, "-l", "-c", "exec " + shellQuote(l.self) + " dump-env"}, env, cwd, u)
	var direct []string
	if learned != nil {
		direct = l.learnDirect(shell, mergeShellVars(learned, env), cwd, u)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pending, key)
	if len(l.entries) >= maxLearned {
		for k := range l.entries {
			delete(l.entries, k)
			break
		}
	}
	l.entries[key] = &loginEntry{stamps: stamps, env: learned, direct: direct}
}

// run runs a shell command that ends by exec'ing the agent's dump-env mode, and returns the
// environment it printed; nil when the shell printed anything else, failed, or changed the directory or umask.
func (l *loginCache) run(shell string, argv, env []string, cwd string, u *userSpec) []string {
	groups := u.Groups
	if groups == nil {
		groups = []uint32{}
	}
	cred := &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: groups}
	stdout, stderr, ws, err := runCaptured(shell, argv, env, cwd, cred, learnTimeout)
	if err != nil || ws.ExitStatus() != 0 || ws.Signaled() || len(stderr) > 0 || !bytes.HasPrefix(stdout, []byte(dumpMarker)) {
		return nil
	}
	fields := strings.Split(strings.TrimPrefix(string(stdout), dumpMarker), "\x00")
	if len(fields) < 2 || fields[0] != cwd || fields[1] != fmt.Sprintf("%o", l.umask) {
		return nil
	}
	var out []string
	for _, kv := range fields[2:] {
		if strings.Contains(kv, "=") {
			out = append(out, kv)
		}
	}
	return out
}

// mergeShellVars takes the variables bash sets for itself from the command's own environment, so
// `bash -c` sets them as `bash -l -c` would have.
func mergeShellVars(learned, env []string) []string {
	own := map[string]bool{"PWD": true, "OLDPWD": true, "SHLVL": true, "_": true}
	out := make([]string, 0, len(learned)+4)
	for _, kv := range learned {
		if !own[kv[:strings.IndexByte(kv, '=')]] {
			out = append(out, kv)
		}
	}
	for _, kv := range env {
		if i := strings.IndexByte(kv, '='); i > 0 && own[kv[:i]] {
			out = append(out, kv)
		}
	}
	return out
}

// dumpEnv is the agent's other mode, run at the end of a login shell: it prints the marker, the
// working directory, the umask and the environment, NUL-separated.
func dumpEnv() int {
	cwd, _ := os.Getwd()
	mask := syscall.Umask(0)
	syscall.Umask(mask)
	var b bytes.Buffer
	b.WriteString(dumpMarker)
	fmt.Fprintf(&b, "%s\x00%o", cwd, mask)
	for _, kv := range os.Environ() {
		b.WriteByte(0)
		b.WriteString(kv)
	}
	os.Stdout.Write(b.Bytes())
	return 0
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

type limitedBuffer struct{ b *bytes.Buffer }

func (w *limitedBuffer) Write(p []byte) (int, error) {
	if w.b.Len()+len(p) > maxDump {
		return 0, fmt.Errorf("output too large")
	}
	return w.b.Write(p)
}
