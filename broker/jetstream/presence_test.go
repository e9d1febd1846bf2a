package jetstream_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/broker/jetstream"
	"github.com/actionsync/actionsync/broker/jetstream/embedded"
	"github.com/actionsync/actionsync/broker/presence"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// presenceNode is an actionsync node's broker and presence tracker on its own NATS
// connection.
type presenceNode struct {
	nc      *nats.Conn
	tracker *presence.Tracker
}

func newPresenceNode(t *testing.T, srv *embedded.Server, opts presence.Options) presenceNode {
	t.Helper()
	nc := connect(t, srv)
	b, err := jetstream.New(t.Context(), nc, jetstream.Options{Stream: "P", SubjectPrefix: "p"})
	if err != nil {
		t.Fatal(err)
	}
	opts.Bus = b.PresenceBus()
	tr, err := presence.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tr.Close()
		_ = b.Close()
	})
	return presenceNode{nc: nc, tracker: tr}
}

// nextEvent waits for w's next presence event and describes it ("join a #1").
func nextEvent(t *testing.T, w *presence.Watcher, pending *[]*actionsyncv1.PresenceEvent) string {
	t.Helper()
	deadline := time.After(waitTimeout)
	for len(*pending) == 0 {
		*pending = w.Poll(*pending)
		if len(*pending) > 0 {
			break
		}
		select {
		case <-w.Notify():
		case <-deadline:
			t.Fatal("no presence event")
		}
	}
	e := (*pending)[0]
	*pending = (*pending)[1:]
	switch {
	case e.GetSnapshot() != nil:
		return fmt.Sprintf("snapshot %d #%d", len(e.GetSnapshot().GetMembers()), e.GetCount())
	case e.GetJoin() != nil:
		return fmt.Sprintf("join %s #%d", e.GetJoin().GetClientId(), e.GetCount())
	case e.GetLeave() != nil:
		return fmt.Sprintf("leave %s #%d", e.GetLeave().GetClientId(), e.GetCount())
	}
	return fmt.Sprintf("count #%d", e.GetCount())
}

func wantEvent(t *testing.T, w *presence.Watcher, pending *[]*actionsyncv1.PresenceEvent, want string) {
	t.Helper()
	if got := nextEvent(t, w, pending); got != want {
		t.Fatalf("presence event: got %q, want %q", got, want)
	}
}

// TestPresence_AcrossNodes: nodes see each other's members; a member that moves to
// another node within the grace period neither leaves nor joins; a node that closes
// has its members leave after its grace period; and a node whose NATS connection drops
// abruptly has its members leave on the others within 3.25 × Refresh.
func TestPresence_AcrossNodes(t *testing.T) {
	t.Parallel()
	const refresh, grace = 400 * time.Millisecond, 100 * time.Millisecond
	srv := startServer(t)
	opts := presence.Options{Refresh: refresh, Grace: grace}
	a := newPresenceNode(t, srv, opts)
	b := newPresenceNode(t, srv, opts)

	w := b.tracker.Watch()
	defer w.Close()
	var pending []*actionsyncv1.PresenceEvent
	w.Add("board")
	wantEvent(t, w, &pending, "snapshot 0 #0")
	leaveA := a.tracker.Join("board", &actionsyncv1.PresenceMember{ClientId: "alice"})
	defer leaveA()
	wantEvent(t, w, &pending, "join alice #1")
	leaveB := b.tracker.Join("board", &actionsyncv1.PresenceMember{ClientId: "bob"})
	wantEvent(t, w, &pending, "join bob #2")

	// A node that starts later learns the members at once (hello, then refreshes).
	c := newPresenceNode(t, srv, opts)
	deadline := time.Now().Add(refresh / 2)
	for {
		if _, n := c.tracker.Get("board"); n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a new node does not know the members within %v", refresh/2)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// bob moves from b to c within the grace period: no leave, no join anywhere.
	leaveB()
	leaveC := c.tracker.Join("board", &actionsyncv1.PresenceMember{ClientId: "bob"})
	defer leaveC()
	time.Sleep(2 * refresh)
	if got := w.Poll(pending); len(got) > 0 {
		t.Fatalf("after bob moved nodes: got %d events, want none", len(got))
	}

	// c closes: its members leave elsewhere after the grace period, not 3 × Refresh.
	start := time.Now()
	_ = c.tracker.Close()
	wantEvent(t, w, &pending, "leave bob #1")
	if d := time.Since(start); d > 2*refresh {
		t.Fatalf("bob left %v after its node closed, want about the grace period %v", d, grace)
	}

	// a's connection drops without a word: alice leaves within 3.25 × Refresh.
	start = time.Now()
	a.nc.Close()
	wantEvent(t, w, &pending, "leave alice #0")
	bound := time.Duration(3.25*float64(refresh)) + 200*time.Millisecond // the sweep's own delay, scheduling
	if d := time.Since(start); d > bound || d < 2*refresh {
		t.Fatalf("alice left %v after her node went silent, want between 2 × and 3.25 × Refresh (%v, %v)", d, 2*refresh, bound)
	}
}

// TestPresence_UpdateAcrossNodes: an update on the node holding the member's stream, and
// one on a node that only knows the member from another, both reach every node; a node
// that starts later learns the new info; and an update adds no claim: the member leaves
// everywhere after its grace period, not after 3 × Refresh.
func TestPresence_UpdateAcrossNodes(t *testing.T) {
	t.Parallel()
	const refresh, grace = 400 * time.Millisecond, 100 * time.Millisecond
	srv := startServer(t)
	opts := presence.Options{Refresh: refresh, Grace: grace}
	a := newPresenceNode(t, srv, opts)
	b := newPresenceNode(t, srv, opts)
	name := func(tr *presence.Tracker) string {
		members, _ := tr.Get("board")
		if len(members) == 0 {
			return ""
		}
		return members[0].GetInfo().GetFields()["name"].GetStringValue()
	}
	alice := func(n string) *actionsyncv1.PresenceMember {
		info, _ := structpb.NewStruct(map[string]any{"name": n})
		return &actionsyncv1.PresenceMember{ClientId: "alice", Info: info}
	}

	wa, wb := a.tracker.Watch(), b.tracker.Watch()
	defer wa.Close()
	defer wb.Close()
	var pa, pb []*actionsyncv1.PresenceEvent
	wa.Add("board")
	wb.Add("board")
	wantEvent(t, wa, &pa, "snapshot 0 #0")
	wantEvent(t, wb, &pb, "snapshot 0 #0")
	leave := a.tracker.Join("board", alice("Alice"))
	wantEvent(t, wa, &pa, "join alice #1")
	wantEvent(t, wb, &pb, "join alice #1")

	// On the node with her stream.
	if err := a.tracker.Update("board", alice("Alice 1")); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, wa, &pa, "join alice #1")
	wantEvent(t, wb, &pb, "join alice #1")
	if got := name(b.tracker); got != "Alice 1" {
		t.Fatalf("b after a's update: name %q, want %q", got, "Alice 1")
	}
	// On a node that knows her from a only.
	if err := b.tracker.Update("board", alice("Alice 2")); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, wb, &pb, "join alice #1")
	wantEvent(t, wa, &pa, "join alice #1")
	if got := name(a.tracker); got != "Alice 2" {
		t.Fatalf("a after b's update: name %q, want %q", got, "Alice 2")
	}
	// A later node learns the info a now announces.
	c := newPresenceNode(t, srv, opts)
	deadline := time.Now().Add(refresh / 2)
	for name(c.tracker) != "Alice 2" {
		if time.Now().After(deadline) {
			t.Fatalf("a new node knows %q within %v, want %q", name(c.tracker), refresh/2, "Alice 2")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// b's update added no claim: she leaves a (and b) when her grace period on a ends,
	// not 3 × Refresh later.
	start := time.Now()
	leave()
	wantEvent(t, wa, &pa, "leave alice #0")
	if d := time.Since(start); d > refresh {
		t.Fatalf("alice left a %v after her stream ended, want about the grace period %v", d, grace)
	}
	wantEvent(t, wb, &pb, "leave alice #0")
	if err := b.tracker.Update("board", alice("Alice 3")); !errors.Is(err, presence.ErrNotMember) {
		t.Fatalf("update after the leave: got %v, want ErrNotMember", err)
	}
}
