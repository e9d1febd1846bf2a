// Package batchread makes small reads on TCP connections cheap: a read of fewer than
// MinDirect bytes takes everything that has arrived with one read(2) and serves the small
// reads that follow from it, without holding a buffer while the connection is idle.
//
// net/http's HTTP/2 server reads each frame with two unbuffered reads (the 9-byte header,
// then the payload), so without it a unary request over h2c costs four read(2) calls and
// every WINDOW_UPDATE or PING from a client two more. TLS connections need none of this:
// crypto/tls reads whole records.
package batchread

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// MinDirect is the smallest read passed straight to the socket. Smaller reads go through
// a pooled buffer of BufferSize bytes.
const (
	MinDirect  = 1024
	BufferSize = 16 << 10
)

var buffers = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

// Listener wraps a TCP listener: the connections it accepts batch their small reads.
func Listener(l net.Listener) net.Listener { return listener{l} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	return &Conn{Conn: tc, tcp: tc, raw: raw}, nil
}

// Conn is a TCP connection whose small reads are batched. Like any net.Conn, it may be
// read by one goroutine at a time. It has no ReadFrom or WriteTo: a WriteTo reading the
// socket directly would skip what a batch holds.
type Conn struct {
	net.Conn
	tcp *net.TCPConn
	raw syscall.RawConn

	buf  *[]byte // what the last batch read holds; nil when all of it has been served
	r, w int     // unread bytes are (*buf)[r:w]
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.buf != nil {
		n := copy(p, (*c.buf)[c.r:c.w])
		if c.r += n; c.r == c.w {
			buffers.Put(c.buf)
			c.buf = nil
		}
		return n, nil
	}
	if len(p) >= MinDirect {
		return c.Conn.Read(p)
	}
	// Wait until the socket is readable without holding a buffer (the callback returns
	// false on EAGAIN and the poller waits), then read all that is there into one.
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		b := buffers.Get().(*[]byte)
		n, rerr = syscall.Read(int(fd), *b)
		if n > 0 {
			c.buf, c.r, c.w = b, 0, n
			return true
		}
		buffers.Put(b)
		return rerr != syscall.EAGAIN && rerr != syscall.EINTR
	})
	switch {
	case err != nil: // a deadline, or the connection closed
		return 0, c.opError(err)
	case rerr != nil:
		return 0, c.opError(os.NewSyscallError("read", rerr))
	case n == 0:
		return 0, io.EOF
	}
	return c.Read(p)
}

// opError wraps err as net.TCPConn.Read does, so that callers' errors.Is(err,
// net.ErrClosed) and Timeout checks hold.
func (c *Conn) opError(err error) error {
	return &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// CloseWrite shuts down the writing side (net/http uses it to close gracefully).
func (c *Conn) CloseWrite() error { return c.tcp.CloseWrite() }
