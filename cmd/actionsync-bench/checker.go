package main

import "fmt"

// maxMissing bounds how many skipped seqs a checker remembers (to tell a late arrival
// from a duplicate); past it, late arrivals count as duplicates. Either is a failure.
const maxMissing = 1 << 14

// maxNotes is how many violations a checker describes in words.
const maxNotes = 3

// seqChecker checks that one subscriber receives a channel's actions exactly once and in
// seq order, starting right after the head its ready message gave. The zero value
// expects seq 1 first. It is used by one goroutine at a time.
type seqChecker struct {
	next     uint64              // the seq expected next
	missing  map[uint64]struct{} // skipped by a gap and not seen since
	unique   uint64              // distinct seqs received
	gaps     uint64              // times a seq arrived with earlier ones missing
	reorders uint64              // skipped seqs that arrived late
	dups     uint64              // seqs received again
	notes    []string            // the first violations, in words
}

// start sets the channel's head: the next action expected is head+1.
func (c *seqChecker) start(head uint64) { c.next = head + 1 }

// observe records seq and reports whether it is new, i.e. counts as a delivery.
func (c *seqChecker) observe(seq uint64) bool {
	if c.next == 0 {
		c.next = 1
	}
	switch {
	case seq == c.next:
		c.next++
		c.unique++
		return true
	case seq > c.next:
		c.gaps++
		c.note("gap: got seq %d, want %d (%d missing)", seq, c.next, seq-c.next)
		if c.missing == nil {
			c.missing = map[uint64]struct{}{}
		}
		for s := c.next; s < seq && len(c.missing) < maxMissing; s++ {
			c.missing[s] = struct{}{}
		}
		c.next = seq + 1
		c.unique++
		return true
	default:
		if _, ok := c.missing[seq]; ok {
			delete(c.missing, seq)
			c.reorders++
			c.unique++
			c.note("reorder: got seq %d after %d", seq, c.next-1)
			return true
		}
		c.dups++
		c.note("duplicate: got seq %d again (last %d)", seq, c.next-1)
		return false
	}
}

// last is the highest seq received (the head before any was).
func (c *seqChecker) last() uint64 {
	if c.next == 0 {
		return 0
	}
	return c.next - 1
}

// lost returns how many of the actions head+1..maxSeq were not received, and how many
// seqs beyond maxSeq were received (which nobody published, as far as we know).
func (c *seqChecker) lost(head, maxSeq uint64) (lost, extra uint64) {
	if c.last() > maxSeq {
		extra = c.last() - maxSeq
	}
	want := uint64(0)
	if maxSeq > head {
		want = maxSeq - head
	}
	if got := c.unique - extra; got < want {
		lost = want - got
	}
	return lost, extra
}

// violations counts gaps, reorders and duplicates.
func (c *seqChecker) violations() uint64 { return c.gaps + c.reorders + c.dups }

func (c *seqChecker) note(format string, a ...any) {
	if len(c.notes) < maxNotes {
		c.notes = append(c.notes, fmt.Sprintf(format, a...))
	}
}
