package batchread

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns both ends of a real TCP connection; the server end batches its reads.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := Listener(ln)
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server.(*Conn), client
}

// TestConn_ReadsInOrder reads a byte stream written in random pieces with reads of random
// sizes, small and large, and gets it back exactly.
func TestConn_ReadsInOrder(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	server, client := pair(t)
	want := make([]byte, 4<<20)
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	go func() {
		w := rand.New(rand.NewPCG(seed, 2))
		for b := want; len(b) > 0; {
			n := min(len(b), 1+w.IntN(40_000))
			if _, err := client.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
		client.Close()
	}()
	var got []byte
	p := make([]byte, 3*MinDirect)
	batched := 0
	for {
		n := 1 + rng.IntN(20)
		if rng.IntN(4) == 0 {
			n = MinDirect + rng.IntN(2*MinDirect)
		}
		k, err := server.Read(p[:n])
		got = append(got, p[:k]...)
		if server.buf != nil {
			batched++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("seed %d: read: %v", seed, err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("seed %d: read %d bytes, not the %d written", seed, len(got), len(want))
	}
	if batched == 0 {
		t.Fatalf("seed %d: no small read was served from a batch", seed)
	}
	if server.buf != nil {
		t.Fatalf("seed %d: a buffer is held after everything was read", seed)
	}
}

// TestConn_SmallReadTakesWhatArrived checks the point of the package: three frames
// written at once are read with one read(2) and no buffer is kept once they are served.
func TestConn_SmallReadTakesWhatArrived(t *testing.T) {
	server, client := pair(t)
	frames := []byte("123456789abcdefghi" + "ABCDEFGHI")
	if _, err := client.Write(frames); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 9)
	if _, err := io.ReadFull(server, p); err != nil || string(p) != "123456789" {
		t.Fatalf("first read: %q, %v", p, err)
	}
	if server.buf == nil || server.w-server.r != len(frames)-9 {
		t.Fatalf("after the first small read the batch holds %d bytes, want %d", server.w-server.r, len(frames)-9)
	}
	rest := make([]byte, len(frames)-9)
	if _, err := io.ReadFull(server, rest); err != nil || string(rest) != "abcdefghiABCDEFGHI" {
		t.Fatalf("rest: %q, %v", rest, err)
	}
	if server.buf != nil {
		t.Fatal("the batch is still held after it was all served")
	}
}

// TestConn_Errors checks that a blocked small read ends as a net.Conn's would: on a
// deadline (a timeout), on Close (net.ErrClosed) and at the peer's end (io.EOF).
func TestConn_Errors(t *testing.T) {
	server, _ := pair(t)
	if err := server.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := server.Read(make([]byte, 9))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}

	server, _ = pair(t)
	done := make(chan error, 1)
	go func() { _, err := server.Read(make([]byte, 9)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	server.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read during Close: %v, want net.ErrClosed", err)
	}

	server, client := pair(t)
	client.Close()
	if _, err := server.Read(make([]byte, 9)); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}
}
