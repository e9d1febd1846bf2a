package presence_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/presence"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestTracker_Update: new info replaces a member's (a join for watchers), the same info
// is silent, a member in its grace period can be updated and still leaves when it ends,
// an unlisted member changes silently, and a client id that is no member is refused.
func TestTracker_Update(t *testing.T) {
	t.Parallel()
	const grace = 150 * time.Millisecond
	tr := newTracker(t, presence.Options{Grace: grace, MaxMembers: 1})
	w := tr.Watch()
	defer w.Close()
	w.Add("c")
	leaveA := tr.Join("c", member("a", "Alice"))
	leaveB := tr.Join("c", member("b", "Bob")) // beyond the listed members
	defer leaveB()
	waitFor(t, w, time.Second, "c snapshot  #0", "c join a #1", "c count #2")

	if err := tr.Update("c", member("a", "Alice (editing)")); err != nil {
		t.Fatalf("Update: %v", err)
	}
	waitFor(t, w, time.Second, "c join a #2")
	members, _ := tr.Get("c")
	if diff := cmp.Diff([]*actionsyncv1.PresenceMember{member("a", "Alice (editing)")}, members, protocmp.Transform()); diff != "" {
		t.Fatalf("Get after Update (-want +got):\n%s", diff)
	}
	if err := tr.Update("c", member("a", "Alice (editing)")); err != nil {
		t.Fatalf("Update with the same info: %v", err)
	}
	if err := tr.Update("c", member("b", "Bobby")); err != nil {
		t.Fatalf("Update of an unlisted member: %v", err)
	}
	checkQuiet(t, w, 50*time.Millisecond)

	for _, tc := range []struct{ channel, id string }{{"c", "nobody"}, {"other", "a"}} {
		if err := tr.Update(tc.channel, member(tc.id, "X")); !errors.Is(err, presence.ErrNotMember) {
			t.Fatalf("Update(%q, %q): got %v, want ErrNotMember", tc.channel, tc.id, err)
		}
	}

	// In its grace period a member can still be updated; the update adds no claim, so it
	// leaves when the grace period ends.
	leaveA()
	if err := tr.Update("c", member("a", "Alice (away)")); err != nil {
		t.Fatalf("Update in the grace period: %v", err)
	}
	waitFor(t, w, time.Second, "c join a #2")
	start := time.Now()
	waitFor(t, w, 5*grace, "c leave a #1", "c join b #1")
	if d := time.Since(start); d > grace+100*time.Millisecond {
		t.Fatalf("a left %v after its update, want within the grace period %v", d, grace)
	}
	members, _ = tr.Get("c")
	if len(members) != 1 || members[0].GetInfo().GetFields()["name"].GetStringValue() != "Bobby" {
		t.Fatalf("b listed after a left: got %v, want b with its updated info", members)
	}
	if err := tr.Update("c", member("a", "Alice")); !errors.Is(err, presence.ErrNotMember) {
		t.Fatalf("Update after the leave: got %v, want ErrNotMember", err)
	}

	_ = tr.Close()
	if err := tr.Update("c", member("b", "Bob")); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Update after Close: got %v, want broker.ErrClosed", err)
	}
}
