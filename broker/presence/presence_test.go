package presence_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/broker/presence"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

func newTracker(t *testing.T, opts presence.Options) *presence.Tracker {
	t.Helper()
	tr, err := presence.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func member(id, name string) *actionsyncv1.PresenceMember {
	info, _ := structpb.NewStruct(map[string]any{"name": name})
	return &actionsyncv1.PresenceMember{ClientId: id, Info: info}
}

// ev describes an event compactly: "snapshot a,b #2", "join a #1", "leave a #0", "count #5".
func ev(e *actionsyncv1.PresenceEvent) string {
	switch {
	case e.GetSnapshot() != nil:
		ids := ""
		for i, m := range e.GetSnapshot().GetMembers() {
			if i > 0 {
				ids += ","
			}
			ids += m.GetClientId()
		}
		return fmt.Sprintf("%s snapshot %s #%d", e.GetChannel(), ids, e.GetCount())
	case e.GetJoin() != nil:
		return fmt.Sprintf("%s join %s #%d", e.GetChannel(), e.GetJoin().GetClientId(), e.GetCount())
	case e.GetLeave() != nil:
		return fmt.Sprintf("%s leave %s #%d", e.GetChannel(), e.GetLeave().GetClientId(), e.GetCount())
	}
	return fmt.Sprintf("%s count #%d", e.GetChannel(), e.GetCount())
}

// poll returns the watcher's queued events, described.
func poll(w *presence.Watcher) []string {
	var out []string
	for _, e := range w.Poll(nil) {
		out = append(out, ev(e))
	}
	return out
}

// waitFor polls w until it has returned want (in order, possibly over several polls), or
// fails after timeout.
func waitFor(t *testing.T, w *presence.Watcher, timeout time.Duration, want ...string) {
	t.Helper()
	var got []string
	deadline := time.After(timeout)
	for len(got) < len(want) {
		got = append(got, poll(w)...)
		if len(got) >= len(want) {
			break
		}
		select {
		case <-w.Notify():
		case <-deadline:
			t.Fatalf("events: got %q, want %q", got, want)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}

func checkQuiet(t *testing.T, w *presence.Watcher, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if got := poll(w); len(got) > 0 {
		t.Fatalf("events: got %q, want none", got)
	}
}

func TestTracker_JoinLeave(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, presence.Options{Grace: -1})
	w := tr.Watch()
	defer w.Close()
	w.Add("c")
	leaveA := tr.Join("c", member("a", "Alice"))
	leaveB := tr.Join("c", member("b", "Bob"))
	waitFor(t, w, time.Second, "c snapshot  #0", "c join a #1", "c join b #2")

	members, count := tr.Get("c")
	if diff := cmp.Diff([]*actionsyncv1.PresenceMember{member("a", "Alice"), member("b", "Bob")}, members, protocmp.Transform()); diff != "" || count != 2 {
		t.Fatalf("Get: count %d, want 2; members (-want +got):\n%s", count, diff)
	}
	leaveA()
	leaveA() // idempotent
	waitFor(t, w, time.Second, "c leave a #1")
	leaveB()
	waitFor(t, w, time.Second, "c leave b #0")
	if members, count := tr.Get("c"); len(members) != 0 || count != 0 {
		t.Fatalf("Get after leaves: %d members, count %d, want none", len(members), count)
	}
}

func TestTracker_Grace(t *testing.T) {
	t.Parallel()
	const grace = 200 * time.Millisecond
	t.Run("reconnect_within_grace_is_silent", func(t *testing.T) {
		t.Parallel()
		tr := newTracker(t, presence.Options{Grace: grace})
		w := tr.Watch()
		defer w.Close()
		w.Add("c")
		leave := tr.Join("c", member("a", "Alice"))
		waitFor(t, w, time.Second, "c snapshot  #0", "c join a #1")
		leave()
		time.Sleep(grace / 2)
		leave = tr.Join("c", member("a", "Alice"))
		checkQuiet(t, w, 2*grace)
		leave()
		waitFor(t, w, 5*grace, "c leave a #0")
	})
	t.Run("leave_after_grace", func(t *testing.T) {
		t.Parallel()
		tr := newTracker(t, presence.Options{Grace: grace})
		w := tr.Watch()
		defer w.Close()
		w.Add("c")
		leave := tr.Join("c", member("a", "Alice"))
		waitFor(t, w, time.Second, "c snapshot  #0", "c join a #1")
		start := time.Now()
		leave()
		waitFor(t, w, 5*grace, "c leave a #0")
		if d := time.Since(start); d < grace {
			t.Fatalf("left after %v, want at least the grace period %v", d, grace)
		}
	})
	t.Run("streams_of_one_client_are_one_member", func(t *testing.T) {
		t.Parallel()
		tr := newTracker(t, presence.Options{Grace: -1})
		w := tr.Watch()
		defer w.Close()
		w.Add("c")
		leave1 := tr.Join("c", member("a", "Alice"))
		leave2 := tr.Join("c", member("a", "Alice"))
		waitFor(t, w, time.Second, "c snapshot  #0", "c join a #1")
		leave1()
		checkQuiet(t, w, 50*time.Millisecond)
		leave2()
		waitFor(t, w, time.Second, "c leave a #0")
	})
	t.Run("new_info_is_a_join_again", func(t *testing.T) {
		t.Parallel()
		tr := newTracker(t, presence.Options{Grace: grace})
		w := tr.Watch()
		defer w.Close()
		w.Add("c")
		leave := tr.Join("c", member("a", "Alice"))
		leave()
		leave = tr.Join("c", member("a", "Alice B."))
		defer leave()
		got := w.Poll(nil)
		if len(got) != 3 || got[2].GetJoin().GetInfo().GetFields()["name"].GetStringValue() != "Alice B." {
			t.Fatalf("events: got %v, want snapshot, join, join with the new info", got)
		}
	})
}

// TestTracker_MaxMembers checks the listed set at N-1, N and N+1 members: listing stops
// at N, counts go on, and a listed member that leaves is replaced by the earliest
// unlisted one.
func TestTracker_MaxMembers(t *testing.T) {
	t.Parallel()
	const n = 3
	tr := newTracker(t, presence.Options{Grace: -1, MaxMembers: n})
	w := tr.Watch()
	defer w.Close()
	w.Add("c")
	leaves := map[string]func(){}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		leaves[id] = tr.Join("c", member(id, id))
	}
	waitFor(t, w, time.Second, "c snapshot  #0", "c join a #1", "c join b #2", "c join c #3", "c count #4", "c count #5")
	for _, tc := range []struct {
		members int
		want    []string
	}{{n - 1, []string{"a", "b"}}, {n, []string{"a", "b", "c"}}, {n + 1, []string{"a", "b", "c"}}} {
		tr2 := newTracker(t, presence.Options{Grace: -1, MaxMembers: n})
		for _, id := range []string{"a", "b", "c", "d"}[:tc.members] {
			tr2.Join("c", member(id, id))
		}
		members, count := tr2.Get("c")
		var got []string
		for _, m := range members {
			got = append(got, m.GetClientId())
		}
		if diff := cmp.Diff(tc.want, got); diff != "" || count != tc.members {
			t.Errorf("%d members: count %d, want %d; listed (-want +got):\n%s", tc.members, count, tc.members, diff)
		}
	}
	w2 := tr.Watch()
	defer w2.Close()
	w2.Add("c")
	waitFor(t, w2, time.Second, "c snapshot a,b,c #5")
	leaves["e"]()
	waitFor(t, w, time.Second, "c count #4")
	leaves["b"]()
	waitFor(t, w, time.Second, "c leave b #3", "c join d #3")
}

// TestTracker_SlowWatcher: a watcher whose queue overflows gets fresh snapshots instead
// of the events it missed; others get every event.
func TestTracker_SlowWatcher(t *testing.T) {
	t.Parallel()
	const queue = 4
	tr := newTracker(t, presence.Options{Grace: -1, QueueSize: queue})
	slow := tr.Watch()
	defer slow.Close()
	slow.Add("c")
	slow.Add("d")
	fast := tr.Watch()
	defer fast.Close()
	fast.Add("c")
	var got []string
	for i := range queue + 2 {
		tr.Join("c", member(fmt.Sprint("m", i), ""))
		got = append(got, poll(fast)...)
	}
	if len(got) != queue+3 { // the snapshot and every join
		t.Fatalf("fast watcher: got %q, want a snapshot and %d joins", got, queue+2)
	}
	waitFor(t, slow, time.Second, "c snapshot m0,m1,m2,m3,m4,m5 #6", "d snapshot  #0")
	tr.Join("c", member("x", ""))
	waitFor(t, slow, time.Second, "c join x #7")
}
