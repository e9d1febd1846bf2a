// Package history is one channel's history as a storage backend keeps it in memory: a
// ring of the latest entries with contiguous seqs, bounded by count and age, the head
// seq, and the dedupe index over what is kept. It is the part of a channel's state that
// the in-memory broker and the JetStream broker's per-node cache share.
//
// A Log is not safe for concurrent use: its owner guards it with the channel's lock.
package history

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Log is one channel's history: entries with contiguous seqs, oldest first.
type Log struct {
	ring     ring
	head     uint64                   // last seq appended; 0: none yet
	trimmed  uint64                   // highest seq dropped from the log; 0: none
	hold     uint64                   // TrimBefore keeps entries after this seq; 0: none
	byID     map[string]*broker.Entry // dedupe index over the kept entries
	bytes    int                      // Size of the kept entries
	maxBytes int                      // 0: no byte bound
	onDrop   func(*broker.Entry)
}

// Options bound a Log.
type Options struct {
	// Size is the most entries kept (required).
	Size int
	// MaxBytes is the most bytes (broker.Entry.Size) kept; the oldest entries go first,
	// but the newest is always kept. 0: no byte bound.
	MaxBytes int
	// OnDrop, if set, is called with each entry the log drops, under the owner's lock.
	OnDrop func(*broker.Entry)
}

// NewLog returns an empty log that keeps at most size entries.
func NewLog(size int) *Log { return NewLogWith(Options{Size: size}) }

// NewLogWith returns an empty log bounded by opts.
func NewLogWith(opts Options) *Log {
	return &Log{ring: newRing(opts.Size), byID: make(map[string]*broker.Entry), maxBytes: opts.MaxBytes, onDrop: opts.OnDrop}
}

// Bytes returns the size of the kept entries (broker.Entry.Size).
func (l *Log) Bytes() int { return l.bytes }

// Head returns the last seq appended (0 for none). Trimming does not change it.
func (l *Log) Head() uint64 { return l.head }

// Trimmed returns the highest seq no longer kept (0 if nothing was dropped): the log
// serves positions from Trimmed to Head.
func (l *Log) Trimmed() uint64 { return l.trimmed }

// Len returns the number of entries kept.
func (l *Log) Len() int { return l.ring.len() }

// First returns the seq of the first action held, 0 if none is.
func (l *Log) First() uint64 {
	if l.Len() == 0 {
		return 0
	}
	return l.trimmed + 1
}

// Start makes an empty log continue a channel whose entries up to seq were dropped
// elsewhere (a backend loading a channel whose older history is gone): Head and Trimmed
// become seq. It does nothing unless the log is empty and seq is past its head.
func (l *Log) Start(seq uint64) {
	if l.ring.len() == 0 && seq > l.head {
		l.head, l.trimmed = seq, seq
	}
}

// Append adds e, whose seq must be Head()+1, dropping the oldest entry if the log is
// full. It returns an error and changes nothing if the seq does not follow the head.
func (l *Log) Append(e *broker.Entry) error {
	if e.Seq() != l.head+1 {
		return fmt.Errorf("append seq %d after head %d: seqs must be contiguous", e.Seq(), l.head)
	}
	if old := l.ring.push(e); old != nil {
		l.drop(old)
	}
	l.bytes += e.Size()
	for l.maxBytes > 0 && l.bytes > l.maxBytes && l.ring.len() > 1 {
		l.drop(l.ring.popOldest())
	}
	l.head = e.Seq()
	l.byID[e.ID()] = e
	return nil
}

// TrimThrough drops the entries with seq <= seq (whatever Hold says) and returns the
// bytes freed.
func (l *Log) TrimThrough(seq uint64) int {
	freed := 0
	for e := l.ring.oldest(); e != nil && e.Seq() <= seq; e = l.ring.oldest() {
		freed += e.Size()
		l.drop(l.ring.popOldest())
	}
	return freed
}

// Hold makes TrimBefore keep the entries after seq, whatever their age: the channel
// holds a snapshot at seq, and clients rebuild from it with the entries after it. Only
// the size limit drops those. Hold(0) lifts it.
func (l *Log) Hold(seq uint64) { l.hold = seq }

// TrimBefore drops entries stamped before cutoff, except those after the Hold seq.
func (l *Log) TrimBefore(cutoff time.Time) {
	for e := l.ring.oldest(); e != nil && e.Time().Before(cutoff); e = l.ring.oldest() {
		if l.hold != 0 && e.Seq() > l.hold {
			return
		}
		l.drop(l.ring.popOldest())
	}
}

// drop forgets an entry that left the ring.
func (l *Log) drop(e *broker.Entry) {
	l.trimmed = e.Seq()
	l.bytes -= e.Size()
	e.MarkDropped()
	if l.onDrop != nil {
		l.onDrop(e)
	}
	if l.byID[e.ID()] == e {
		delete(l.byID, e.ID())
	}
}

// Lookup returns the kept entry with action id id, or nil.
func (l *Log) Lookup(id string) *broker.Entry { return l.byID[id] }

// After appends to dst up to limit entries with seq > afterSeq, in order, and returns it.
// afterSeq must be within [Trimmed, Head]; outside it nothing is appended.
func (l *Log) After(afterSeq uint64, limit int, dst []*broker.Entry) []*broker.Entry {
	oldest := l.ring.oldest()
	if oldest == nil || limit <= 0 || afterSeq < l.trimmed || afterSeq >= l.head {
		return dst
	}
	i := 0
	if afterSeq >= oldest.Seq() {
		i = int(afterSeq - oldest.Seq() + 1) // seqs are contiguous in the ring
	}
	for n := 0; i < l.ring.len() && n < limit; i, n = i+1, n+1 {
		dst = append(dst, l.ring.at(i))
	}
	return dst
}

// Page answers a History request: up to limit entries with seq > afterSeq and the head.
// It fails with broker.ErrBeyondHead when afterSeq is past the head, and with
// broker.ErrTrimmed when the log no longer reaches back to afterSeq+1.
func (l *Log) Page(afterSeq uint64, limit int) ([]*broker.Entry, uint64, error) {
	switch {
	case afterSeq > l.head:
		return nil, l.head, fmt.Errorf("after_seq %d, head %d: %w", afterSeq, l.head, broker.ErrBeyondHead)
	case afterSeq < l.trimmed:
		return nil, l.head, fmt.Errorf("history starts after seq %d, asked after %d: %w", l.trimmed, afterSeq, broker.ErrTrimmed)
	}
	return l.After(afterSeq, limit, nil), l.head, nil
}

// Plan checks a batch about to be appended against the kept entries and against itself,
// changing nothing. It returns one Ack per action: a duplicate (the same id with the same
// type, payload and meta, kept in the log or earlier in the batch) is marked Duplicate,
// with its seq when it repeats a kept entry and with the index of the earlier copy in
// dupOf when it repeats the batch; the other acks are left for the caller to fill in as
// it assigns seqs. The same id with a different body fails the whole batch with an error
// wrapping broker.ErrConflict. dupOf is nil when no action repeats an earlier one of the
// batch; otherwise dupOf[i] is that earlier index or -1.
func (l *Log) Plan(actions []*actionsyncv1.Action) (acks []broker.Ack, dupOf []int, err error) {
	acks = make([]broker.Ack, len(actions))
	for i, a := range actions {
		if prev := l.byID[a.GetId()]; prev != nil {
			// Decoded here only: a repeated id is rare, and entries keep no decoded action.
			kept, err := prev.Decode()
			if err != nil {
				return nil, nil, err
			}
			if !SameBody(kept, a) {
				return nil, nil, fmt.Errorf("actions[%d].id: %q is seq %d: %w", i, a.GetId(), prev.Seq(), broker.ErrConflict)
			}
			acks[i] = broker.Ack{ID: a.GetId(), Seq: prev.Seq(), Duplicate: true}
			continue
		}
		for j := range i {
			if actions[j].GetId() == a.GetId() && !acks[j].Duplicate {
				if !SameBody(actions[j], a) {
					return nil, nil, fmt.Errorf("actions[%d].id: %q repeats actions[%d]: %w", i, a.GetId(), j, broker.ErrConflict)
				}
				if dupOf == nil {
					dupOf = make([]int, len(actions))
					for k := range dupOf {
						dupOf[k] = -1
					}
				}
				dupOf[i] = j
				acks[i] = broker.Ack{ID: a.GetId(), Duplicate: true}
				break
			}
		}
	}
	return acks, dupOf, nil
}

// SameBody reports whether two actions with the same id carry the same type, payload and
// meta, whether their bodies are decoded or kept encoded (broker.Body).
func SameBody(a, b *actionsyncv1.Action) bool {
	if a.GetType() != b.GetType() {
		return false
	}
	pa, ma, errA := broker.Body(a)
	pb, mb, errB := broker.Body(b)
	return errA == nil && errB == nil && proto.Equal(pa, pb) && proto.Equal(ma, mb)
}
