package stress

import (
	"testing"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestFollower_findsFaults checks the checker: every kind of fault a follower counts is
// counted, and two sequences of the same seqs with different ids hash differently. It
// runs without STRESS=1: it starts no process.
func TestFollower_findsFaults(t *testing.T) {
	t.Parallel()
	acts := func(ch string, ids ...string) *actionsyncv1.SubscribeResponse {
		m := &actionsyncv1.SubscribeResponse{}
		for _, id := range ids {
			var seq uint64
			for _, c := range id {
				seq = seq*10 + uint64(c-'0')
			}
			m.Actions = append(m.Actions, &actionsyncv1.Action{Channel: ch, Seq: seq, Id: id})
		}
		return m
	}
	ready := func(ch string, head uint64) *actionsyncv1.SubscribeResponse {
		return &actionsyncv1.SubscribeResponse{Ready: &actionsyncv1.Ready{Channel: ch, HeadSeq: head, Epoch: "e1"}}
	}
	f := newFollower("f", []string{"a"})
	for _, m := range []*actionsyncv1.SubscribeResponse{
		acts("a", "1", "2"),
		ready("a", 2),
		acts("a", "3", "3"), // duplicate
		acts("a", "2"),      // reorder
		acts("a", "5"),      // gap
		acts("b", "1"),      // a channel not followed
		ready("a", 9),       // a ready at the wrong seq
		{Reset_: &actionsyncv1.Reset{Channel: "a", HeadSeq: 7}},
	} {
		f.apply(m)
	}
	got, _ := f.found()
	want := faults{gaps: 1, duplicates: 1, reorders: 1, resets: 1, strays: 1, badReadies: 1}
	if got != want {
		t.Errorf("faults: got %v, want %v", got, want)
	}

	g, h := newFollower("g", []string{"a"}), newFollower("h", []string{"a"})
	g.apply(acts("a", "1", "2"))
	h.apply(&actionsyncv1.SubscribeResponse{Actions: []*actionsyncv1.Action{{Channel: "a", Seq: 1, Id: "2"}, {Channel: "a", Seq: 2, Id: "1"}}})
	if g.at("a").hash == h.at("a").hash {
		t.Error("the same seqs with their ids swapped hash the same")
	}
	if fs, _ := g.found(); fs.total() != 0 {
		t.Errorf("an in-order sequence: got faults %v, want none", fs)
	}
}
