package main

// Names of uids and gids as the sandbox's own /etc/passwd and /etc/group give them (for file
// entries), re-read when a file changes: every file operation stats both files (one call each) and
// reads them only when their stamp differs, or while they changed less than a second ago (timestamps
// move in clock ticks, so a second write within one would keep the stamp). Opened without blocking
// and only when regular, so a FIFO there cannot wedge the agent.

import (
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const maxAccountFile = 4 << 20

type idNames struct {
	stamp string
	names map[uint32]string
}

var (
	namesMu sync.Mutex
	users   idNames
	groups  idNames
)

func readSmallRegular(path string, limit int64) ([]byte, string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, "", err
	}
	if !st.Mode().IsRegular() || st.Size() > limit {
		return nil, "", syscall.EINVAL
	}
	stamp := fileStamp(st.Sys().(*syscall.Stat_t))
	b, err := io.ReadAll(io.LimitReader(f, limit))
	return b, stamp, err
}

// fileStamp identifies a file's content without reading it; "" for one changed too recently to tell.
func fileStamp(st *syscall.Stat_t) string {
	changed := time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	if m := time.Unix(st.Mtim.Sec, st.Mtim.Nsec); m.After(changed) {
		changed = m
	}
	if time.Since(changed) < time.Second {
		return ""
	}
	return strconv.FormatUint(st.Dev, 10) + ":" + strconv.FormatUint(st.Ino, 10) + ":" + strconv.FormatInt(st.Size, 10) + ":" +
		strconv.FormatInt(st.Mtim.Nano(), 10) + ":" + strconv.FormatInt(st.Ctim.Nano(), 10)
}

func refresh(cache *idNames, path string) {
	var st syscall.Stat_t
	if cache.stamp != "" && syscall.Stat(path, &st) == nil && fileStamp(&st) == cache.stamp {
		return
	}
	b, stamp, err := readSmallRegular(path, maxAccountFile)
	if err != nil {
		cache.stamp, cache.names = "", nil
		return
	}
	cache.stamp, cache.names = stamp, map[uint32]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		if n, err := strconv.ParseUint(f[2], 10, 32); err == nil {
			if _, dup := cache.names[uint32(n)]; !dup {
				cache.names[uint32(n)] = f[0]
			}
		}
	}
}

// names is a snapshot of both tables, taken once per operation.
type names struct{ users, groups map[uint32]string }

// namesKey is the daemon's key (userSpec.Accounts) under which both tables were last found current.
var namesKey string

// currentNames gives the tables for an operation of user u. The daemon reads the same two files from
// the host for every operation (to resolve the user) and sends a key of their stamps when neither
// changed in the last second: while that key stays what it was when both tables were last checked
// and settled, the files are unchanged and the two stat calls here (each a trip into gVisor) are saved.
func currentNames(u *userSpec) *names {
	namesMu.Lock()
	defer namesMu.Unlock()
	key := ""
	if u != nil {
		key = u.Accounts
	}
	if key != "" && key == namesKey && users.stamp != "" && groups.stamp != "" {
		return &names{users.names, groups.names}
	}
	refresh(&users, "/etc/passwd")
	refresh(&groups, "/etc/group")
	namesKey = ""
	if users.stamp != "" && groups.stamp != "" {
		namesKey = key
	}
	return &names{users.names, groups.names}
}

func nameOf(m map[uint32]string, id uint32) string {
	if name, ok := m[id]; ok {
		return name
	}
	return "UNKNOWN" // what busybox stat prints, so both paths agree
}

func (n *names) user(uid uint32) string  { return nameOf(n.users, uid) }
func (n *names) group(gid uint32) string { return nameOf(n.groups, gid) }
