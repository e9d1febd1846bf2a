package service_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

func TestService_Subscribe_heartbeat(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{svc: service.Options{Heartbeat: 50 * time.Millisecond}}, func(t *testing.T, c clientCase) {
		r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "idle"}}})
		if diff := diffEvents([]event{readyEv("idle", 0)}, r.take(t, 1)); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
		start := time.Now()
		for i := range 3 {
			if ev := r.next(t); !ev.Heartbeat {
				t.Fatalf("event %d on an idle stream: got %+v, want a heartbeat", i, ev)
			}
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("3 heartbeats in %v: want them about 50ms apart", d)
		}
		// Activity is still delivered between heartbeats.
		c.env.dispatch(t, "idle", "", acts(1, "")...)
		if ev := r.nextNonBeat(t); ev.Action.GetSeq() != 1 {
			t.Fatalf("got %+v, want seq 1", ev)
		}
	})
}

func TestService_Sync_heartbeat(t *testing.T) {
	t.Parallel()
	forEachSyncClient(t, envConfig{svc: service.Options{Heartbeat: 50 * time.Millisecond}}, func(t *testing.T, e *testEnv, open func(*testing.T) *syncer) {
		s := open(t)
		s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "idle"}}})
		s.take(t, 1) // ready
		for i := range 2 {
			if ev := s.next(t); !ev.Heartbeat {
				t.Fatalf("event %d on an idle stream: got %+v, want a heartbeat", i, ev)
			}
		}
	})
}

func TestService_Subscribe_batching(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
		const n = 500
		for i := range n / 100 {
			c.env.dispatch(t, "big", "w", acts(100, fmt.Sprintf("b%d", i))...)
		}
		r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "big"}}})
		evs := r.take(t, n+1)
		for i, ev := range evs[:n] {
			if ev.Action.GetSeq() != uint64(i+1) {
				t.Fatalf("event %d: got %+v, want seq %d", i, ev, i+1)
			}
		}
		if diff := diffEvents([]event{readyEv("big", n)}, evs[n:]); diff != "" {
			t.Fatalf("after the replay (-want +got):\n%s", diff)
		}
		if r.receives > n/50 {
			t.Errorf("replay of %d actions took %d responses, want at most %d", n, r.receives, n/50)
		}
		t.Logf("replay of %d actions in %d responses", n, r.receives)
	})
}

// Live actions published in a burst are batched too, once the writer falls behind.
func TestService_Subscribe_batchLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{svc: service.Options{MaxBatchActions: 10}})
	e.dispatch(t, "big", "", acts(95, "")...)
	r := subscribe(t, e.client(protocols[0], true), &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "big"}}})
	r.take(t, 96)
	if r.receives < 10 {
		t.Errorf("95 actions with MaxBatchActions 10 in %d responses, want at least 10", r.receives)
	}
}

// A subscriber that stops reading is cut off with ResourceExhausted once its queue fills;
// publishers and other subscribers do not wait for it.
func TestService_Subscribe_slowConsumer(t *testing.T) {
	t.Parallel()
	forEachH2Client(t, envConfig{mem: memory.Options{QueueSize: 8}}, func(t *testing.T, c clientCase) {
		// The slow client's HTTP/2 window is small, so the server's writes to it block soon.
		slowHTTP := newH2CClient(&http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10})
		t.Cleanup(slowHTTP.CloseIdleConnections)
		slow := subscribe(t, actionsyncv1connect.NewSyncServiceClient(slowHTTP, c.env.srv.URL, c.proto.opts...),
			&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "firehose"}}})
		fast := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "firehose"}}})
		slow.take(t, 1) // ready; then slow reads nothing until the end
		fast.take(t, 1)

		const n = 40
		// Random text: the server compresses responses, and the payloads must not shrink.
		rng := rand.NewChaCha8([32]byte{})
		big := func() string {
			b := make([]byte, 8<<10)
			_, _ = rng.Read(b)
			return hex.EncodeToString(b)
		}
		// The fast subscriber reads each action before the next is published (so that it
		// never lags, whatever the machine's speed); the slow one reads nothing.
		for i := range n {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			_, err := c.client.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "firehose",
				Actions: []*actionsyncv1.Action{act("BIG", fmt.Sprintf("big-%d", i), big())}}))
			cancel()
			if err != nil {
				t.Fatalf("dispatch %d blocked or failed: %v", i, err)
			}
			if ev := fast.nextNonBeat(t); ev.Action.GetSeq() != uint64(i+1) {
				t.Fatalf("fast subscriber: got %+v, want seq %d", ev, i+1)
			}
		}

		evs, err := slow.end(t)
		checkErr(t, err, connect.CodeResourceExhausted, "resume from the last seq")
		if len(evs) >= n {
			t.Fatalf("slow subscriber got all %d actions, want it cut off", len(evs))
		}
		for i, ev := range evs { // what it got has no gap
			if ev.Action.GetSeq() != uint64(i+1) {
				t.Fatalf("slow subscriber event %d: got %+v, want seq %d", i, ev, i+1)
			}
		}
		t.Logf("slow subscriber got %d of %d actions before the cut", len(evs), n)
		c.env.checkServes(t)
	})
}
