package history_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/history"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// entry returns an entry with seq, id and a time seq seconds after t0.
func entry(seq uint64, id string) *broker.Entry {
	a := &actionsyncv1.Action{Type: "T", Id: id, Seq: seq, Time: timestamppb.New(t0.Add(time.Duration(seq) * time.Second))}
	encoded, err := proto.Marshal(a)
	if err != nil {
		panic(err)
	}
	return broker.NewEntry(a, encoded)
}

func seqs(es []*broker.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq()
	}
	return out
}

func TestLog_AppendPageTrim(t *testing.T) {
	t.Parallel()
	l := history.NewLog(3)
	if err := l.Append(entry(2, "x")); err == nil {
		t.Fatal("Append of seq 2 to an empty log: got nil error")
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if err := l.Append(entry(seq, fmt.Sprint("id-", seq))); err != nil {
			t.Fatal(err)
		}
	}
	if l.Head() != 5 || l.Trimmed() != 2 || l.Len() != 3 {
		t.Fatalf("after 5 appends to a log of 3: head %d trimmed %d len %d, want 5 2 3", l.Head(), l.Trimmed(), l.Len())
	}
	if l.Lookup("id-2") != nil || l.Lookup("id-3") == nil {
		t.Error("dedupe index: a dropped id is still there, or a kept one is missing")
	}
	for _, tc := range []struct {
		after uint64
		limit int
		want  []uint64
		err   error
	}{
		{after: 1, limit: 10, err: broker.ErrTrimmed},
		{after: 2, limit: 10, want: []uint64{3, 4, 5}},
		{after: 3, limit: 1, want: []uint64{4}},
		{after: 5, limit: 10, want: []uint64{}},
		{after: 6, limit: 10, err: broker.ErrBeyondHead},
	} {
		got, head, err := l.Page(tc.after, tc.limit)
		if !errors.Is(err, tc.err) || head != 5 || (tc.err == nil && !slices.Equal(seqs(got), tc.want)) {
			t.Errorf("Page(%d, %d): got %v, head %d, %v; want %v, 5, %v", tc.after, tc.limit, seqs(got), head, err, tc.want, tc.err)
		}
	}
	l.TrimBefore(t0.Add(4 * time.Second)) // drops seq 3 (stamped at t0+3s)
	if l.Trimmed() != 3 || l.Len() != 2 || l.Head() != 5 {
		t.Errorf("TrimBefore: trimmed %d len %d head %d, want 3 2 5", l.Trimmed(), l.Len(), l.Head())
	}
	l.TrimBefore(t0.Add(time.Hour))
	if l.Trimmed() != 5 || l.Len() != 0 || l.Head() != 5 {
		t.Errorf("TrimBefore everything: trimmed %d len %d head %d, want 5 0 5", l.Trimmed(), l.Len(), l.Head())
	}
	if err := l.Append(entry(6, "id-6")); err != nil {
		t.Errorf("Append after trimming everything: %v", err)
	}
}

func TestLog_Start(t *testing.T) {
	t.Parallel()
	l := history.NewLog(10)
	l.Start(41)
	if l.Head() != 41 || l.Trimmed() != 41 {
		t.Fatalf("Start(41): head %d trimmed %d", l.Head(), l.Trimmed())
	}
	if err := l.Append(entry(42, "a")); err != nil {
		t.Fatal(err)
	}
	l.Start(100) // not empty: ignored
	if l.Head() != 42 {
		t.Errorf("Start on a log with entries moved the head to %d", l.Head())
	}
	if _, _, err := l.Page(40, 10); !errors.Is(err, broker.ErrTrimmed) {
		t.Errorf("Page before the start: got %v, want %v", err, broker.ErrTrimmed)
	}
}

func TestLog_Plan(t *testing.T) {
	t.Parallel()
	l := history.NewLog(10)
	if err := l.Append(entry(1, "kept")); err != nil {
		t.Fatal(err)
	}
	same := func(id string) *actionsyncv1.Action { return &actionsyncv1.Action{Type: "T", Id: id} }
	acks, dupOf, err := l.Plan([]*actionsyncv1.Action{same("new"), same("kept"), same("new"), same("other")})
	if err != nil {
		t.Fatal(err)
	}
	want := []broker.Ack{{}, {ID: "kept", Seq: 1, Duplicate: true}, {ID: "new", Duplicate: true}, {}}
	if !slices.Equal(acks, want) || !slices.Equal(dupOf, []int{-1, -1, 0, -1}) {
		t.Errorf("Plan: got acks %+v dupOf %v, want %+v [-1 -1 0 -1]", acks, dupOf, want)
	}
	if _, dupOf, _ := l.Plan([]*actionsyncv1.Action{same("a"), same("b")}); dupOf != nil {
		t.Errorf("Plan without repeats: dupOf %v, want nil", dupOf)
	}
	other := same("kept")
	other.Type = "U"
	if _, _, err := l.Plan([]*actionsyncv1.Action{same("x"), other}); !errors.Is(err, broker.ErrConflict) {
		t.Errorf("Plan with a conflicting kept id: got %v, want %v", err, broker.ErrConflict)
	}
	if _, _, err := l.Plan([]*actionsyncv1.Action{same("x"), other, same("y")}); !errors.Is(err, broker.ErrConflict) {
		t.Errorf("Plan: got %v, want %v", err, broker.ErrConflict)
	}
	inBatch := same("x")
	inBatch.Type = "U"
	if _, _, err := l.Plan([]*actionsyncv1.Action{same("x"), inBatch}); !errors.Is(err, broker.ErrConflict) {
		t.Errorf("Plan with a conflict inside the batch: got %v, want %v", err, broker.ErrConflict)
	}
}

func TestLog_HoldKeepsEntriesAfterSnapshot(t *testing.T) {
	t.Parallel()
	l := history.NewLog(4)
	for seq := uint64(1); seq <= 6; seq++ {
		if err := l.Append(entry(seq, fmt.Sprint("id-", seq))); err != nil {
			t.Fatal(err)
		}
	}
	// Kept: 3..6, stamped t0+3s..t0+6s. A snapshot at 4 holds 5 and 6 against age.
	l.Hold(4)
	l.TrimBefore(t0.Add(time.Hour))
	if got := seqs(l.After(l.Trimmed(), 10, nil)); l.Trimmed() != 4 || !slices.Equal(got, []uint64{5, 6}) {
		t.Fatalf("held at 4, everything old: trimmed %d kept %v, want 4 [5 6]", l.Trimmed(), got)
	}
	// The size limit still applies after the hold.
	for seq := uint64(7); seq <= 10; seq++ {
		if err := l.Append(entry(seq, fmt.Sprint("id-", seq))); err != nil {
			t.Fatal(err)
		}
	}
	if l.Trimmed() != 6 || l.Len() != 4 {
		t.Fatalf("held at 4, 10 appended to a log of 4: trimmed %d len %d, want 6 4", l.Trimmed(), l.Len())
	}
	// Lifting the hold lets age trim everything.
	l.Hold(0)
	l.TrimBefore(t0.Add(time.Hour))
	if l.Len() != 0 || l.Trimmed() != 10 {
		t.Fatalf("hold lifted, everything old: len %d trimmed %d, want 0 10", l.Len(), l.Trimmed())
	}
}
