package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// resetWindow is the window over which a connection's reset requests are counted.
const resetWindow = 10 * time.Second

// quickReset is how soon after it starts a request must be cancelled by its client to
// count as reset: a stream opened and reset at once, as in HTTP/2 rapid reset.
const quickReset = time.Second

// connResets is one connection's count of requests its client reset.
type connResets struct {
	conn net.Conn

	mu      sync.Mutex
	start   time.Time // of the current window
	n       int
	closing bool
}

// connResetsKey is the context key of a connection's connResets.
type connResetsKey struct{}

// resetBudget closes a connection whose client resets more than max requests within
// resetWindow, each within quickReset of its start: the pattern of HTTP/2 rapid reset
// (streams opened and reset in a loop), which costs the server work for each stream
// while the client pays next to nothing. net/http already bounds the handlers such a
// connection runs at once; this bounds how long it may go on.
type resetBudget struct {
	max int
	log *slog.Logger
}

// connContext attaches a connResets to every connection (http.Server.ConnContext).
func (rb *resetBudget) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connResetsKey{}, &connResets{conn: c})
}

// wrap counts the requests h serves that their client reset quickly.
func (rb *resetBudget) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(w, r)
		if r.Context().Err() == nil || time.Since(start) > quickReset {
			return
		}
		cr, _ := r.Context().Value(connResetsKey{}).(*connResets)
		if cr == nil {
			return
		}
		cr.mu.Lock()
		now := time.Now()
		if now.Sub(cr.start) > resetWindow {
			cr.start, cr.n = now, 0
		}
		cr.n++
		over := cr.n > rb.max && !cr.closing
		if over {
			cr.closing = true
		}
		cr.mu.Unlock()
		if over {
			rb.log.Warn("closing a connection whose client resets requests in a loop",
				"peer", r.RemoteAddr, "resets", rb.max+1, "within", resetWindow.String())
			_ = cr.conn.Close()
		}
	})
}
