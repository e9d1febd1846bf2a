package memory_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/brokertest"
	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newBroker maps the suite's Config onto Options.
func newBroker(_ *testing.T, cfg brokertest.Config) broker.Broker {
	return memory.New(memory.Options{
		HistorySize: cfg.HistorySize,
		QueueSize:   cfg.QueueSize,
		MaxAge:      cfg.MaxAge,
		Now:         cfg.Now,

		MaxSnapshotBytes: cfg.MaxSnapshotBytes,
	})
}

func TestBroker_Conformance(t *testing.T) {
	brokertest.Run(t, newBroker)
}

// TestBroker_MaxChannels checks Options.MaxChannels at N-1, N and N+1 channels, for the
// two ways a channel is created: Publish and Subscription.Add.
func TestBroker_MaxChannels(t *testing.T) {
	t.Parallel()
	const limit = 3
	b := memory.New(memory.Options{MaxChannels: limit})
	t.Cleanup(func() { _ = b.Close() })
	for i := range limit - 1 {
		if _, err := b.Publish(t.Context(), fmt.Sprintf("ch-%d", i), []*actionsyncv1.Action{newAction(fmt.Sprintf("a-%d", i))}); err != nil {
			t.Fatalf("channel %d of %d: %v", i+1, limit, err)
		}
	}
	sub, err := b.Subscribe(broker.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	if err := sub.Add(t.Context(), "ch-last", broker.Position{}); err != nil {
		t.Fatalf("channel %d of %d (by Add): %v", limit, limit, err)
	}
	if _, err := b.Publish(t.Context(), "ch-over", []*actionsyncv1.Action{newAction("over")}); !errors.Is(err, broker.ErrTooManyChannels) {
		t.Errorf("channel %d of %d by Publish: got %v, want %v", limit+1, limit, err, broker.ErrTooManyChannels)
	}
	if err := sub.Add(t.Context(), "ch-over", broker.Position{}); !errors.Is(err, broker.ErrTooManyChannels) {
		t.Errorf("channel %d of %d by Add: got %v, want %v", limit+1, limit, err, broker.ErrTooManyChannels)
	}
	// Existing channels keep working, and reading an unknown channel creates nothing.
	if _, err := b.Publish(t.Context(), "ch-0", []*actionsyncv1.Action{newAction("again")}); err != nil {
		t.Errorf("existing channel: %v", err)
	}
	if _, head, err := b.History(t.Context(), "ch-unknown", 0, 10); err != nil || head != 0 {
		t.Errorf("History of an unknown channel: head %d, %v", head, err)
	}
}

// TestBroker_NoMaxAge checks that a negative MaxAge keeps actions however old.
func TestBroker_NoMaxAge(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	b := memory.New(memory.Options{MaxAge: -1, Now: func() time.Time { return now }})
	t.Cleanup(func() { _ = b.Close() })
	if _, err := b.Publish(t.Context(), "ch", []*actionsyncv1.Action{newAction("old")}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(100 * 365 * 24 * time.Hour)
	entries, head, err := b.History(t.Context(), "ch", 0, 10)
	if err != nil || len(entries) != 1 || head != 1 {
		t.Errorf("History after a century: got %d entries, head %d, %v; want 1, 1, nil", len(entries), head, err)
	}
}

// newAction returns a minimal valid action with id.
func newAction(id string) *actionsyncv1.Action {
	return &actionsyncv1.Action{Type: "TEST", Id: id, ClientId: "client"}
}

// TestBroker_NewEpochAfterRestart: a new broker (a restarted server) gives a channel a
// new epoch, so a client resuming with the old epoch gets a reset even where the new
// history has reached its old after_seq.
func TestBroker_NewEpochAfterRestart(t *testing.T) {
	t.Parallel()
	epochOf := func(b *memory.Broker) string {
		t.Helper()
		sub, err := b.Subscribe(broker.SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if err := sub.Add(t.Context(), "ch", broker.Position{Live: true}); err != nil {
			t.Fatal(err)
		}
		evs, err := sub.Poll(nil, 10)
		if err != nil || len(evs) != 1 || evs[0].Control == nil || evs[0].Control.Epoch == "" {
			t.Fatalf("Poll: got %+v, %v; want one ready with an epoch", evs, err)
		}
		return evs[0].Control.Epoch
	}
	before, after := memory.New(memory.Options{}), memory.New(memory.Options{})
	t.Cleanup(func() { _ = before.Close(); _ = after.Close() })
	if a, b := epochOf(before), epochOf(after); a == b {
		t.Fatalf("two broker incarnations gave channel the same epoch %q", a)
	}
}

// TestBroker_EvictsIdleChannels: the channel limit counts channels in use. A channel
// that only had subscribers is evicted to make room; one with history in its window or
// a snapshot is not, until its history ages out; a client resuming an evicted channel
// gets a reset (new epoch).
func TestBroker_EvictsIdleChannels(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	b := memory.New(memory.Options{MaxChannels: 2, MaxAge: time.Minute, Now: clock})
	t.Cleanup(func() { _ = b.Close() })
	publish := func(ch, id string) (broker.Ack, error) {
		acks, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{{Type: "T", Id: id, ClientId: "c"}})
		if err != nil {
			return broker.Ack{}, err
		}
		return acks[0], nil
	}
	follow := func(ch string) string { // subscribe, read the epoch, unsubscribe
		sub, err := b.Subscribe(broker.SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if err := sub.Add(t.Context(), ch, broker.Position{Live: true}); err != nil {
			t.Fatal(err)
		}
		evs, _ := sub.Poll(nil, 10)
		return evs[0].Control.Epoch
	}
	follow("only-followed-1")
	follow("only-followed-2")
	if _, err := publish("x", "x1"); err != nil {
		t.Fatalf("a third channel after two only followed: %v", err)
	}
	if _, err := publish("y", "y1"); err != nil {
		t.Fatalf("a fourth channel: %v", err)
	}
	if _, err := publish("z", "z1"); !errors.Is(err, broker.ErrTooManyChannels) {
		t.Fatalf("a fifth channel with x and y holding history: got %v, want ErrTooManyChannels", err)
	}
	epoch := follow("x")
	advance(2 * time.Minute) // x and y's history ages out
	if _, err := publish("z", "z1"); err != nil {
		t.Fatalf("a channel after the others' history aged out: %v", err)
	}
	if n := b.Channels(); n > 2 {
		t.Errorf("channels held: %d, limit 2", n)
	}
	sub, _ := b.Subscribe(broker.SubscribeOptions{})
	defer sub.Close()
	if err := sub.Add(t.Context(), "x", broker.Position{AfterSeq: 1, Epoch: epoch}); err != nil {
		t.Fatal(err)
	}
	if evs, _ := sub.Poll(nil, 10); len(evs) == 0 || evs[0].Control == nil || evs[0].Control.Kind != broker.ControlReset {
		t.Errorf("resuming an evicted channel: got %+v, want a reset", evs)
	}
}

// TestBroker_EvictionRacesPublish: channels evicted while publishers and subscribers
// come and go lose no acknowledged action.
func TestBroker_EvictionRacesPublish(t *testing.T) {
	t.Parallel()
	b := memory.New(memory.Options{})
	t.Cleanup(func() { _ = b.Close() })
	const workers, rounds = 4, 2000
	stop := make(chan struct{})
	evicted := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				evicted <- n
				return
			default:
				n += b.EvictIdle()
			}
		}
	}()
	var wg sync.WaitGroup
	acks := make([]int, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				// Following a channel creates it empty: evictable, racing the publish.
				ch := fmt.Sprintf("w%d-r%d", w, r)
				if sub, err := b.Subscribe(broker.SubscribeOptions{}); err == nil {
					_ = sub.Add(t.Context(), ch, broker.Position{})
					sub.Close()
				}
				if r%3 == 0 {
					if _, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{{Type: "T", Id: fmt.Sprint(r), ClientId: "c"}}); err != nil {
						t.Error(err)
						return
					}
					acks[w]++
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	t.Logf("%d channels evicted during the run", <-evicted)
	for w := range workers {
		total := 0
		for r := range rounds {
			entries, _, err := b.History(t.Context(), fmt.Sprintf("w%d-r%d", w, r), 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			total += len(entries)
		}
		if total != acks[w] {
			t.Errorf("worker %d: %d actions in history, %d acknowledged", w, total, acks[w])
		}
	}
}

// TestBroker_HistoryKeepsEncodedBytesOnly: history holds an action's encoding, not its
// decoded tree. 50 actions whose payloads are 16,000 empty objects (64 KB encoded, some
// 2.5 MB decoded) grow the heap by a few times their encoded size, not 40 times.
func TestBroker_HistoryKeepsEncodedBytesOnly(t *testing.T) {
	b := memory.New(memory.Options{})
	t.Cleanup(func() { _ = b.Close() })
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	const n = 50
	before := heapAlloc()
	encoded := 0
	for i := range n {
		values := make([]*structpb.Value, 16_000)
		for j := range values {
			values[j] = structpb.NewStructValue(&structpb.Struct{})
		}
		a := &actionsyncv1.Action{Type: "T", Id: fmt.Sprint(i), ClientId: "c", Payload: structpb.NewListValue(&structpb.ListValue{Values: values})}
		encoded += proto.Size(a)
		if _, err := b.Publish(t.Context(), "heavy", []*actionsyncv1.Action{a}); err != nil {
			t.Fatal(err)
		}
	}
	grown := int64(heap()) - int64(before)
	t.Logf("%d actions, %d bytes encoded: heap grew %d bytes (%.1fx)", n, encoded, grown, float64(grown)/float64(encoded))
	if grown > int64(3*encoded) {
		t.Errorf("heap grew %d bytes for %d bytes of encoded actions: history keeps more than their encoding", grown, encoded)
	}
	if entries, _, err := b.History(t.Context(), "heavy", 0, n); err != nil || len(entries) != n {
		t.Fatalf("History: %d entries, %v", len(entries), err)
	}
}

// TestBroker_HistoryByteBounds: one channel's history keeps at most
// MaxChannelHistoryBytes; all channels together at most MaxHistoryBytes, the oldest
// history of any channel going first; the heap stays bounded however much is published.
func TestBroker_HistoryByteBounds(t *testing.T) {
	big := func(id string, n int) *actionsyncv1.Action {
		return &actionsyncv1.Action{Type: "T", Id: id, ClientId: "c", Payload: structpb.NewStringValue(strings.Repeat("x", n))}
	}
	t.Run("per_channel", func(t *testing.T) {
		b := memory.New(memory.Options{MaxChannelHistoryBytes: 5_000})
		t.Cleanup(func() { _ = b.Close() })
		for i := range 10 {
			if _, err := b.Publish(t.Context(), "c", []*actionsyncv1.Action{big(fmt.Sprint(i), 1000)}); err != nil {
				t.Fatal(err)
			}
		}
		entries, head, err := b.History(t.Context(), "c", 6, 100)
		if err != nil || head != 10 || len(entries) != 4 {
			t.Fatalf("History after 6: %d entries, head %d, %v; want 7..10", len(entries), head, err)
		}
		if _, _, err := b.History(t.Context(), "c", 5, 100); !errors.Is(err, broker.ErrTrimmed) {
			t.Errorf("History after 5: got %v, want ErrTrimmed (about 1 KB each, 5 KB per channel)", err)
		}
	})
	t.Run("all_channels_oldest_first", func(t *testing.T) {
		b := memory.New(memory.Options{MaxHistoryBytes: 20_000})
		t.Cleanup(func() { _ = b.Close() })
		// a1 b1 c1 d1 a2 b2 c2 d2 ...: about 1 KB each, 40 in all, 20 KB kept.
		for i := range 10 {
			for _, ch := range []string{"a", "b", "c", "d"} {
				if _, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{big(fmt.Sprint(i), 1000)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		kept := 0
		for _, ch := range []string{"a", "b", "c", "d"} {
			// The oldest position history still serves: everything after it is kept.
			for after := uint64(0); after <= 10; after++ {
				es, _, err := b.History(t.Context(), ch, after, 100)
				if err != nil {
					continue
				}
				kept += len(es)
				if after < 4 {
					t.Errorf("%s: history reaches back to %d: the oldest of every channel should have gone first", ch, after+1)
				}
				break
			}
		}
		if kept < 15 || kept > 20 {
			t.Errorf("%d actions of about 1 KB kept over 4 channels, want 15..20 for a 20 KB budget", kept)
		}
	})
	t.Run("heap_bound", func(t *testing.T) {
		const budget = 16 << 20
		b := memory.New(memory.Options{MaxHistoryBytes: budget})
		t.Cleanup(func() { _ = b.Close() })
		before := heapAlloc()
		for i := range 2_000 { // 2,000 x 60 KB = 120 MB published over 50 channels
			if _, err := b.Publish(t.Context(), fmt.Sprint("ch-", i%50), []*actionsyncv1.Action{big(fmt.Sprint(i), 60_000)}); err != nil {
				t.Fatal(err)
			}
		}
		grown := heapAlloc() - before
		t.Logf("120 MB published with a %d MB budget: heap grew %.1f MB", budget>>20, float64(grown)/(1<<20))
		if grown > budget*5/4 {
			t.Errorf("heap grew %d bytes with a budget of %d", grown, budget)
		}
	})
	t.Run("dropped_entries_freed", func(t *testing.T) {
		// A full history that keeps turning over (a count limit, far below the byte
		// budget): the actions it drops must not stay in memory by the thousands. The
		// budget's queue held them until they outnumbered the live ones (the stress
		// suite's churn: +22 MiB over 60,000 live actions).
		const live = 8000
		b := memory.New(memory.Options{HistorySize: live})
		t.Cleanup(func() { _ = b.Close() })
		for i := range live {
			if _, err := b.Publish(t.Context(), "c", []*actionsyncv1.Action{big(fmt.Sprint("fill-", i), 1000)}); err != nil {
				t.Fatal(err)
			}
		}
		full := heapAlloc()
		for i := range 15_000 {
			if _, err := b.Publish(t.Context(), "c", []*actionsyncv1.Action{big(fmt.Sprint("more-", i), 1000)}); err != nil {
				t.Fatal(err)
			}
		}
		grown := heapAlloc() - full
		t.Logf("history of %d actions of ~1 KB turned over 15,000 more: heap grew %.1f MB", live, float64(grown)/(1<<20))
		if grown > 5<<20 {
			t.Errorf("heap grew %.1f MB past a full history of %d actions of ~1 KB: dropped actions kept", float64(grown)/(1<<20), live)
		}
	})
}

// TestBroker_FanoutWidth: a subscription tells how many subscribers share its channels'
// deliveries, as they join and leave.
func TestBroker_FanoutWidth(t *testing.T) {
	t.Parallel()
	b := memory.New(memory.Options{})
	t.Cleanup(func() { _ = b.Close() })
	follow := func(channels ...string) broker.Subscription {
		sub, err := b.Subscribe(broker.SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range channels {
			if err := sub.Add(t.Context(), ch, broker.Position{Live: true}); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(sub.Close)
		return sub
	}
	width := func(s broker.Subscription) int { return s.(broker.FanoutWidther).FanoutWidth() }
	a1, a2 := follow("a"), follow("a")
	ab := follow("a", "b")
	if got := width(a1); got != 3 {
		t.Errorf("a follower among 3: width %d, want 3", got)
	}
	if got := width(ab); got != 4 {
		t.Errorf("a and b follower: width %d, want 3 + 1", got)
	}
	a2.Close()
	if got := width(a1); got != 2 {
		t.Errorf("after one left: width %d, want 2", got)
	}
}

// heapAlloc returns the bytes the heap holds after a garbage collection.
func heapAlloc() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
