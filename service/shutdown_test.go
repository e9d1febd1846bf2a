package service_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// TestService_Shutdown is not parallel: goleak looks at every goroutine of the process.
func TestService_Shutdown(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	// Registered first, so it runs after every other cleanup: streams cancelled, the
	// server closed, client connections closed.
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	e := newEnv(t, envConfig{})
	before := e.dispatch(t, "room", "w", acts(2, "before")...)

	var streams []*reader
	names := []string{}
	for _, h2 := range []bool{true, false} {
		for _, p := range protocols {
			r := subscribe(t, e.client(p, h2), &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", AfterSeq: 2}}})
			r.take(t, 1) // ready
			streams = append(streams, r)
			names = append(names, "Subscribe "+p.name)
		}
	}
	var syncs []*syncer
	for _, sc := range syncClients {
		s := sc.open(t, e)
		s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", Live: true}}})
		s.take(t, 1) // ready
		syncs = append(syncs, s)
		streams = append(streams, s.reader)
		names = append(names, "Sync "+sc.name)
	}
	// A dispatch on a Sync stream, answered before the shutdown.
	syncs[0].dispatch(t, &actionsyncv1.DispatchRequest{Channel: "room", ClientId: "sync", Actions: acts(1, "sync")})
	var ack *actionsyncv1.Ack
	for ack == nil {
		if ev := syncs[0].nextNonBeat(t); ev.Dispatched != nil {
			ack = ev.Dispatched.GetAcks()[0]
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.svc.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	t.Logf("Shutdown returned in %v with %d streams open", time.Since(start), len(streams))

	for i, r := range streams {
		evs, err := r.end(t)
		for _, ev := range evs {
			if ev.Action == nil && ev.Dispatched == nil {
				t.Errorf("%s: unexpected event %+v", names[i], ev)
			}
		}
		if got := codeOf(err); got != connect.CodeUnavailable {
			t.Errorf("%s: stream ended with %v, want unavailable", names[i], err)
		}
	}

	// New streams are refused.
	r := subscribe(t, e.client(protocols[0], true), &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room"}}})
	r.wantEnd(t, connect.CodeUnavailable, "server shutting down")
	s := openGRPCSync(t, e.grpcConn(t))
	s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room"}}})
	s.wantEnd(t, connect.CodeUnavailable, "server shutting down")

	// Every acknowledged action is in history.
	h := e.history(t, "room")
	var got []*actionsyncv1.Ack
	for _, a := range h {
		got = append(got, &actionsyncv1.Ack{Id: a.GetId(), Seq: a.GetSeq()})
	}
	if diff := cmp.Diff(append(before, ack), got, protocmp.Transform()); diff != "" {
		t.Errorf("history after Shutdown (-acked +history):\n%s", diff)
	}

	// A second Shutdown has nothing to wait for.
	if err := e.svc.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// A stream whose writes are blocked by a client that does not read cannot be told to
// stop: Shutdown gives up at its context's deadline, and returns once the stream ends.
func TestService_Shutdown_blockedStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	slowHTTP := newH2CClient(&http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10})
	t.Cleanup(slowHTTP.CloseIdleConnections)
	slow := subscribe(t, actionsyncv1connect.NewSyncServiceClient(slowHTTP, e.srv.URL), &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "c"}}})
	slow.take(t, 1)
	rng := rand.NewChaCha8([32]byte{1})
	for range 20 { // 320 KiB of incompressible text against a 64 KiB window
		b := make([]byte, 8<<10)
		_, _ = rng.Read(b)
		e.dispatch(t, "c", "", act("BIG", "", hex.EncodeToString(b)))
	}
	time.Sleep(50 * time.Millisecond) // let the writer block

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := e.svc.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a blocked stream: got %v, want %v", err, context.DeadlineExceeded)
	}
	// Once the client reads, the stream learns of the shutdown and ends.
	evs, err := slow.end(t)
	if got := codeOf(err); got != connect.CodeUnavailable {
		t.Fatalf("blocked stream ended with %v after %d events, want unavailable", err, len(evs))
	}
	if err := e.svc.Shutdown(rpcCtx(t)); err != nil {
		t.Fatalf("Shutdown after the stream ended: %v", err)
	}
}

// A closed broker (the process is going away) ends streams and refuses dispatches with
// UNAVAILABLE, so clients reconnect elsewhere.
func TestService_brokerClosed(t *testing.T) {
	t.Parallel()
	forEachH2Client(t, envConfig{}, func(t *testing.T, c clientCase) {
		r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "a"}}})
		r.take(t, 1)
		s := openSync(t, c.client)
		s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "a"}}})
		s.take(t, 1)
		if err := c.env.broker.Close(); err != nil {
			t.Fatal(err)
		}
		r.wantEnd(t, connect.CodeUnavailable, "reconnect")
		s.wantEnd(t, connect.CodeUnavailable, "reconnect")
		_, err := c.client.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "a", Actions: acts(1, "")}))
		checkErr(t, err, connect.CodeUnavailable, "reconnect")
	})
}

// A stream that always has something to send still learns of the shutdown promptly.
func TestService_Shutdown_busyStream(t *testing.T) {
	t.Parallel()
	// A queue the unthrottled publisher cannot fill in the test's time: the stream must
	// stay busy, not be cut off as a slow consumer.
	e := newEnv(t, envConfig{mem: memory.Options{QueueSize: 1 << 22}})
	r := subscribe(t, e.client(protocols[0], true), &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "busy"}}})
	r.take(t, 1) // ready
	stop := make(chan struct{})
	published := make(chan struct{})
	go func() { // publishes straight into the broker until stopped: no HTTP in the way
		defer close(published)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a := act("T", "", float64(i))
			a.Id = fmt.Sprintf("busy-%d", i)
			if _, err := e.broker.Publish(t.Context(), "busy", []*actionsyncv1.Action{a}); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-published })
	r.take(t, 100) // the stream is busy

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.svc.Shutdown(ctx) }()
	_, err := r.end(t)
	if got := codeOf(err); got != connect.CodeUnavailable {
		t.Fatalf("busy stream ended with %v, want unavailable", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown with a busy stream: %v", err)
	}
}
