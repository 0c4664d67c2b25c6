package main

// The agent idles in every sandbox, so its memory is kept small: a small heap target, a soft limit
// past which the runtime collects harder and hands free memory back at once, and after a burst of
// work (a large file streamed, many processes) a trim once the agent has been quiet for a moment:
// the buffers a stream used go back to the sandbox instead of staying resident until the runtime's
// background scavenger gets to them minutes later.

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

const (
	gcPercent = 50
	// Above what ordinary work needs (so the collector does not run constantly during a large
	// listing), low enough that a burst is handed back promptly.
	memoryLimit = 12 << 20
	// Work that allocated at least this much since the last trim earns one.
	trimAfterBytes = 1 << 20
	trimQuiet      = 2 * time.Second
)

var trim struct {
	mu      sync.Mutex
	pending uint64
	timer   *time.Timer
}

func setupMemory() {
	debug.SetGCPercent(gcPercent)
	debug.SetMemoryLimit(memoryLimit)
}

// noteWork records bytes of buffers a piece of work used; past trimAfterBytes a trim is scheduled
// for when the agent has been quiet for trimQuiet (each new note postpones it).
func noteWork(n uint64) {
	trim.mu.Lock()
	defer trim.mu.Unlock()
	trim.pending += n
	if trim.pending < trimAfterBytes {
		return
	}
	if trim.timer == nil {
		trim.timer = time.AfterFunc(trimQuiet, trimNow)
	} else {
		trim.timer.Reset(trimQuiet)
	}
}

func trimNow() {
	trim.mu.Lock()
	trim.pending = 0
	trim.mu.Unlock()
	// Two collections: pooled payload buffers survive the first one (sync.Pool's victim cache).
	runtime.GC()
	debug.FreeOSMemory()
}
