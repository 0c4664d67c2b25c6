package main

import (
	"encoding/json"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one line on the events socket.
type Event struct {
	Op     string `json:"op"`
	Path   string `json:"path,omitempty"`
	Action string `json:"action,omitempty"` // allow | block
	Count  int64  `json:"count,omitempty"`  // identical events folded into this one
	Ts     int64  `json:"ts"`
}

// Events are bounded at every step: a fixed queue (full = dropped), identical consecutive events folded,
// a token bucket on what is sent, and a write deadline toward the daemon. Whatever is not sent is
// counted and reported as one "dropped" event, so a sandbox doing a million operations costs the daemon
// a few hundred lines a second at most.
type emitter struct {
	queue   chan Event
	dropped atomic.Int64
	rate    float64
	burst   float64
	mu      sync.Mutex
	conn    net.Conn
}

func newEmitter(rate, burst int) *emitter {
	if rate <= 0 {
		rate = 200
	}
	if burst <= 0 {
		burst = 1000
	}
	return &emitter{queue: make(chan Event, 4096), rate: float64(rate), burst: float64(burst)}
}

func (e *emitter) emit(op, path, action string) {
	select {
	case e.queue <- Event{Op: op, Path: path, Action: action, Count: 1, Ts: time.Now().UnixMilli()}:
	default:
		e.dropped.Add(1)
	}
}

// serve accepts the daemon on the socket; one connection at a time (a newer one replaces the older).
func (e *emitter) serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		if e.conn != nil {
			e.conn.Close()
		}
		e.conn = c
		e.mu.Unlock()
		// The daemon sends nothing but may close; reading notices that.
		go func(c net.Conn) {
			buf := make([]byte, 64)
			for {
				if _, err := c.Read(buf); err != nil {
					e.mu.Lock()
					if e.conn == c {
						e.conn = nil
					}
					e.mu.Unlock()
					c.Close()
					return
				}
			}
		}(c)
	}
}

func (e *emitter) send(ev Event) bool {
	e.mu.Lock()
	c := e.conn
	e.mu.Unlock()
	if c == nil {
		return false
	}
	b, _ := json.Marshal(ev)
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return false
	}
	return true
}

func (e *emitter) run() {
	tokens := e.burst
	last := time.Now()
	var pending *Event
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	out := func(ev Event) {
		now := time.Now()
		tokens += now.Sub(last).Seconds() * e.rate
		if tokens > e.burst {
			tokens = e.burst
		}
		last = now
		if tokens < 1 {
			e.dropped.Add(ev.Count)
			return
		}
		tokens--
		if !e.send(ev) {
			e.dropped.Add(ev.Count)
		}
	}
	for {
		select {
		case ev := <-e.queue:
			if pending != nil && pending.Op == ev.Op && pending.Path == ev.Path && pending.Action == ev.Action && ev.Ts-pending.Ts < 1000 {
				pending.Count++
				continue
			}
			if pending != nil {
				out(*pending)
			}
			pending = &ev
		case <-tick.C:
			if pending != nil {
				out(*pending)
				pending = nil
			}
			if n := e.dropped.Swap(0); n > 0 {
				if !e.send(Event{Op: "dropped", Count: n, Ts: time.Now().UnixMilli()}) {
					e.dropped.Add(n)
				}
			}
		}
	}
}

func fatal(msg string, err error) {
	os.Stderr.WriteString("cordon-fsgate: " + msg + ": " + err.Error() + "\n")
	os.Exit(1)
}
