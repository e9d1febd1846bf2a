package history

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// entry returns a distinct entry for seq.
func entry(seq uint64) *broker.Entry {
	return broker.NewEntry(&actionsyncv1.Action{Seq: seq}, nil)
}

// historyModel is the reference the ring buffer is checked against: a plain slice,
// oldest first, capped at max.
type historyModel struct {
	entries []*broker.Entry
	max     int
}

func (m *historyModel) push(e *broker.Entry) *broker.Entry {
	m.entries = append(m.entries, e)
	if len(m.entries) > m.max {
		evicted := m.entries[0]
		m.entries = m.entries[1:]
		return evicted
	}
	return nil
}

func (m *historyModel) popOldest() *broker.Entry {
	if len(m.entries) == 0 {
		return nil
	}
	e := m.entries[0]
	m.entries = m.entries[1:]
	return e
}

// checkHistory fails the test unless h holds exactly what m holds, in order, within
// its capacity.
func checkHistory(t *testing.T, step string, h *ring, m *historyModel) {
	t.Helper()
	if h.len() != len(m.entries) {
		t.Fatalf("%s: len: got %d, want %d", step, h.len(), len(m.entries))
	}
	if len(h.buf) > h.max {
		t.Fatalf("%s: buffer of %d slots, capacity %d", step, len(h.buf), h.max)
	}
	for i, want := range m.entries {
		if got := h.at(i); got != want {
			t.Fatalf("%s: at(%d): got seq %d, want %d", step, i, seqOf(got), want.Seq())
		}
	}
	var want *broker.Entry
	if len(m.entries) > 0 {
		want = m.entries[0]
	}
	if got := h.oldest(); got != want {
		t.Fatalf("%s: oldest: got seq %d, want %d", step, seqOf(got), seqOf(want))
	}
}

// seqOf returns e's seq, or 0 for nil.
func seqOf(e *broker.Entry) uint64 {
	if e == nil {
		return 0
	}
	return e.Seq()
}

func TestHistory_PushEvicts(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("size_%d", size), func(t *testing.T) {
			t.Parallel()
			h, m := newRing(size), &historyModel{max: size}
			checkHistory(t, "empty", &h, m)
			for seq := uint64(1); seq <= uint64(3*size+1); seq++ {
				e := entry(seq)
				got, want := h.push(e), m.push(e)
				if got != want {
					t.Fatalf("push %d: evicted seq %d, want %d", seq, seqOf(got), seqOf(want))
				}
				checkHistory(t, fmt.Sprintf("push %d", seq), &h, m)
			}
		})
	}
}

func TestHistory_PopOldest(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("size_%d", size), func(t *testing.T) {
			t.Parallel()
			h, m := newRing(size), &historyModel{max: size}
			if e := h.popOldest(); e != nil {
				t.Fatalf("popOldest of empty: got seq %d", e.Seq())
			}
			seq := uint64(0)
			// Fill (wrapping once), then empty completely, twice over.
			for round := range 2 {
				for range size + 1 {
					seq++
					e := entry(seq)
					if got, want := h.push(e), m.push(e); got != want {
						t.Fatalf("round %d: push %d: evicted seq %d, want %d", round, seq, seqOf(got), seqOf(want))
					}
				}
				for h.len() > 0 {
					got, want := h.popOldest(), m.popOldest()
					if got != want {
						t.Fatalf("round %d: popOldest: got seq %d, want %d", round, seqOf(got), seqOf(want))
					}
					checkHistory(t, fmt.Sprintf("round %d pop %d", round, seqOf(got)), &h, m)
				}
				if e := h.popOldest(); e != nil {
					t.Fatalf("round %d: popOldest of emptied history: got seq %d", round, e.Seq())
				}
			}
		})
	}
}

// TestHistory_GrowAfterWrap covers the path where the buffer has wrapped below its
// capacity (after pops) and must be straightened before it grows.
func TestHistory_GrowAfterWrap(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("size_%d", size), func(t *testing.T) {
			t.Parallel()
			h, m := newRing(size), &historyModel{max: size}
			seq := uint64(0)
			push := func() {
				seq++
				e := entry(seq)
				if got, want := h.push(e), m.push(e); got != want {
					t.Fatalf("push %d: evicted seq %d, want %d", seq, seqOf(got), seqOf(want))
				}
				checkHistory(t, fmt.Sprintf("push %d", seq), &h, m)
			}
			pop := func() {
				if got, want := h.popOldest(), m.popOldest(); got != want {
					t.Fatalf("popOldest: got seq %d, want %d", seqOf(got), seqOf(want))
				}
				checkHistory(t, "pop", &h, m)
			}
			// Two slots in use, pop one: start moves to 1, then a push wraps to slot 0
			// while the buffer is still below capacity; the next push must grow it.
			push()
			push()
			pop()
			push()
			push()
			push()
			// Again from a state where the buffer is full and wrapped at capacity.
			for range 2 * size {
				push()
			}
			pop()
			push()
			push()
		})
	}
}

// TestHistory_Random drives the ring buffer and the model with the same random pushes
// and pops.
func TestHistory_Random(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 2, 3, 5, 8} {
		t.Run(fmt.Sprintf("size_%d", size), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(size), 7))
			h, m := newRing(size), &historyModel{max: size}
			seq := uint64(0)
			for step := range 2000 {
				if rng.IntN(3) == 0 {
					if got, want := h.popOldest(), m.popOldest(); got != want {
						t.Fatalf("step %d: popOldest: got seq %d, want %d", step, seqOf(got), seqOf(want))
					}
				} else {
					seq++
					e := entry(seq)
					if got, want := h.push(e), m.push(e); got != want {
						t.Fatalf("step %d: push %d: evicted seq %d, want %d", step, seq, seqOf(got), seqOf(want))
					}
				}
				checkHistory(t, fmt.Sprintf("step %d", step), &h, m)
			}
		})
	}
}

// TestHistory_PopClearsSlot checks that a popped entry is not kept alive by the buffer.
func TestHistory_PopClearsSlot(t *testing.T) {
	t.Parallel()
	h := newRing(3)
	for seq := uint64(1); seq <= 3; seq++ {
		h.push(entry(seq))
	}
	h.popOldest()
	for i, e := range h.buf {
		if e != nil && e.Seq() == 1 {
			t.Errorf("slot %d still holds the popped entry", i)
		}
	}
}
