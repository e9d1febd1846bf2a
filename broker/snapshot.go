package broker

import (
	"fmt"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// DefaultMaxSnapshotBytes is the default limit on a snapshot's state: 1 MiB.
const DefaultMaxSnapshotBytes = 1 << 20

// ChannelView is what a backend knows of a channel when it checks a snapshot against it.
type ChannelView struct {
	// Head is the channel's last seq (0: none).
	Head uint64
	// Trimmed is the highest seq no longer in history (0: none).
	Trimmed uint64
	// Epoch names the channel's history.
	Epoch string
	// Snapshot is the snapshot the channel holds, or nil.
	Snapshot *actionsyncv1.Snapshot
}

// CheckSnapshot tells whether a backend may store snap for a channel in view v, with
// maxBytes the limit on its state. It is the rule every backend applies, in this order:
// the state fits (ErrSnapshotTooLarge), the channel has actions (ErrBeyondHead), the
// epoch is the channel's (ErrEpochMismatch),
// seq is 1..head (ErrBeyondHead), newer than the held snapshot (ErrStaleSnapshot), and
// history still continues after it (ErrTrimmed), so that a client can rebuild from it.
func CheckSnapshot(snap *actionsyncv1.Snapshot, v ChannelView, maxBytes int) error {
	seq := snap.GetSeq()
	switch {
	case len(snap.GetState()) > maxBytes:
		return fmt.Errorf("state: %d bytes, limit %d: %w", len(snap.GetState()), maxBytes, ErrSnapshotTooLarge)
	case v.Head == 0:
		return fmt.Errorf("seq %d, channel %q has no actions: %w", seq, snap.GetChannel(), ErrBeyondHead)
	case snap.GetEpoch() != v.Epoch:
		return fmt.Errorf("epoch %q, channel %q is in epoch %q: %w", snap.GetEpoch(), snap.GetChannel(), v.Epoch, ErrEpochMismatch)
	case seq == 0 || seq > v.Head:
		return fmt.Errorf("seq %d, channel %q head %d: %w", seq, snap.GetChannel(), v.Head, ErrBeyondHead)
	case v.Snapshot != nil && seq <= v.Snapshot.GetSeq():
		return fmt.Errorf("seq %d, channel %q holds a snapshot at seq %d: %w", seq, snap.GetChannel(), v.Snapshot.GetSeq(), ErrStaleSnapshot)
	case seq < v.Trimmed:
		return fmt.Errorf("seq %d, channel %q history starts after seq %d: %w", seq, snap.GetChannel(), v.Trimmed, ErrTrimmed)
	}
	return nil
}

// CheckDelete tells whether a backend may delete held for a DeleteSnapshot call with
// seq (0: any): ErrNoSnapshot if held is nil, ErrSnapshotChanged if seq is set and is
// not held's.
func CheckDelete(channel string, held *actionsyncv1.Snapshot, seq uint64) error {
	switch {
	case held == nil:
		return fmt.Errorf("channel %q: %w", channel, ErrNoSnapshot)
	case seq != 0 && held.GetSeq() != seq:
		return fmt.Errorf("channel %q holds a snapshot at seq %d, not %d: %w", channel, held.GetSeq(), seq, ErrSnapshotChanged)
	}
	return nil
}

// WithoutState returns a copy of snap with everything but its state.
func WithoutState(snap *actionsyncv1.Snapshot) *actionsyncv1.Snapshot {
	return &actionsyncv1.Snapshot{
		Channel: snap.GetChannel(), Seq: snap.GetSeq(), Epoch: snap.GetEpoch(), Version: snap.GetVersion(),
		ClientId: snap.GetClientId(), Time: snap.GetTime(),
	}
}
