package main

import (
	"strings"
	"testing"
)

func TestSeqChecker_observe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                 string
		head                 uint64
		seqs                 []uint64
		maxSeq               uint64
		wantNew              []bool
		gaps, dups, reorders uint64
		lost, extra          uint64
		note                 string // fragment of the first note, "" for none
	}{
		{name: "in_order", head: 0, seqs: []uint64{1, 2, 3}, maxSeq: 3,
			wantNew: []bool{true, true, true}},
		{name: "in_order_after_head", head: 41, seqs: []uint64{42, 43}, maxSeq: 43,
			wantNew: []bool{true, true}},
		{name: "duplicate", seqs: []uint64{1, 2, 2, 3}, maxSeq: 3,
			wantNew: []bool{true, true, false, true}, dups: 1, note: "duplicate: got seq 2 again"},
		{name: "duplicate_of_old", seqs: []uint64{1, 2, 3, 1}, maxSeq: 3,
			wantNew: []bool{true, true, true, false}, dups: 1, note: "duplicate: got seq 1"},
		{name: "gap", seqs: []uint64{1, 2, 5}, maxSeq: 5,
			wantNew: []bool{true, true, true}, gaps: 1, lost: 2, note: "gap: got seq 5, want 3 (2 missing)"},
		{name: "reorder", seqs: []uint64{1, 3, 2, 4}, maxSeq: 4,
			wantNew: []bool{true, true, true, true}, gaps: 1, reorders: 1, note: "gap: got seq 3, want 2"},
		{name: "reordered_then_duplicated", seqs: []uint64{2, 1, 1}, maxSeq: 2,
			wantNew: []bool{true, true, false}, gaps: 1, reorders: 1, dups: 1},
		{name: "missing_tail", seqs: []uint64{1, 2}, maxSeq: 4,
			wantNew: []bool{true, true}, lost: 2},
		{name: "nothing_received", seqs: nil, maxSeq: 3, lost: 3},
		{name: "beyond_published", seqs: []uint64{1, 2, 3}, maxSeq: 2,
			wantNew: []bool{true, true, true}, extra: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c seqChecker
			if tt.head > 0 {
				c.start(tt.head)
			}
			for i, s := range tt.seqs {
				if got := c.observe(s); got != tt.wantNew[i] {
					t.Errorf("observe(%d) at %d: got new=%v, want %v", s, i, got, tt.wantNew[i])
				}
			}
			if c.gaps != tt.gaps || c.dups != tt.dups || c.reorders != tt.reorders {
				t.Errorf("got gaps %d dups %d reorders %d, want %d %d %d", c.gaps, c.dups, c.reorders, tt.gaps, tt.dups, tt.reorders)
			}
			if want := tt.gaps + tt.dups + tt.reorders; c.violations() != want {
				t.Errorf("violations: got %d, want %d", c.violations(), want)
			}
			lost, extra := c.lost(tt.head, tt.maxSeq)
			if lost != tt.lost || extra != tt.extra {
				t.Errorf("lost(%d, %d): got lost %d extra %d, want %d %d", tt.head, tt.maxSeq, lost, extra, tt.lost, tt.extra)
			}
			switch {
			case tt.note == "" && tt.gaps+tt.dups+tt.reorders == 0 && len(c.notes) > 0:
				t.Errorf("notes: got %q, want none", c.notes)
			case tt.note != "" && (len(c.notes) == 0 || !strings.Contains(c.notes[0], tt.note)):
				t.Errorf("first note: got %q, want it to contain %q", c.notes, tt.note)
			}
		})
	}
}

func TestSeqChecker_notesBounded(t *testing.T) {
	t.Parallel()
	var c seqChecker
	for range 10 {
		c.observe(1)
	}
	if c.dups != 9 || len(c.notes) != maxNotes {
		t.Errorf("got %d dups, %d notes; want 9 dups, %d notes", c.dups, len(c.notes), maxNotes)
	}
}

func TestVerdict_err(t *testing.T) {
	t.Parallel()
	if err := (verdict{}).err(); err != nil {
		t.Errorf("clean verdict: got %v, want nil", err)
	}
	v := verdict{dups: 1, lost: 2, notes: []string{"subscriber 3: duplicate: got seq 7 again"}}
	err := v.err()
	if err == nil || !strings.Contains(err.Error(), "3 violations") || !strings.Contains(err.Error(), "seq 7") {
		t.Errorf("got %v, want 3 violations naming seq 7", err)
	}
}

func TestCompletion_deliver(t *testing.T) {
	t.Parallel()
	const n, window = 3, 2
	c := newCompletion(n, window)
	take := func() {
		t.Helper()
		select {
		case <-c.tokens:
		default:
			t.Fatal("no token, want one")
		}
	}
	take()
	take()
	if len(c.tokens) != 0 {
		t.Fatalf("got %d tokens after taking the window, want 0", len(c.tokens))
	}
	for seq := uint64(1); seq <= 2; seq++ {
		for i := range n {
			c.deliver(seq)
			want := int(seq) - 1 // the token comes back with the last subscriber only
			if i == n-1 {
				want = int(seq)
			}
			if len(c.tokens) != want {
				t.Fatalf("seq %d after %d deliveries: got %d tokens, want %d", seq, i+1, len(c.tokens), want)
			}
		}
	}
	if len(c.tokens) != window || c.extra.Load() != 0 {
		t.Errorf("got %d tokens, %d extra; want %d, 0", len(c.tokens), c.extra.Load(), window)
	}
	// A slot is reused by seq + ring size once complete.
	take()
	for range n {
		c.deliver(1 + c.mask + 1)
	}
	if len(c.tokens) != window {
		t.Errorf("reused slot: got %d tokens, want %d", len(c.tokens), window)
	}
	// One completion more than was sent is counted, not blocked on.
	for range n {
		c.deliver(3)
	}
	if c.extra.Load() != 1 {
		t.Errorf("extra: got %d, want 1", c.extra.Load())
	}
}
