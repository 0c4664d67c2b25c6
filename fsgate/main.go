// cordon-fsgate serves one host directory to one sandbox through FUSE, applying the sandbox's file rules
// (EACCES for a blocked operation) and reporting file operations as events on a unix socket.
// Usage: cordon-fsgate CONFIG.json. It prints "ready" on stdout once mounted, then closes stdout.
// SIGTERM or SIGINT unmounts and exits. It outlives a daemon restart: the daemon reconnects to the socket.
package main

import (
	"encoding/json"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 2 {
		os.Stderr.WriteString("usage: cordon-fsgate CONFIG.json\n")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fatal("reading the config", err)
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		fatal("parsing the config", err)
	}
	rootFd, err := unix.Open(cfg.Source, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		fatal("opening the source", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(rootFd, &st); err != nil {
		fatal("stat of the source", err)
	}
	ev := newEmitter(cfg.Rate, cfg.Burst)
	os.Remove(cfg.Socket)
	l, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		fatal("listening on the events socket", err)
	}
	os.Chmod(cfg.Socket, 0o600)
	go ev.serve(l)
	go ev.run()

	g := &gate{rootFd: rootFd, dev: st.Dev, cfg: &cfg, ev: ev}
	sec := time.Second
	server, err := fs.Mount(cfg.Mount, &node{g: g}, &fs.Options{
		// Attributes and names are cached briefly; rules are checked on every open, create, remove, ….
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{
			AllowOther:    true, // the runtime's gofer or the container's root may run under other ids
			FsName:        "cordon-fsgate",
			Name:          "cordon",
			DisableXAttrs: true,
			MaxWrite:      1 << 20,
			Options:       []string{"nodev", "nosuid", "default_permissions"},
			DirectMount:   true,
		},
	})
	if err != nil {
		fatal("mounting", err)
	}
	os.Stdout.WriteString("ready\n")
	os.Stdout.Close()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP)
	go func() {
		<-sig
		if server.Unmount() != nil {
			unix.Unmount(cfg.Mount, unix.MNT_DETACH)
		}
		os.Exit(0)
	}()
	server.Wait()
}
