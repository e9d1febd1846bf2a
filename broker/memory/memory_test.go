package memory_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

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
