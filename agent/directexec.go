package main

// Running a login-shell command without the shell, when the shell would only exec it.
// `bash -c CMD` runs a single simple command by exec'ing it in place of itself (no fork), so the
// pid, the process tree, the exit status and the output are the program's own. When the login
// environment is cached (login.go) and CMD is plain words, the agent execs the program itself
// with the environment bash would have handed it, saving the ~50 ms bash start under gVisor.
//
// Plain words: only the characters [A-Za-z0-9_./:,+@%=-] separated by spaces (no quoting,
// expansion, globbing, redirection, assignment, `~`, `#`, operators, tabs or newlines), with no `=`
// in the first word. The first word is not a bash keyword or builtin (`true`/`false` without
// arguments run /bin/true, /bin/false when present). The environment is learned, not predicted:
// next to the login environment the agent runs `bash -c '<agent> dump-env'` once (the same
// one-shot exec) with the environment the cached `bash -c` would get, and keeps what it printed
// (SHLVL, PWD, OLDPWD, pass-through of odd names are bash's own); `_` is then set to the program's
// path as bash sets it. None of this applies when the environment has exported functions
// (BASH_FUNC_*), BASH_ENV, ENV, SHELLOPTS, BASHOPTS, POSIXLY_CORRECT, EXECIGNORE or BASH_COMPAT, or
// when PATH is unset or has an empty, relative, `~` or trailing-slash entry. The PATH search is
// bash's: the first entry holding the name wins; if that is not a regular file with an execute bit
// for the user, bash runs. If the exec fails (not found, permission, not a binary or script, bad
// interpreter), bash runs instead, so the error and exit code are bash's own.
// What differs from the cached `bash -c`: only the order of the variables in the environment.

import (
	"strings"
	"syscall"
)

// directCmd is a program to exec in place of `bash -c CMD`.
type directCmd struct {
	path      string
	args, env []string
}

// Every bash keyword and builtin (bash 5.2's `compgen -k` and `compgen -b`, plus older and
// loadable-by-default names): bash runs these itself.
var bashWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`if then else elif fi case esac for select while until do done in function time { } ! [[ ]] coproc
		. : [ alias bg bind break builtin caller cd command compgen complete compopt continue declare dirs disown echo enable
		eval exec exit export false fc fg getopts hash help history jobs kill let local logout mapfile popd printf pushd pwd
		read readarray readonly return set shift shopt source suspend test times trap true type typeset ulimit umask unalias
		unset wait`) {
		bashWords[w] = true
	}
}

// Variables that change how bash reads or runs a command (or what a name means to it).
var bashControlVars = []string{"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "POSIXLY_CORRECT", "EXECIGNORE", "BASH_COMPAT"}

// directEnvUsable says whether bash, started with env, would run a plain command the way the
// agent does; checked before learning, so an entry without a learned direct env means no.
func directEnvUsable(env []string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, "BASH_FUNC_") {
			return false
		}
	}
	for _, name := range bashControlVars {
		if _, ok := envValue(env, name); ok {
			return false
		}
	}
	return true
}

// learnDirect learns the environment `bash -c` hands a program it execs, without `_`.
func (l *loginCache) learnDirect(shell string, env []string, cwd string, u *userSpec) []string {
	if !directEnvUsable(env) {
		return nil
	}
	got := l.run(shell, []string{shell, "-c", shellQuote(l.self) + " dump-env"}, env, cwd, u)
	if got == nil || !directEnvUsable(got) {
		return nil
	}
	out := make([]string, 0, len(got))
	for _, kv := range got {
		if !strings.HasPrefix(kv, "_=") {
			out = append(out, kv)
		}
	}
	return out
}

func plainWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_./:,+@%=-", c) >= 0
}

// plainWords splits cmd into words when it is nothing but plain words separated by spaces.
func plainWords(cmd string) []string {
	for i := 0; i < len(cmd); i++ {
		if c := cmd[i]; c != ' ' && !plainWordByte(c) {
			return nil
		}
	}
	words := strings.Fields(cmd)
	if len(words) == 0 || strings.IndexByte(words[0], '=') >= 0 {
		return nil
	}
	return words
}

// directCommand returns the program to exec for cmd, or nil when bash must run it.
func directCommand(cmd string, env []string, cwd string, u *userSpec) *directCmd {
	if env == nil {
		return nil
	}
	words := plainWords(cmd)
	if words == nil {
		return nil
	}
	name := words[0]
	var path string
	switch {
	case (name == "true" || name == "false") && len(words) == 1:
		path = "/bin/" + name
		if !userCanExec(path, u) {
			return nil
		}
	case bashWords[name]:
		return nil
	case strings.IndexByte(name, '/') >= 0:
		// bash runs it as given, and `_` is the word as given; it resolves against the directory.
		if !userCanExec(joinCwd(cwd, name), u) {
			return nil
		}
		path = name
	default:
		path = searchPath(name, env, u)
		if path == "" {
			return nil
		}
	}
	full := make([]string, 0, len(env)+1)
	full = append(full, env...)
	full = append(full, "_="+path)
	return &directCmd{path: joinCwd(cwd, path), args: words, env: full}
}

func joinCwd(cwd, p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	if cwd == "" {
		cwd = "/"
	}
	return strings.TrimSuffix(cwd, "/") + "/" + p
}

// searchPath finds name on PATH as bash does (dir + "/" + name, the first entry holding it), or ""
// when bash should search: PATH unset or unusual, or the first match not plainly executable.
func searchPath(name string, env []string, u *userSpec) string {
	pathVar, ok := envValue(env, "PATH")
	if !ok {
		return ""
	}
	for _, dir := range strings.Split(pathVar, ":") {
		if !strings.HasPrefix(dir, "/") || strings.HasSuffix(dir, "/") || strings.IndexByte(dir, '~') >= 0 {
			return ""
		}
		p := dir + "/" + name
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			if err == syscall.ENOENT || err == syscall.ENOTDIR {
				continue
			}
			return ""
		}
		if !modeCanExec(&st, u) {
			return ""
		}
		return p
	}
	return ""
}

func userCanExec(p string, u *userSpec) bool {
	var st syscall.Stat_t
	return syscall.Stat(p, &st) == nil && modeCanExec(&st, u)
}

// modeCanExec: a regular file the user may execute by its mode bits (root: any execute bit). The
// exec itself (as the user) is the final word; a refusal there falls back to bash.
func modeCanExec(st *syscall.Stat_t, u *userSpec) bool {
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return false
	}
	m := st.Mode
	if u.UID == 0 {
		return m&0o111 != 0
	}
	if st.Uid == u.UID {
		return m&0o100 != 0
	}
	inGroup := st.Gid == u.GID
	for _, g := range u.Groups {
		inGroup = inGroup || st.Gid == g
	}
	if inGroup {
		return m&0o010 != 0
	}
	return m&0o001 != 0
}
