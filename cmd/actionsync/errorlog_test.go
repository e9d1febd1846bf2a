package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the logger's writes and the test's reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.b.String()), "\n")
}

// TestServerErrorLog: a flood of net/http error lines (a line per failed TLS handshake)
// is logged up to the burst, the rest counted, and the next line allowed says how many
// were left out.
func TestServerErrorLog(t *testing.T) {
	t.Parallel()
	var out lockedBuffer
	el := newServerErrorLog(slog.New(slog.NewTextHandler(&out, nil)))
	const flood = 500
	for i := range flood {
		el.Printf("http: TLS handshake error from 127.0.0.1:%d: tls: first record does not look like a TLS handshake", 40000+i)
	}
	if got := len(out.lines()); got != serverErrorLogBurst {
		t.Fatalf("%d lines logged of a flood of %d, want the burst, %d", got, flood, serverErrorLogBurst)
	}
	lines := out.lines()
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], `msg="http: TLS handshake error from 127.0.0.1:40000`) {
		t.Errorf("first line %q: want net/http's line at WARN", lines[0])
	}
	time.Sleep(time.Second / serverErrorLogRate * 11 / 10)
	el.Printf("http2: server: error reading preface from client 127.0.0.1:1: timeout waiting for client preface")
	lines = out.lines()
	last := lines[len(lines)-1]
	if want := fmt.Sprintf("suppressed=%d", flood-serverErrorLogBurst); len(lines) != serverErrorLogBurst+1 || !strings.Contains(last, want) || !strings.Contains(last, "error reading preface") {
		t.Errorf("after a second: %d lines, the last %q; want %d, the new line with %s", len(lines), last, serverErrorLogBurst+1, want)
	}
}
