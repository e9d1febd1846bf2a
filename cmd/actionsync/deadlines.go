package main

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// withDeadlines bounds how long a client can stall the server, per request:
//
//   - reading the request body: a unary or server-streaming request must arrive within
//     read (a bidi Sync stream reads for its whole life and has none; HTTP/2 pings catch
//     a dead peer there);
//   - every write: each Write and Flush of the response must finish within write, so a
//     reader that stopped (a frozen process, a socket nobody reads) is cut off instead of
//     holding its stream, its goroutine and its buffers. The deadline is cleared after
//     each write: an idle stream is not a stalled one.
//
// Zero durations turn the respective bound off.
func withDeadlines(h http.Handler, read, write time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if read > 0 && !strings.HasSuffix(r.URL.Path, "/Sync") && r.Body != nil && r.Body != http.NoBody {
			// Cleared once the body is read: an HTTP/1.1 server reads the connection in
			// the background afterwards, and a deadline there would end the response.
			if rc.SetReadDeadline(time.Now().Add(read)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		if write > 0 {
			w = &deadlineWriter{ResponseWriter: w, rc: rc, d: write}
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

// deadlineWriter sets a write deadline around every Write and Flush.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

// Write implements http.ResponseWriter.
func (w *deadlineWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.d))
	n, err := w.ResponseWriter.Write(p)
	_ = w.rc.SetWriteDeadline(time.Time{})
	return n, err
}

// Flush implements http.Flusher.
func (w *deadlineWriter) Flush() {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.d))
	_ = w.rc.Flush()
	_ = w.rc.SetWriteDeadline(time.Time{})
}

// FlushError flushes and reports the error (http.ResponseController uses it).
func (w *deadlineWriter) FlushError() error {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.d))
	err := w.rc.Flush()
	_ = w.rc.SetWriteDeadline(time.Time{})
	return err
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
