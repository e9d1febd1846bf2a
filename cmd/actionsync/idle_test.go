package main

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	actionsyncv1connect "github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// TestServe_resetConnectionsFreed: HTTP/2 connections that die with a stream open (the
// client's TCP connection reset) are freed at once, not held until the idle timeout
// (see idleCloser; found by the stress suite's churn). Not parallel: it measures the
// process's heap.
func TestServe_resetConnectionsFreed(t *testing.T) {
	ts := startServer(t, nil)
	reset := func(n int) {
		t.Helper()
		for range n {
			var conn *net.TCPConn
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			tr := &http.Transport{Protocols: &p, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					conn = c.(*net.TCPConn)
				}
				return c, err
			}}
			client := actionsyncv1connect.NewSyncServiceClient(&http.Client{Transport: tr}, ts.url)
			s, err := client.Subscribe(t.Context(), connect.NewRequest(&actionsyncv1.SubscribeRequest{
				Positions: []*actionsyncv1.Position{{Channel: "reset", Live: true}}}))
			if err != nil || !s.Receive() {
				t.Fatalf("subscribe: %v, %v", err, s.Err())
			}
			_ = conn.SetLinger(0)
			_ = conn.Close() // a RST under the open stream
			for s.Receive() {
			}
			s.Close()
			tr.CloseIdleConnections()
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	reset(50)
	time.Sleep(200 * time.Millisecond)
	base := heap()
	const n = 500
	reset(n)
	// The server learns of each reset asynchronously: allow it a moment.
	var perConn int64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		perConn = (int64(heap()) - int64(base)) / n
		if perConn < 2<<10 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("heap after %d reset connections: %+d bytes per connection", n, perConn)
	if perConn >= 2<<10 {
		t.Errorf("heap after %d connections reset with a stream open: %+d bytes per connection held, want < 2 KiB (freed)", n, perConn)
	}
}

// TestIdleCloser: a connection idle for longer than the closer's bound is closed, over
// HTTP/1.1 and h2c; an active one is not; and the closer forgets closed connections.
func TestIdleCloser(t *testing.T) {
	t.Parallel()
	for _, h2c := range []bool{false, true} {
		name := "http1"
		if h2c {
			name = "h2c"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ic := newIdleCloser(300 * time.Millisecond)
			var p http.Protocols
			p.SetHTTP1(true)
			p.SetUnencryptedHTTP2(true)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Protocols: &p, ConnState: ic.connState, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					time.Sleep(600 * time.Millisecond) // active for longer than the bound
				}
			})}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { _ = srv.Close() })

			closed := make(chan struct{})
			var cp http.Protocols
			if h2c {
				cp.SetUnencryptedHTTP2(true)
			} else {
				cp.SetHTTP1(true)
			}
			dials := 0
			tr := &http.Transport{Protocols: &cp, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials++
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &watchedConn{Conn: c, closed: closed}, nil
			}}
			t.Cleanup(tr.CloseIdleConnections)
			get := func(path string) {
				t.Helper()
				resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String() + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			get("/slow")
			get("/") // the same connection: the slow request was active, not idle
			if dials != 1 {
				t.Errorf("dials after a request longer than the idle bound: got %d, want 1", dials)
			}
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("idle connection not closed within 5s")
			}
			deadline := time.Now().Add(5 * time.Second)
			for ic.tracked() != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := ic.tracked(); n != 0 {
				t.Errorf("connections tracked after close: got %d, want 0", n)
			}
		})
	}
}

// watchedConn closes closed when a read finds the connection closed by the server.
type watchedConn struct {
	net.Conn
	closed chan struct{}
	once   bool
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !c.once {
		c.once = true
		close(c.closed)
	}
	return n, err
}
