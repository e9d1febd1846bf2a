package memory

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// PutSnapshot implements broker.Broker. It does not create the channel: a channel that
// does not exist has no seq to take a snapshot at.
func (b *Broker) PutSnapshot(ctx context.Context, snap *actionsyncv1.Snapshot) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := b.opts.Now()
	ch, err := b.lock(snap.GetChannel(), false)
	if err != nil {
		return err
	}
	if ch == nil {
		return broker.CheckSnapshot(snap, broker.ChannelView{}, b.opts.MaxSnapshotBytes)
	}
	defer ch.mu.Unlock()
	if ch.closed {
		return broker.ErrClosed
	}
	b.trim(ch, now)
	v := broker.ChannelView{Head: ch.log.Head(), Trimmed: ch.log.Trimmed(), Epoch: ch.epoch, Snapshot: ch.snap}
	if err := broker.CheckSnapshot(snap, v, b.opts.MaxSnapshotBytes); err != nil {
		return err
	}
	snap.Time = timestamppb.New(now)
	ch.snap = snap
	ch.log.Hold(snap.GetSeq())
	return nil
}

// Snapshot implements broker.Broker.
func (b *Broker) Snapshot(ctx context.Context, name string) (*actionsyncv1.Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch, err := b.lock(name, false)
	if err != nil {
		return nil, err
	}
	if ch == nil {
		return nil, fmt.Errorf("channel %q: %w", name, broker.ErrNoSnapshot)
	}
	defer ch.mu.Unlock()
	if ch.snap == nil {
		return nil, fmt.Errorf("channel %q: %w", name, broker.ErrNoSnapshot)
	}
	return ch.snap, nil
}

// DeleteSnapshot implements broker.Broker.
func (b *Broker) DeleteSnapshot(ctx context.Context, name string, seq uint64) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	ch, err := b.lock(name, false)
	if err != nil {
		return 0, err
	}
	if ch == nil {
		return 0, broker.CheckDelete(name, nil, seq)
	}
	defer ch.mu.Unlock()
	if ch.closed {
		return 0, broker.ErrClosed
	}
	if err := broker.CheckDelete(name, ch.snap, seq); err != nil {
		return 0, err
	}
	deleted := ch.snap.GetSeq()
	ch.snap = nil
	ch.log.Hold(0)
	return deleted, nil
}
