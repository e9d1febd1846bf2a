package brokertest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// testCloseRefusesWork checks that a closed broker refuses Publish and Subscribe with
// ErrClosed and that Close is idempotent.
func testCloseRefusesWork(t *testing.T, s suite) {
	b := s.open(t, Config{})
	publishN(t, b, "closed", "writer", "w", 1)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, ch := range []string{"closed", "closed-new"} {
		if acks, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{action("writer", "after-close")}); !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Publish(%q) after Close: got %+v, %v, want %v", ch, acks, err, broker.ErrClosed)
		}
	}
	if sub, err := b.Subscribe(broker.SubscribeOptions{}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close: got %v, %v, want %v", sub, err, broker.ErrClosed)
		if sub != nil {
			sub.Close()
		}
	}
}

// testCloseEndsSubscriptions checks that Close ends every open subscription: Notify
// fires, Poll hands over the events already queued, then ErrClosed, and Add fails.
func testCloseEndsSubscriptions(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "closing"
	live := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 2)
	expectControl(t, live, broker.ControlReady, ch, 0)
	seqs := publishN(t, b, ch, "writer", "w", 3) // queued, not polled
	replaying := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 1)
	expectEntry(t, replaying, ch, seqs[0]) // mid-replay at Close
	idle := subscribe(t, b, broker.SubscribeOptions{})
	for _, sub := range []broker.Subscription{live.sub, replaying.sub, idle} {
		drainNotify(sub)
	}

	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, sub := range map[string]broker.Subscription{"live": live.sub, "replaying": replaying.sub, "idle": idle} {
		waitNotify(t, sub, "Close of a subscription "+name)
	}
	expectEntries(t, live, ch, seqs...)
	expectEnd(t, live, broker.ErrClosed)
	// The replaying subscription may or may not get more of its replay; what it gets is
	// in order, and then it ends.
	want := seqs[1:]
	for {
		ev, err := replaying.next()
		if err != nil {
			if !errors.Is(err, broker.ErrClosed) {
				t.Errorf("replaying subscription: got %v, want %v", err, broker.ErrClosed)
			}
			break
		}
		if ev.Entry == nil && ev.Control.Kind == broker.ControlReady {
			continue
		}
		if ev.Entry == nil || len(want) == 0 || ev.Entry.Seq() != want[0] {
			t.Fatalf("replaying subscription after Close: got %s, want the entries after %d in order", describe(ev), seqs[0])
		}
		want = want[1:]
	}
	expectEnd(t, newStream(idle, 8), broker.ErrClosed)
	if err := idle.Add(t.Context(), ch, broker.Position{}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Add after Close: got %v, want %v", err, broker.ErrClosed)
	}
	idle.Close() // still idempotent after the broker closed
}

// testCloseDuringPublish checks promises 2 and 9 at shutdown: with publishers racing
// Close, every Publish either succeeds or fails with ErrClosed, and every acknowledged
// action reaches a live subscriber before the subscription ends with ErrClosed.
func testCloseDuringPublish(t *testing.T, s suite) {
	const (
		publishers = 4
		ch         = "close-race"
	)
	b := s.open(t, Config{QueueSize: 1 << 14, HistorySize: 1 << 14})
	var wg, readWG sync.WaitGroup
	waitOnExit(t, b, &wg, &readWG)
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 32)
	expectControl(t, st, broker.ControlReady, ch, 0)

	var (
		mu     sync.Mutex
		acked  []uint64
		total  atomic.Int64
		failed atomic.Bool
	)
	for p := range publishers {
		wg.Go(func() {
			client := fmt.Sprintf("pub-%d", p)
			for i := 0; ; i++ {
				if i > 1<<13 {
					t.Errorf("%s: still publishing after %d actions, Close never took effect", client, i)
					return
				}
				acks, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{action(client, fmt.Sprintf("%s-%d", client, i))})
				if err != nil {
					if !errors.Is(err, broker.ErrClosed) {
						t.Errorf("%s: Publish: got %v, want success or %v", client, err, broker.ErrClosed)
						failed.Store(true)
					}
					return
				}
				mu.Lock()
				acked = append(acked, acks[0].Seq)
				mu.Unlock()
				total.Add(1)
			}
		})
	}
	var got []uint64
	var readErr error
	readWG.Go(func() {
		for {
			ev, err := st.next()
			if err != nil {
				readErr = err
				return
			}
			if ev.Entry != nil {
				got = append(got, ev.Entry.Seq())
			}
		}
	})
	deadline := time.Now().Add(waitTimeout)
	for total.Load() < 200 && time.Now().Before(deadline) && !failed.Load() {
		time.Sleep(100 * time.Microsecond)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	readWG.Wait()
	if !errors.Is(readErr, broker.ErrClosed) {
		t.Fatalf("subscription ended with %v, want %v", readErr, broker.ErrClosed)
	}
	slices.Sort(acked)
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Errorf("subscriber got seqs out of order or twice")
	}
	if len(acked) < 200 {
		t.Errorf("only %d actions acked before Close", len(acked))
	}
	if !slices.Equal(got, acked) {
		missing := 0
		for _, seq := range acked {
			if _, ok := slices.BinarySearch(got, seq); !ok {
				missing++
			}
		}
		t.Errorf("subscriber got %d entries, %d actions acked; %d acked actions were never delivered", len(got), len(acked), missing)
	}
}

// testSubscriptionClose checks Subscription.Close: idempotent, Poll then fails with an
// error wrapping ErrClosed, Add fails, and publishers and other subscribers go on.
func testSubscriptionClose(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "sub-close"
	closing := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 8)
	other := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 8)
	for _, st := range []*stream{closing, other} {
		expectControl(t, st, broker.ControlReady, ch, 0)
	}
	publishN(t, b, ch, "writer", "queued", 2) // queued for closing, never polled
	closing.sub.Close()
	closing.sub.Close()
	for range 2 {
		if events, err := closing.sub.Poll(nil, 8); !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Poll after Close: got %d events, %v, want %v", len(events), err, broker.ErrClosed)
		}
	}
	if err := closing.sub.Add(t.Context(), "sub-close-other", broker.Position{}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Add after Close: got %v, want %v", err, broker.ErrClosed)
	}
	// Publishing to the channel goes on and does not reach the closed subscription.
	seqs := publishWithin(t, time.Second, b, ch, actions("writer", "after-0", "after-1")...)
	expectEntries(t, other, ch, 1, 2, seqs[0].Seq, seqs[1].Seq)
	if events, err := closing.sub.Poll(nil, 8); len(events) != 0 || !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Poll after Close and publish: got %d events, %v, want none and %v", len(events), err, broker.ErrClosed)
	}
	// Closing a subscription in every state: replaying, and cut off.
	replaying := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 1)
	expectEntry(t, replaying, ch, 1)
	replaying.sub.Close()
	if _, err := replaying.next(); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("replaying subscription after Close: got %v, want %v", err, broker.ErrClosed)
	}
}
