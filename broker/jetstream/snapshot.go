package jetstream

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Snapshots live in a second stream, <Stream>_SNAPSHOTS, one subject per channel
// (<SubjectPrefix>_snapshot.<channel encoded>) keeping its last message only. A message
// is the Snapshot in protobuf encoding, or empty: deleted. Writers publish with
// Nats-Expected-Last-Subject-Sequence set to the message they checked against, so of
// racing puts and deletes on any nodes the one that checked the current snapshot wins
// and the others check again.
//
// A node reads a channel's snapshot when it loads the channel and whenever a
// subscription starts on it (with the catch-up read that starts every subscription),
// so a snapshot written or deleted on another node is seen by the next subscriber here.

// snapshotOverhead is what a snapshot message needs beside its state: the other fields
// and NATS's headers. The state limit is kept under the connection's max payload by it.
const snapshotOverhead = 16 << 10

// maxSnapshotAttempts bounds how often PutSnapshot and DeleteSnapshot check again after
// losing a race with another writer.
const maxSnapshotAttempts = 20

// snapshotStreamConfig is the snapshot stream the options describe.
func snapshotStreamConfig(opts Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              opts.Stream + "_SNAPSHOTS",
		Description:       "actionsync channel snapshots: one subject per channel, its last snapshot",
		Subjects:          []string{opts.SubjectPrefix + "_snapshot.>"},
		Storage:           jetstream.FileStorage,
		Replicas:          opts.Replicas,
		MaxMsgsPerSubject: 1,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
	}
}

// snapshotSubject returns the subject of channel name's snapshot.
func (b *Broker) snapshotSubject(name string) string {
	return b.opts.SubjectPrefix + "_snapshot." + encodeToken(name)
}

// readSnapshot returns channel name's snapshot as stored (nil: none, or one of another
// epoch) and the stream sequence of its subject's last message (0: none). Writes that
// expect that sequence read it from the snapshot stream's leader (from): a source
// behind the stream (leaderget.go) would make them fail until it caught up. Other reads
// take any source: an older snapshot is still a true one, and the next subscription
// start reads it again.
func (b *Broker) readSnapshot(ctx context.Context, name, epoch string, from readFrom) (*actionsyncv1.Snapshot, uint64, error) {
	subject := b.snapshotSubject(name)
	var msg *feedMsg
	var err error
	if from == fromLeader {
		msg, err = b.leaderGet(ctx, snapshotStreamConfig(b.opts).Name, msgGetRequest{LastFor: subject})
	} else {
		msg, err = lastMsgOf(ctx, b.snapshots, subject)
	}
	if err != nil {
		return nil, 0, b.unavailable("read snapshot of "+name, err)
	}
	if msg == nil {
		return nil, 0, nil
	}
	if len(msg.data) == 0 {
		return nil, msg.streamSeq, nil // deleted
	}
	snap := &actionsyncv1.Snapshot{}
	if err := proto.Unmarshal(msg.data, snap); err != nil {
		b.log.Warn("ignoring a snapshot message that is not a snapshot", "channel", name, "stream_seq", msg.streamSeq, "err", err)
		return nil, msg.streamSeq, nil
	}
	if snap.GetEpoch() != epoch {
		return nil, msg.streamSeq, nil // written for a history the stream no longer has
	}
	return snap, msg.streamSeq, nil
}

// loadSnapshot reads channel ch's snapshot into its cache.
func (b *Broker) loadSnapshot(ctx context.Context, ch *channel) error {
	ch.mu.Lock()
	epoch := ch.epoch
	ch.mu.Unlock()
	snap, _, err := b.readSnapshot(ctx, ch.name, epoch, fromAnySource)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.setSnapshotLocked(snap)
	return nil
}

// setSnapshotLocked makes snap (nil: none) the cached snapshot of ch and holds its
// history after it. Callers hold ch.mu.
func (ch *channel) setSnapshotLocked(snap *actionsyncv1.Snapshot) {
	ch.snap = snap
	ch.log.Hold(snap.GetSeq())
}

// maxSnapshotBytes is the limit on a snapshot's state: Options.MaxSnapshotBytes, kept
// under what the NATS connection can carry.
func (b *Broker) maxSnapshotBytes() int {
	limit := b.opts.MaxSnapshotBytes
	if mp := int(b.nc.MaxPayload()) - snapshotOverhead; mp > 0 && mp < limit {
		limit = mp
	}
	return limit
}

// PutSnapshot implements broker.Broker.
func (b *Broker) PutSnapshot(ctx context.Context, snap *actionsyncv1.Snapshot) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(snap.GetState()) > b.maxSnapshotBytes() {
		return broker.CheckSnapshot(snap, broker.ChannelView{}, b.maxSnapshotBytes())
	}
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if err := b.checkOpen(); err != nil {
		return err
	}
	ch, err := b.use(ctx, snap.GetChannel())
	if err != nil {
		return err
	}
	defer b.unuse(ch)
	// The head as the stream has it, not as far as this node's feed has brought it: a
	// client may take a snapshot at a seq another node gave it a moment ago.
	if err := b.refresh(ctx, ch, fromLeader); err != nil {
		return err
	}
	subject := b.snapshotSubject(snap.GetChannel())
	for attempt := 1; ; attempt++ {
		ch.mu.Lock()
		epoch, stale := ch.epoch, ch.stale
		ch.mu.Unlock()
		if stale {
			return fmt.Errorf("channel %q: stream lost: %w", ch.name, broker.ErrUnavailable)
		}
		held, last, err := b.readSnapshot(ctx, ch.name, epoch, fromLeader)
		if err != nil {
			return err
		}
		ch.mu.Lock()
		b.trimLocked(ch)
		v := broker.ChannelView{Head: ch.log.Head(), Trimmed: ch.log.Trimmed(), Epoch: epoch, Snapshot: held}
		ch.mu.Unlock()
		if err := broker.CheckSnapshot(snap, v, b.maxSnapshotBytes()); err != nil {
			return err
		}
		snap.Time = timestamppb.New(b.opts.Now())
		data, err := proto.Marshal(snap)
		if err != nil {
			return fmt.Errorf("encode snapshot: %w", err)
		}
		err = b.publishSnapshot(ctx, subject, data, last)
		if isWrongLastSeq(err) && attempt < maxSnapshotAttempts {
			continue // another writer was first: check against what it wrote
		}
		if err != nil {
			return err
		}
		ch.mu.Lock()
		if ch.snap.GetSeq() < snap.GetSeq() {
			ch.setSnapshotLocked(snap)
		}
		ch.mu.Unlock()
		return nil
	}
}

// publishSnapshot stores data as subject's message if the subject's last message is
// still at stream sequence last (0: none).
func (b *Broker) publishSnapshot(ctx context.Context, subject string, data []byte, last uint64) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(hdrExpectedLastSubjSeq, strconv.FormatUint(last, 10))
	if _, err := b.js.PublishMsg(ctx, msg); err != nil {
		if isWrongLastSeq(err) {
			return err
		}
		return b.unavailable("store snapshot on "+subject, err)
	}
	return nil
}

// Snapshot implements broker.Broker. It reads the stream, not the node's cache.
func (b *Broker) Snapshot(ctx context.Context, name string) (*actionsyncv1.Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	snap, _, err := b.readSnapshot(ctx, name, b.Epoch(), fromAnySource)
	if err != nil {
		return nil, err
	}
	if snap == nil {
		return nil, fmt.Errorf("channel %q: %w", name, broker.ErrNoSnapshot)
	}
	return snap, nil
}

// DeleteSnapshot implements broker.Broker: it stores an empty message (deleted) in
// place of the snapshot.
func (b *Broker) DeleteSnapshot(ctx context.Context, name string, seq uint64) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if err := b.checkOpen(); err != nil {
		return 0, err
	}
	subject := b.snapshotSubject(name)
	for attempt := 1; ; attempt++ {
		held, last, err := b.readSnapshot(ctx, name, b.Epoch(), fromLeader)
		if err != nil {
			return 0, err
		}
		if err := broker.CheckDelete(name, held, seq); err != nil {
			return 0, err
		}
		err = b.publishSnapshot(ctx, subject, nil, last)
		if isWrongLastSeq(err) && attempt < maxSnapshotAttempts {
			continue
		}
		if err != nil {
			return 0, err
		}
		b.mu.RLock()
		ch := b.channels[name]
		b.mu.RUnlock()
		if ch != nil {
			ch.mu.Lock()
			if ch.snap.GetSeq() == held.GetSeq() {
				ch.setSnapshotLocked(nil)
			}
			ch.mu.Unlock()
		}
		return held.GetSeq(), nil
	}
}
