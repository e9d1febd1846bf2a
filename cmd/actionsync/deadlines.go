package main

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// withDeadlines bounds how long a client can stall the server, per request:
//
//   - reading the request body: a unary or server-streaming request must arrive within
//     read (a bidi Sync stream reads for its whole life and has none; HTTP/2 pings catch
//     a dead peer there);
//   - every write: each Write and Flush of the response must finish within the watch's
//     bound (checked every quarter of it), so a reader that stopped (a frozen process, a
//     socket nobody reads) is cut off instead of holding its stream, its goroutine and
//     its buffers. An idle stream is not a stalled one: only writes under way count.
//
// A zero read or a nil watch turns the respective bound off.
func withDeadlines(h http.Handler, read time.Duration, watch *writeWatch) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if read > 0 && !strings.HasSuffix(r.URL.Path, "/Sync") && r.Body != nil && r.Body != http.NoBody {
			// Cleared once the body is read: an HTTP/1.1 server reads the connection in
			// the background afterwards, and a deadline there would end the response.
			if rc.SetReadDeadline(time.Now().Add(read)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		if watch != nil {
			dw := &deadlineWriter{ResponseWriter: w, rc: rc}
			defer watch.add(dw)()
			w = dw
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody clears the read deadline when the body has been read to its end.
type deadlineBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	cleared bool
}

// Read implements io.Reader.
func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	// Only at the end of the body: after a timeout the deadline must stay, or the
	// server's discarding of the unread rest would wait for the stalled client forever.
	if errors.Is(err, io.EOF) && !b.cleared {
		b.cleared = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// deadlineWriter marks when a Write or Flush starts and ends, so that a writeWatch can
// cut one that takes longer than its bound. Marking costs two clock reads and two atomic
// stores per write; setting a deadline around each write cost an HTTP/2 timer each, about
// 4 % of the server's CPU at 1,000 subscribers.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	started atomic.Int64 // unix ns the current write started; 0: none under way
}

// Write implements http.ResponseWriter. (No closure: this runs for every response write
// of every stream, and a closure capturing the results would be allocated each time.)
func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.started.Store(time.Now().UnixNano())
	n, err := w.ResponseWriter.Write(p)
	w.started.Store(0)
	return n, err
}

// Flush implements http.Flusher.
func (w *deadlineWriter) Flush() { _ = w.FlushError() }

// FlushError flushes and reports the error (http.ResponseController uses it).
func (w *deadlineWriter) FlushError() error {
	w.started.Store(time.Now().UnixNano())
	err := w.rc.Flush()
	w.started.Store(0)
	return err
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writeWatch cuts the writes that take longer than max: every max/4 it looks at the
// writes under way and sets an expired write deadline on those started more than max ago,
// which fails them (the stream or connection is closed).
type writeWatch struct {
	max  time.Duration
	done chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	writers map[*deadlineWriter]struct{}
}

// newWriteWatch starts a watch; stop ends it.
func newWriteWatch(max time.Duration) *writeWatch {
	ww := &writeWatch{max: max, done: make(chan struct{}), writers: make(map[*deadlineWriter]struct{})}
	ww.wg.Add(1)
	go ww.run()
	return ww
}

// run checks the writes under way until stop.
func (ww *writeWatch) run() {
	defer ww.wg.Done()
	t := time.NewTicker(max(ww.max/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ww.done:
			return
		case now := <-t.C:
			ww.mu.Lock()
			for w := range ww.writers {
				if s := w.started.Load(); s != 0 && now.UnixNano()-s > int64(ww.max) {
					_ = w.rc.SetWriteDeadline(now) // in the past: the write fails now
				}
			}
			ww.mu.Unlock()
		}
	}
}

// add registers w while its handler runs; the returned func unregisters it.
func (ww *writeWatch) add(w *deadlineWriter) func() {
	ww.mu.Lock()
	ww.writers[w] = struct{}{}
	ww.mu.Unlock()
	return func() {
		ww.mu.Lock()
		delete(ww.writers, w)
		ww.mu.Unlock()
	}
}

// stop ends the watch and waits for its goroutine.
func (ww *writeWatch) stop() {
	close(ww.done)
	ww.wg.Wait()
}
