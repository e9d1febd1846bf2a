package brokertest

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// testDuplicateSameBody checks promise 3: re-publishing an id with the same body acks
// the original seq as a duplicate, consumes no seq, delivers nothing and stores nothing.
// The body is type, payload and meta; the client id, and the channel, seq and time the
// sender may have filled in, are not part of it.
func testDuplicateSameBody(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "dup"
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 16)
	expectControl(t, st, broker.ControlReady, ch, 0)

	original := func() *actionsyncv1.Action {
		a := action("c1", "x")
		a.Meta = mustStruct(t, map[string]any{"k": "v"})
		return a
	}
	first := publish(t, b, ch, original())[0]
	checkAck(t, first, "x", first.Seq, false)
	expectEntry(t, st, ch, first.Seq)

	resend := []func() *actionsyncv1.Action{
		original,
		func() *actionsyncv1.Action { // a retry from another connection of the same user
			a := original()
			a.ClientId = "c1-other-connection"
			return a
		},
		func() *actionsyncv1.Action { // fields the broker sets are not part of the body
			a := original()
			a.Channel, a.Seq = "elsewhere", 77
			return a
		},
	}
	for i, a := range resend {
		checkAck(t, publish(t, b, ch, a())[0], "x", first.Seq, true)
		// Several duplicates in one batch.
		for j, ack := range publish(t, b, ch, a(), original()) {
			if ack != (broker.Ack{ID: "x", Seq: first.Seq, Duplicate: true}) {
				t.Errorf("resend %d, batch action %d: got %+v, want duplicate of seq %d", i, j, ack, first.Seq)
			}
		}
	}
	// Nothing was delivered in between: the next entry is the next new action, and it
	// got the next seq.
	next := publish(t, b, ch, action("c1", "y"))[0]
	checkAck(t, next, "y", first.Seq+1, false)
	expectEntry(t, st, ch, next.Seq)

	entries, head := history(t, b, ch, 0)
	if len(entries) != 2 || head != next.Seq {
		t.Errorf("history: got seqs %v and head %d, want [%d %d] and head %d", seqsOf(entries), head, first.Seq, next.Seq, next.Seq)
	}
	if len(entries) > 0 && entries[0].ClientID() != "c1" {
		t.Errorf("history: the duplicate replaced the original: client id %q", entries[0].ClientID())
	}
	// A duplicate is recognised in a batch with new actions, which still get seqs.
	acks := publish(t, b, ch, action("c1", "z"), original(), action("c1", "y"))
	checkAck(t, acks[0], "z", next.Seq+1, false)
	checkAck(t, acks[1], "x", first.Seq, true)
	checkAck(t, acks[2], "y", next.Seq, true)
	expectEntry(t, st, ch, next.Seq+1)
	marker := publish(t, b, ch, action("c1", "marker"))[0]
	expectEntry(t, st, ch, marker.Seq)
}

// testConflictRefusesBatch checks that an id reused with a different type, payload or
// meta fails the whole Publish with ErrConflict: no action of the batch gets a seq, none
// is delivered or stored, and the new actions of the refused batch can be published
// afterwards as new.
func testConflictRefusesBatch(t *testing.T, s suite) {
	tests := []struct {
		name   string
		change func(*actionsyncv1.Action)
	}{
		{"type", func(a *actionsyncv1.Action) { a.Type += "_OTHER" }},
		{"payload", func(a *actionsyncv1.Action) { a.Payload = payloadFor("not-x") }},
		{"payload_kind", func(a *actionsyncv1.Action) { a.Payload = structpb.NewStringValue("x") }},
		{"payload_removed", func(a *actionsyncv1.Action) { a.Payload = nil }},
		{"meta_value", func(a *actionsyncv1.Action) { a.Meta.Fields["k"] = structpb.NewStringValue("w") }},
		{"meta_removed", func(a *actionsyncv1.Action) { a.Meta = nil }},
		{"meta_added_field", func(a *actionsyncv1.Action) { a.Meta.Fields["extra"] = structpb.NewBoolValue(true) }},
	}
	b := s.open(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ch := "conflict-" + tt.name
			withMeta := func(id string) *actionsyncv1.Action {
				a := action("c1", id)
				a.Meta = mustStruct(t, map[string]any{"k": "v"})
				return a
			}
			original := func() *actionsyncv1.Action { return withMeta("x") }
			first := publish(t, b, ch, original())[0]
			st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: first.Seq}, 16)
			expectControl(t, st, broker.ControlReady, ch, first.Seq)

			for i, batch := range [][]*actionsyncv1.Action{
				{conflicting(original(), tt.change)},
				{action("c1", "new-1"), conflicting(original(), tt.change)},
				{conflicting(original(), tt.change), action("c1", "new-1")},
				{action("c1", "new-1"), original(), conflicting(original(), tt.change)},
			} {
				acks, err := b.Publish(t.Context(), ch, batch)
				if !errors.Is(err, broker.ErrConflict) {
					t.Errorf("batch %d: got acks %+v, error %v, want %v", i, acks, err, broker.ErrConflict)
				}
			}
			// A conflict between two new actions of one batch.
			in := []*actionsyncv1.Action{withMeta("new-2"), conflicting(withMeta("new-2"), tt.change)}
			if acks, err := b.Publish(t.Context(), ch, in); !errors.Is(err, broker.ErrConflict) {
				t.Errorf("conflict within a batch: got acks %+v, error %v, want %v", acks, err, broker.ErrConflict)
			}

			entries, head := history(t, b, ch, 0)
			if head != first.Seq || len(entries) != 1 {
				t.Fatalf("after refused batches: got seqs %v and head %d, want [%d] and head %d", seqsOf(entries), head, first.Seq, first.Seq)
			}
			// No seq was consumed and nothing was delivered or remembered: the new ids
			// of the refused batches are new.
			acks := publish(t, b, ch, action("c1", "new-1"), conflicting(withMeta("new-2"), tt.change))
			checkAck(t, acks[0], "new-1", first.Seq+1, false)
			checkAck(t, acks[1], "new-2", first.Seq+2, false)
			expectEntries(t, st, ch, first.Seq+1, first.Seq+2)
			// The original stays the original.
			checkAck(t, publish(t, b, ch, original())[0], "x", first.Seq, true)
		})
	}
}

// conflicting returns a with change applied: same id, different body.
func conflicting(a *actionsyncv1.Action, change func(*actionsyncv1.Action)) *actionsyncv1.Action {
	change(a)
	return a
}

// testRepeatedIDInBatch checks that an id repeated within one Publish with the same body
// is stored and delivered once, and every later copy is acked as a duplicate of the
// first copy's seq.
func testRepeatedIDInBatch(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "repeat"
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 16)
	expectControl(t, st, broker.ControlReady, ch, 0)

	acks := publish(t, b, ch, action("c", "a"), action("c", "b"), action("c", "a"), action("c", "a"), action("c", "c"), action("c", "b"))
	want := []broker.Ack{
		{ID: "a", Seq: 1}, {ID: "b", Seq: 2}, {ID: "a", Seq: 1, Duplicate: true},
		{ID: "a", Seq: 1, Duplicate: true}, {ID: "c", Seq: 3}, {ID: "b", Seq: 2, Duplicate: true},
	}
	for i := range want {
		if acks[i] != want[i] {
			t.Errorf("ack %d: got %+v, want %+v", i, acks[i], want[i])
		}
	}
	expectEntries(t, st, ch, 1, 2, 3)
	// A batch of nothing but copies of one new id.
	acks = publish(t, b, ch, action("c", "d"), action("c", "d"), action("c", "d"))
	for i, ack := range acks {
		checkAck(t, ack, "d", 4, i > 0)
	}
	expectEntry(t, st, ch, 4)
	marker := publish(t, b, ch, action("c", "marker"))[0]
	checkAck(t, marker, "marker", 5, false)
	expectEntry(t, st, ch, 5)

	entries, _ := history(t, b, ch, 0)
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ID())
	}
	if got, want := fmt.Sprint(ids), "[a b c d marker]"; got != want {
		t.Errorf("history ids: got %s, want %s", got, want)
	}
}

// testIDAcceptedAfterTrim checks the dedupe window: an id is recognised while its action
// is in history and accepted as new once it has been trimmed out, whatever its body.
func testIDAcceptedAfterTrim(t *testing.T, s suite) {
	const size = 3
	b := s.open(t, Config{HistorySize: size})
	for _, sameBody := range []bool{true, false} {
		t.Run(fmt.Sprintf("same_body_%v", sameBody), func(t *testing.T) {
			t.Parallel()
			ch := fmt.Sprintf("window-%v", sameBody)
			resend := func() *actionsyncv1.Action {
				a := action("c", "x")
				if !sameBody {
					a.Payload = payloadFor("changed")
				}
				return a
			}
			first := publish(t, b, ch, action("c", "x"))[0]
			publishN(t, b, ch, "c", "fill", size-1)
			// x is the oldest action still in history: a duplicate (or a conflict).
			acks, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{resend()})
			if sameBody {
				if err != nil || len(acks) != 1 {
					t.Fatalf("resend while in history: got %+v, %v", acks, err)
				}
				checkAck(t, acks[0], "x", first.Seq, true)
			} else if !errors.Is(err, broker.ErrConflict) {
				t.Fatalf("resend with another body while in history: got %+v, %v, want %v", acks, err, broker.ErrConflict)
			}
			// One more action trims x out of history.
			publishN(t, b, ch, "c", "trim", 1)
			wantHistoryErr(t, b, ch, first.Seq-1, broker.ErrTrimmed)
			st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Live: true}, 8)
			expectControl(t, st, broker.ControlReady, ch, first.Seq+size)
			again := publish(t, b, ch, resend())[0]
			checkAck(t, again, "x", first.Seq+size+1, false)
			expectEntry(t, st, ch, again.Seq)
			// And it is the one recognised from now on.
			checkAck(t, publish(t, b, ch, resend())[0], "x", again.Seq, true)
		})
	}
}

// testRetryPastDedupeWindow checks broker.SentAfter at the edge of history: a retry
// first sent after seq K is published (or recognised as a duplicate) while history
// reaches back to K+1, and refused with ErrDedupeWindow, publishing nothing, once it
// does not, or in another epoch.
func testRetryPastDedupeWindow(t *testing.T, s suite) {
	b := s.open(t, Config{HistorySize: 4})
	const ch = "retry-window"
	seqs := publishN(t, b, ch, "writer", "w", 6) // history keeps 3..6: trimmed 2
	epoch := epochOf(t, b, ch)
	retry := func(id string, after uint64, epoch string) error {
		_, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{action("writer", id)}, broker.SentAfter(after, epoch))
		return err
	}
	if err := retry("w-3", seqs[1], epoch); err != nil { // after 2: history has 3.., the id is known
		t.Errorf("retry sent after %d, history after 2: %v", seqs[1], err)
	}
	if err := retry("w-1", seqs[0], epoch); !errors.Is(err, broker.ErrDedupeWindow) {
		t.Errorf("retry sent after %d, history after 2: got %v, want ErrDedupeWindow", seqs[0], err)
	}
	if err := retry("fresh", seqs[5], "other-epoch"); !errors.Is(err, broker.ErrDedupeWindow) {
		t.Errorf("retry sent in another epoch: got %v, want ErrDedupeWindow", err)
	}
	if _, head := history(t, b, ch, seqs[5]); head != seqs[5] {
		t.Fatalf("refused retries published something: head %d, want %d", head, seqs[5])
	}
	if err := retry("fresh", seqs[5], epoch); err != nil {
		t.Errorf("retry sent at the head: %v", err)
	}
}
