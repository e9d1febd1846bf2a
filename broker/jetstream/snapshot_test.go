package jetstream_test

import (
	"errors"
	"fmt"
	"testing"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/jetstream"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// publishN publishes n actions to channel on b.
func publishN(t *testing.T, b broker.Broker, channel string, n int) {
	t.Helper()
	for i := range n {
		if _, err := b.Publish(t.Context(), channel, []*actionsyncv1.Action{act("c", fmt.Sprintf("%s-%d", channel, i))}); err != nil {
			t.Fatal(err)
		}
	}
}

// firstControl waits for c's first control event and returns it.
func firstControl(t *testing.T, c *collector) broker.Control {
	t.Helper()
	waitFor(t, "a control event", func() bool { return len(c.controls()) > 0 })
	return c.controls()[0]
}

// TestBroker_SnapshotAcrossNodes: a snapshot put on one node is what a subscriber of
// another node starts from, a newer one put there wins on both, and a delete on the
// first is seen by the next subscriber of the second.
func TestBroker_SnapshotAcrossNodes(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "SNAPNODES", SubjectPrefix: "snapnodes"}
	a, b := node(t, srv, opts), node(t, srv, opts)
	const ch = "board:1"
	publishN(t, a, ch, 10)
	// b caches the channel before the snapshot exists.
	before := collect(t, b, "s", ch, broker.Position{Snapshots: true})
	waitFor(t, "the replay on b", func() bool { return len(before.seqs()) == 10 })

	put := func(on *jetstream.Broker, seq uint64) error {
		return on.PutSnapshot(t.Context(), &actionsyncv1.Snapshot{Channel: ch, Seq: seq, Epoch: on.Epoch(), State: fmt.Appendf(nil, "%d", seq)})
	}
	if err := put(a, 6); err != nil {
		t.Fatal(err)
	}
	sub := collect(t, b, "s", ch, broker.Position{Snapshots: true})
	if c := firstControl(t, sub); c.Kind != broker.ControlSnapshot || c.Seq != 6 || string(c.Snapshot.GetState()) != "6" {
		t.Fatalf("subscriber on b after a put on a: got %+v, want the snapshot at 6", c)
	}
	waitFor(t, "the replay after the snapshot", func() bool { return len(sub.seqs()) == 4 })

	if err := put(b, 8); err != nil {
		t.Fatal(err)
	}
	if err := put(a, 7); !errors.Is(err, broker.ErrStaleSnapshot) {
		t.Errorf("put at 7 on a after 8 on b: got %v, want ErrStaleSnapshot", err)
	}
	if got, err := a.Snapshot(t.Context(), ch); err != nil || got.GetSeq() != 8 {
		t.Errorf("Snapshot on a: got seq %d, %v; want 8", got.GetSeq(), err)
	}
	// A put at a seq b's feed may not have applied yet: the head is read from the stream.
	if _, err := a.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", "eleventh")}); err != nil {
		t.Fatal(err)
	}
	if err := put(b, 11); err != nil {
		t.Errorf("put at 11 on b right after a published seq 11: %v", err)
	}

	if seq, err := a.DeleteSnapshot(t.Context(), ch, 0); err != nil || seq != 11 {
		t.Fatalf("DeleteSnapshot on a: got %d, %v; want 11", seq, err)
	}
	after := collect(t, b, "s", ch, broker.Position{Snapshots: true})
	waitFor(t, "the full replay on b after the delete", func() bool { return len(after.seqs()) == 11 })
	if c := after.controls(); len(c) > 0 && c[0].Kind == broker.ControlSnapshot {
		t.Errorf("subscriber on b after a delete on a: got a snapshot at %d", c[0].Seq)
	}
}

// TestBroker_SnapshotOfLostStream: a snapshot written for a stream that was then lost
// and created again belongs to the old epoch: the new channel has none, and a put in
// the old epoch is refused.
func TestBroker_SnapshotOfLostStream(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "SNAPLOST", SubjectPrefix: "snaplost"}
	a := node(t, srv, opts)
	const ch = "board:2"
	publishN(t, a, ch, 5)
	old := a.Epoch()
	if err := a.PutSnapshot(t.Context(), &actionsyncv1.Snapshot{Channel: ch, Seq: 5, Epoch: old}); err != nil {
		t.Fatal(err)
	}
	js, _ := natsjs.New(connect(t, srv))
	if err := js.DeleteStream(t.Context(), "SNAPLOST"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new epoch", func() bool { return a.Epoch() != old })
	var err error
	waitFor(t, "publishing to work again", func() bool {
		_, err = a.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", "new")})
		return err == nil
	})
	if _, err := a.Snapshot(t.Context(), ch); !errors.Is(err, broker.ErrNoSnapshot) {
		t.Errorf("Snapshot in the new epoch: got %v, want ErrNoSnapshot", err)
	}
	if err := a.PutSnapshot(t.Context(), &actionsyncv1.Snapshot{Channel: ch, Seq: 1, Epoch: old}); !errors.Is(err, broker.ErrEpochMismatch) {
		t.Errorf("put in the old epoch: got %v, want ErrEpochMismatch", err)
	}
	if err := a.PutSnapshot(t.Context(), &actionsyncv1.Snapshot{Channel: ch, Seq: 1, Epoch: a.Epoch()}); err != nil {
		t.Errorf("put in the new epoch: %v", err)
	}
	sub := collect(t, a, "s", ch, broker.Position{Snapshots: true})
	if c := firstControl(t, sub); c.Kind != broker.ControlSnapshot || c.Seq != 1 {
		t.Errorf("subscriber in the new epoch: got %+v, want the new snapshot at 1", c)
	}
}
