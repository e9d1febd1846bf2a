package jetstream_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/jetstream"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// BenchmarkNodes_10000Channels: node A publishes one action at a time to 10,000
// channels in turn; node B follows every channel (one live subscription each) and
// receives them through its feed. An iteration is one action, from A's Publish to B's
// subscriber having it. It reports B's heap per cached, followed channel, and the
// actions per second the pair (and the in-process nats-server) sustains on this
// machine.
func BenchmarkNodes_10000Channels(b *testing.B) {
	const channels = 10_000
	srv := startServer(b)
	opts := jetstream.Options{Stream: "MANY", SubjectPrefix: "many"}
	a := node(b, srv, opts)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	follower := node(b, srv, opts)
	sub, err := follower.Subscribe(broker.SubscribeOptions{ClientID: "b"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sub.Close)
	// One subscription may follow 64 channels in the service; the broker has no limit.
	for i := range channels {
		if err := sub.Add(b.Context(), fmt.Sprintf("board-%d", i), broker.Position{Live: true}); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]broker.Event, 0, 1024)
	drain := func(want int) {
		got, deadline := 0, time.Now().Add(10*time.Second)
		for got < want {
			var err error
			buf, err = sub.Poll(buf[:0], cap(buf))
			if err != nil {
				b.Fatal(err)
			}
			for _, ev := range buf {
				if ev.Entry != nil {
					got++
				}
			}
			if len(buf) == 0 {
				select {
				case <-sub.Notify():
				case <-time.After(time.Until(deadline)):
					b.Fatalf("got %d of %d actions", got, want)
				}
			}
		}
	}
	drain(0)
	buf, _ = sub.Poll(buf[:0], cap(buf)) // the ready markers
	for len(buf) > 0 {
		buf, _ = sub.Poll(buf[:0], cap(buf))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if follower.Channels() != channels {
		b.Fatalf("follower caches %d channels, want %d", follower.Channels(), channels)
	}
	heapPerChannel := float64(after.HeapAlloc-before.HeapAlloc) / channels

	b.ResetTimer()
	const window = 64 // actions in flight between drains
	for i := 0; i < b.N; i += window {
		n := min(window, b.N-i)
		for k := range n {
			ch := fmt.Sprintf("board-%d", (i+k)%channels)
			if _, err := a.Publish(b.Context(), ch, []*actionsyncv1.Action{act("a", fmt.Sprintf("a-%d", i+k))}); err != nil {
				b.Fatal(err)
			}
		}
		drain(n)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "actions/s")
	b.ReportMetric(heapPerChannel, "heap-B/channel")
}

// BenchmarkLoad_10000Actions: a node that has not cached a channel of 10,000 actions
// loads it from the stream (over TCP to the nats-server) on first use. An iteration is
// one load, by a fresh node answering a History call.
func BenchmarkLoad_10000Actions(b *testing.B) {
	const (
		total = 10_000
		batch = 100
		ch    = "big"
	)
	srv := startServer(b)
	opts := jetstream.Options{Stream: "LOAD", SubjectPrefix: "load"}
	a := node(b, srv, opts)
	for i := 0; i < total; i += batch {
		actions := make([]*actionsyncv1.Action, batch)
		for k := range actions {
			actions[k] = act("a", fmt.Sprintf("a-%d", i+k))
		}
		if _, err := a.Publish(b.Context(), ch, actions); err != nil {
			b.Fatal(err)
		}
	}
	nc := connect(b, srv)
	b.ResetTimer()
	for b.Loop() {
		fresh, err := jetstream.New(b.Context(), nc, opts)
		if err != nil {
			b.Fatal(err)
		}
		entries, head, err := fresh.History(b.Context(), ch, total-1, 10)
		if err != nil || head != total || len(entries) != 1 {
			b.Fatalf("History after load: %d entries, head %d, %v", len(entries), head, err)
		}
		b.StopTimer()
		_ = fresh.Close()
		b.StartTimer()
	}
}
