package main

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// idleCloser closes connections that stay idle (no request or stream open) for longer
// than d, for HTTP/1.1 and HTTP/2 alike. It replaces http.Server.IdleTimeout, whose
// HTTP/2 timer keeps a dead connection in memory: when a connection ends with streams
// still open (the client vanished, its network reset the connection), net/http's
// HTTP/2 server stops the connection's idle timer and then closes its streams, and
// closing the last stream arms the timer again. The timer then holds the whole
// connection (its framer's write buffer, HPACK tables, streams: about 30 KB) until it
// fires, IdleTimeout later, so a burst of dropped connections, or a client that opens a
// stream and resets its connection in a loop, piles up memory for two minutes. These
// timers hold only the net.Conn and are stopped when the connection closes.
type idleCloser struct {
	d time.Duration

	mu     sync.Mutex
	timers map[net.Conn]*time.Timer
}

func newIdleCloser(d time.Duration) *idleCloser {
	return &idleCloser{d: d, timers: make(map[net.Conn]*time.Timer)}
}

// connState follows each connection's state (http.Server.ConnState): idle starts its
// timer, active stops it, closed forgets it.
func (ic *idleCloser) connState(c net.Conn, state http.ConnState) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	t := ic.timers[c]
	switch state {
	case http.StateIdle:
		if t == nil {
			ic.timers[c] = time.AfterFunc(ic.d, func() { _ = c.Close() })
		} else {
			t.Reset(ic.d)
		}
	case http.StateActive:
		if t != nil {
			t.Stop()
		}
	case http.StateClosed, http.StateHijacked:
		if t != nil {
			t.Stop()
			delete(ic.timers, c)
		}
	}
}

// tracked returns how many connections the closer holds a timer for.
func (ic *idleCloser) tracked() int {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	return len(ic.timers)
}
