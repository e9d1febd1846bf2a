package main

import (
	"log"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Server error log bounds: net/http writes a line per failed TLS handshake, per HTTP/2
// client that sends a bad preface, and so on, as fast as anyone who reaches the port
// opens connections.
const (
	serverErrorLogRate  = 1  // lines per second, over the burst
	serverErrorLogBurst = 20 // lines at once
)

// serverErrorLog is net/http's ErrorLog, written to the server's logger at WARN at most
// serverErrorLogRate lines a second after a burst of serverErrorLogBurst; the lines past
// that are counted, and the next line logged says how many were left out
// ("suppressed"), so a flood of bad connections costs no more than that in log volume.
type serverErrorLog struct {
	log        *slog.Logger
	limit      *rate.Limiter
	suppressed atomic.Int64
}

// newServerErrorLog returns a *log.Logger for http.Server.ErrorLog.
func newServerErrorLog(logger *slog.Logger) *log.Logger {
	w := &serverErrorLog{log: logger, limit: rate.NewLimiter(serverErrorLogRate, serverErrorLogBurst)}
	return log.New(w, "", 0)
}

// Write implements io.Writer: p is one line of net/http's.
func (w *serverErrorLog) Write(p []byte) (int, error) {
	if !w.limit.AllowN(time.Now(), 1) {
		w.suppressed.Add(1)
		return len(p), nil
	}
	msg := strings.TrimSuffix(string(p), "\n")
	if n := w.suppressed.Swap(0); n > 0 {
		w.log.Warn(msg, "suppressed", n)
	} else {
		w.log.Warn(msg)
	}
	return len(p), nil
}
