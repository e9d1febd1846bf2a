package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// runSubscriberEnv makes the test binary a subscriber process of the server at its URL:
// it follows channel "stall" live over h2c, prints "ready" once the stream is live, and
// reads until it is killed. The tests stop it (SIGSTOP) as a backgrounded phone would be.
const runSubscriberEnv = "ACTIONSYNC_TEST_SUBSCRIBER"

func runSubscriber(url string) int {
	c := actionsyncv1connect.NewSyncServiceClient(h2cClient(), url)
	s, err := c.Subscribe(context.Background(), connect.NewRequest(&actionsyncv1.SubscribeRequest{
		Positions: []*actionsyncv1.Position{{Channel: "stall", Live: true}}}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for s.Receive() {
		if s.Msg().GetReady() != nil {
			fmt.Println("ready")
		}
	}
	fmt.Fprintln(os.Stderr, s.Err())
	return 1
}

// startSubscriber starts a subscriber process and waits until its stream is live.
func startSubscriber(t *testing.T, url string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), runSubscriberEnv+"="+url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && sc.Text() == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("subscriber process: no ready")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber process: not ready after 10s")
	}
	return cmd
}

// rpcsEnded counts the log lines of finished RPCs of procedure (a suffix, e.g. "/Subscribe").
func rpcsEnded(ts *testServer, procedure string) int {
	n := 0
	for _, line := range strings.Split(ts.logs.String(), "\n") {
		if strings.Contains(line, `"msg":"rpc"`) && strings.Contains(line, procedure+`"`) {
			n++
		}
	}
	return n
}

// waitFor polls cond every 50 ms until it holds or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// canary follows channel "stall" live in this process and counts the actions in order.
type canary struct {
	got chan uint64
}

func startCanary(t *testing.T, url string) *canary {
	t.Helper()
	c := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), url)
	s, err := c.Subscribe(t.Context(), connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "stall", Live: true}}}))
	if err != nil || !s.Receive() {
		t.Fatalf("canary: %v", err)
	}
	cn := &canary{got: make(chan uint64, 1<<16)}
	go func() {
		defer close(cn.got)
		for s.Receive() {
			for _, a := range s.Msg().GetActions() {
				cn.got <- a.GetSeq()
			}
		}
	}()
	return cn
}

// expect checks that the canary receives seqs from..to in order.
func (cn *canary) expect(t *testing.T, from, to uint64) {
	t.Helper()
	for want := from; want <= to; want++ {
		select {
		case seq, ok := <-cn.got:
			if !ok || seq != want {
				t.Fatalf("canary: got seq %d (open %v), want %d", seq, ok, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("canary: seq %d not received", want)
		}
	}
}

// dispatchN sends n actions with payloads of size bytes to channel "stall".
func dispatchN(t *testing.T, url string, n, size int) {
	t.Helper()
	c := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), url)
	payload := structpb.NewStringValue(strings.Repeat("x", size))
	for range n {
		if _, err := c.Dispatch(t.Context(), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "stall",
			Actions: []*actionsyncv1.Action{{Type: "T", Payload: payload}}})); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServe_stoppedSubscriber: a subscriber process that is stopped (SIGSTOP) stops
// answering HTTP/2 pings; the server closes its connection within --keepalive plus
// --keepalive-timeout and frees its stream, while another subscriber gets everything.
func TestServe_stoppedSubscriber(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--keepalive", "500ms", "--keepalive-timeout", "500ms")
	cn := startCanary(t, ts.url)
	child := startSubscriber(t, ts.url)
	if err := child.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	dispatchN(t, ts.url, 20, 1000)
	took := waitFor(t, 10*time.Second, "the stopped subscriber's stream to end", func() bool { return rpcsEnded(ts, "/Subscribe") >= 1 })
	t.Logf("stopped subscriber's stream ended %v after the stop", took)
	cn.expect(t, 1, 20)
}

// TestServe_socketStopsReading: a client that stops reading its socket (HTTP/1.1) while
// actions pour in is cut off by --write-timeout instead of holding its stream; another
// subscriber gets everything.
func TestServe_socketStopsReading(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--write-timeout", "1s")
	cn := startCanary(t, ts.url)
	host := strings.TrimPrefix(ts.url, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	body := []byte(`{"positions":[{"channel":"stall","live":true}]}`)
	env := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(env[1:], uint32(len(body)))
	env = append(env, body...)
	fmt.Fprintf(conn, "POST /actionsync.v1.SyncService/Subscribe HTTP/1.1\r\nHost: %s\r\nContent-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\nContent-Length: %d\r\n\r\n", host, len(env))
	if _, err := conn.Write(env); err != nil {
		t.Fatal(err)
	}
	// Read the response head and the ready message, then never read again.
	buf := make([]byte, 512)
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}
	// About 12 MB for a socket that reads nothing: the server's writes block.
	dispatchN(t, ts.url, 200, 60_000)
	took := waitFor(t, 15*time.Second, "the stalled stream to end", func() bool { return rpcsEnded(ts, "/Subscribe") >= 1 })
	t.Logf("stalled stream ended %v after the last dispatch", took)
	cn.expect(t, 1, 200)
}

// TestServe_stalledUpload: a request body that stops arriving is cut off by
// --read-timeout.
func TestServe_stalledUpload(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--read-timeout", "1s")
	host := strings.TrimPrefix(ts.url, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /actionsync.v1.SyncService/Dispatch HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"channel\":", host)
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, _ := bufio.NewReader(conn).ReadString('\n')
	if time.Since(start) > 5*time.Second {
		t.Fatalf("the stalled upload held the request for %v; logs:\n%s", time.Since(start), ts.logs)
	}
	t.Logf("stalled upload answered after %v: %q", time.Since(start), resp)
}

// h2cClient is an HTTP/2-without-TLS client for the subscriber process.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// TestServe_shutdownWithStoppedClient: SIGTERM with a stopped subscriber process whose
// socket is full exits cleanly within --shutdown-timeout, having lost nothing acknowledged.
func TestServe_shutdownWithStoppedClient(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--shutdown-timeout", "5s")
	child := startSubscriber(t, ts.url)
	if err := child.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Enough for the stopped reader's buffers to fill: the server's writes to it block.
	dispatchN(t, ts.url, 200, 60_000)
	start := time.Now()
	if err := ts.stop(t); err != nil {
		t.Fatalf("shutdown with a stopped client: %v after %v\n%s", err, time.Since(start), ts.logs)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v, more than --shutdown-timeout 5s", d)
	}
	t.Logf("shutdown with a stopped client took %v", time.Since(start))
}

// TestServe_shutdownDeliversAcked: dispatches racing a SIGTERM are either refused
// (UNAVAILABLE) or acknowledged, and every acknowledged one reached every subscriber
// before its stream ended: nothing is acknowledged to no one.
func TestServe_shutdownDeliversAcked(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--shutdown-timeout", "10s")
	const subscribers = 300
	type result struct {
		seqs map[uint64]bool
		err  error
	}
	results := make(chan result, subscribers)
	hc := httpClient(t, true)
	for range subscribers {
		c := actionsyncv1connect.NewSyncServiceClient(hc, ts.url)
		s, err := c.Subscribe(context.Background(), connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "stall", Live: true}}}))
		if err != nil || !s.Receive() {
			t.Fatalf("subscribe: %v", err)
		}
		go func() {
			r := result{seqs: map[uint64]bool{}}
			for s.Receive() {
				for _, a := range s.Msg().GetActions() {
					r.seqs[a.GetSeq()] = true
				}
			}
			r.err = s.Err()
			results <- r
		}()
	}
	const publishers = 4
	acked := make(chan []uint64, publishers)
	for range publishers {
		go func() {
			c := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), ts.url)
			var seqs []uint64
			for {
				res, err := c.Dispatch(context.Background(), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "stall",
					Actions: []*actionsyncv1.Action{{Type: "T"}, {Type: "T"}, {Type: "T"}, {Type: "T"}}}))
				if err != nil {
					acked <- seqs
					return
				}
				for _, a := range res.Msg.GetAcks() {
					seqs = append(seqs, a.GetSeq())
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // dispatches under way
	if err := ts.stop(t); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	var seqs []uint64
	for range publishers {
		seqs = append(seqs, <-acked...)
	}
	if len(seqs) == 0 {
		t.Fatal("nothing was acknowledged before the shutdown")
	}
	for range subscribers {
		r := <-results
		if connect.CodeOf(r.err) != connect.CodeUnavailable {
			t.Errorf("a stream ended with %v, want unavailable", r.err)
		}
		missing := 0
		for _, seq := range seqs {
			if !r.seqs[seq] {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("a subscriber misses %d of the %d acknowledged actions", missing, len(seqs))
		}
	}
	t.Logf("%d actions acknowledged during the run, every one delivered to all %d subscribers", len(seqs), subscribers)
}

// TestServe_rapidReset: a client that opens streams and resets them in a loop on one
// connection has the connection closed past --max-resets-per-connection; other clients
// are not disturbed.
func TestServe_rapidReset(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--max-resets-per-connection", "20")
	cn := startCanary(t, ts.url)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	c := actionsyncv1connect.NewSyncServiceClient(&http.Client{Transport: tr}, ts.url)
	for range 60 {
		ctx, cancel := context.WithCancel(t.Context())
		s, err := c.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "stall", Live: true}}}))
		if err == nil {
			s.Receive() // the stream is open on the server
		}
		cancel()
		if strings.Contains(ts.logs.String(), "resets requests in a loop") {
			break
		}
		time.Sleep(5 * time.Millisecond) // let the server see the reset
	}
	waitFor(t, 5*time.Second, "the resetting connection to be closed", func() bool {
		return strings.Contains(ts.logs.String(), "closing a connection whose client resets requests in a loop")
	})
	dispatchN(t, ts.url, 5, 100)
	cn.expect(t, 1, 5)
}
