package service

import (
	"compress/gzip"
	"errors"
	"io"

	"connectrpc.com/connect"
)

// errInflateLimit stops a decompression at the read limit.
var errInflateLimit = errors.New("compressed message inflates past the read limit")

// boundedGzip is a gzip decompressor that fails once it has produced more than limit
// bytes. connect-go stops at the read limit too, but then inflates the rest to report
// the message's size: a small "zip bomb" would cost seconds of CPU. With this, a refusal
// costs at most limit+1 bytes of inflating.
type boundedGzip struct {
	r     gzip.Reader
	limit int64
	n     int64
	ok    bool // r has been Reset onto a stream
}

var _ connect.Decompressor = (*boundedGzip)(nil)

// Read implements io.Reader.
func (g *boundedGzip) Read(p []byte) (int, error) {
	if !g.ok {
		return 0, errors.New("gzip: no input")
	}
	if g.n > g.limit {
		return 0, errInflateLimit
	}
	if rest := g.limit + 1 - g.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	return n, err
}

// Reset implements connect.Decompressor.
func (g *boundedGzip) Reset(r io.Reader) error {
	g.n, g.ok = 0, false
	if err := g.r.Reset(r); err != nil {
		return err
	}
	g.ok = true
	return nil
}

// Close implements connect.Decompressor.
func (g *boundedGzip) Close() error { return g.r.Close() }

// gzipOption registers gzip with decompression bounded by limit (the read limit).
func gzipOption(limit int) connect.HandlerOption {
	return connect.WithCompression("gzip",
		func() connect.Decompressor { return &boundedGzip{limit: int64(limit)} },
		func() connect.Compressor { return gzip.NewWriter(io.Discard) },
	)
}
