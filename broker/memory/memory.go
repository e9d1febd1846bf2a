// Package memory is the default, zero set-up broker: per-channel seq, a ring-buffer
// history bounded by size and age, dedupe by action id within that history, and bounded
// per-subscriber queues that cut a slow subscriber off instead of blocking anyone.
//
// Everything lives in one process and is lost when it exits; subscribers that resume
// after a restart get a reset.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Defaults for Options.
const (
	DefaultHistorySize = 10_000
	DefaultMaxAge      = 24 * time.Hour
	DefaultQueueSize   = 1_024
	DefaultMaxChannels = 100_000
)

// Options configures a Broker. The zero value of each field means its default.
type Options struct {
	// HistorySize is the most actions kept per channel (default 10,000). It is also the
	// dedupe window: an id is recognised as long as its action is in history.
	HistorySize int
	// MaxAge drops actions older than this from history (default 24h; negative: no age limit).
	MaxAge time.Duration
	// QueueSize is the most actions queued for one subscriber (default 1,024); a
	// subscriber whose queue would overflow is cut off with broker.ErrSlowConsumer.
	QueueSize int
	// MaxChannels is the most channels the broker holds (default 100,000); creating one
	// more fails with broker.ErrTooManyChannels. Channels are kept for the process's life.
	MaxChannels int
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.HistorySize <= 0 {
		o.HistorySize = DefaultHistorySize
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MaxChannels <= 0 {
		o.MaxChannels = DefaultMaxChannels
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Broker is the in-memory broker.Broker.
type Broker struct {
	opts Options

	// Channels are sharded by name so that unrelated channels do not contend on one lock.
	shards   [channelShards]shard
	nChannel atomic.Int64 // channels in all shards, for MaxChannels
	closed   atomic.Bool

	mu   sync.Mutex // guards subs
	subs map[*subscription]struct{}
}

// channelShards is the number of shards of the channel map.
const channelShards = 64

// shard is one part of the channel map.
type shard struct {
	mu       sync.RWMutex
	channels map[string]*channel
}

var _ broker.Broker = (*Broker)(nil)

// New returns an in-memory broker.
func New(opts Options) *Broker {
	b := &Broker{opts: opts.withDefaults(), subs: make(map[*subscription]struct{})}
	for i := range b.shards {
		b.shards[i].channels = make(map[string]*channel)
	}
	return b
}

// shardOf returns the shard that holds the channel name (FNV-1a).
func (b *Broker) shardOf(name string) *shard {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return &b.shards[h%channelShards]
}

// channel is one channel's state; mu guards all of it.
type channel struct {
	name  string
	epoch string // random per channel incarnation: a restarted broker starts new epochs

	mu             sync.Mutex
	history        history
	head           uint64                   // last seq assigned; 0: none yet
	trimmedThrough uint64                   // highest seq dropped from history; 0: none
	byID           map[string]*broker.Entry // dedupe index over history
	subs           []*subscription          // live subscribers
	closed         bool                     // set by Broker.Close
}

// channel returns the named channel, creating it if create is set (nil if not found).
// It fails with ErrClosed or ErrTooManyChannels.
func (b *Broker) channel(name string, create bool) (*channel, error) {
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	sh := b.shardOf(name)
	sh.mu.RLock()
	ch := sh.channels[name]
	sh.mu.RUnlock()
	if ch != nil || !create {
		return ch, nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if ch = sh.channels[name]; ch != nil {
		return ch, nil
	}
	if b.closed.Load() { // checked under the shard lock: Close either sees this channel or we see it closed
		return nil, broker.ErrClosed
	}
	if n := b.nChannel.Add(1); n > int64(b.opts.MaxChannels) {
		b.nChannel.Add(-1)
		return nil, fmt.Errorf("create channel %q: %d channels exist: %w", name, n-1, broker.ErrTooManyChannels)
	}
	ch = &channel{name: name, epoch: newEpoch(), history: newHistory(b.opts.HistorySize), byID: make(map[string]*broker.Entry)}
	sh.channels[name] = ch
	return ch, nil
}

// newEpoch returns a random channel epoch: 16 hex digits.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux; a zero epoch would still be valid
	return hex.EncodeToString(b[:])
}

// trim drops entries older than the broker's MaxAge. Callers hold ch.mu.
func (b *Broker) trim(ch *channel, now time.Time) {
	if b.opts.MaxAge < 0 {
		return
	}
	cutoff := now.Add(-b.opts.MaxAge)
	for e := ch.history.oldest(); e != nil && e.Action.GetTime().AsTime().Before(cutoff); e = ch.history.oldest() {
		ch.drop(ch.history.popOldest())
	}
}

// drop forgets an entry that left history. Callers hold ch.mu.
func (ch *channel) drop(e *broker.Entry) {
	ch.trimmedThrough = e.Seq()
	if ch.byID[e.Action.GetId()] == e {
		delete(ch.byID, e.Action.GetId())
	}
}

// Publish implements broker.Broker.
func (b *Broker) Publish(ctx context.Context, name string, actions []*actionsyncv1.Action) ([]broker.Ack, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch, err := b.channel(name, true)
	if err != nil {
		return nil, err
	}
	now := b.opts.Now()
	ts := timestamppb.New(now)
	// Encode everything but the seq outside the lock; the seq is appended under it.
	// Protobuf allows fields in any order, so the bytes stay a valid Action.
	encoded := make([][]byte, len(actions))
	for i, a := range actions {
		a.Channel, a.Seq, a.Time = name, 0, ts
		// Size caches the sizes, so the marshal does not walk the payload a second time.
		size := proto.Size(a) + protowire.SizeTag(5) + protowire.SizeVarint(1<<40)
		buf, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(make([]byte, 0, size), a)
		if err != nil {
			return nil, fmt.Errorf("encode action %d: %w", i, err)
		}
		encoded[i] = buf
	}

	acks := make([]broker.Ack, len(actions))
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return nil, broker.ErrClosed
	}
	b.trim(ch, now)

	// First pass: find duplicates and conflicts without changing anything, so that a
	// conflict refuses the whole batch.
	var dupOf []int // dupOf[i] = index in actions of the earlier copy, -1: none; nil: no dups in batch
	for i, a := range actions {
		if prev := ch.byID[a.GetId()]; prev != nil {
			if !sameBody(prev.Action, a) {
				return nil, fmt.Errorf("actions[%d].id: %q is seq %d: %w", i, a.GetId(), prev.Seq(), broker.ErrConflict)
			}
			acks[i] = broker.Ack{ID: a.GetId(), Seq: prev.Seq(), Duplicate: true}
			continue
		}
		for j := range i {
			if actions[j].GetId() == a.GetId() && !acks[j].Duplicate {
				if !sameBody(actions[j], a) {
					return nil, fmt.Errorf("actions[%d].id: %q repeats actions[%d]: %w", i, a.GetId(), j, broker.ErrConflict)
				}
				if dupOf == nil {
					dupOf = make([]int, len(actions))
					for k := range dupOf {
						dupOf[k] = -1
					}
				}
				dupOf[i] = j
				acks[i].Duplicate = true
				break
			}
		}
	}

	// Second pass: assign seqs and append to history.
	fresh := make([]*broker.Entry, 0, len(actions))
	for i, a := range actions {
		if acks[i].Duplicate {
			if dupOf != nil && dupOf[i] >= 0 {
				acks[i] = broker.Ack{ID: a.GetId(), Seq: acks[dupOf[i]].Seq, Duplicate: true}
			}
			continue
		}
		ch.head++
		a.Seq = ch.head
		e := &broker.Entry{Action: a, Proto: protowire.AppendVarint(protowire.AppendTag(encoded[i], 5, protowire.VarintType), ch.head)}
		if old := ch.history.push(e); old != nil {
			ch.drop(old)
		}
		ch.byID[a.GetId()] = e
		acks[i] = broker.Ack{ID: a.GetId(), Seq: ch.head}
		fresh = append(fresh, e)
	}
	if len(fresh) == 0 {
		return acks, nil
	}

	// Fan out. Pushing never blocks: a full queue cuts its subscriber off, and cut-off
	// subscribers are dropped from the channel here.
	clientID := actions[0].GetClientId() // one Publish call has one sender
	live := ch.subs[:0]
	for _, s := range ch.subs {
		if s.push(fresh, clientID) {
			live = append(live, s)
		}
	}
	clear(ch.subs[len(live):])
	ch.subs = live
	return acks, nil
}

// sameBody reports whether two actions with the same id carry the same type, payload and meta.
func sameBody(a, b *actionsyncv1.Action) bool {
	return a.GetType() == b.GetType() && proto.Equal(a.GetPayload(), b.GetPayload()) && proto.Equal(a.GetMeta(), b.GetMeta())
}

// History implements broker.Broker.
func (b *Broker) History(ctx context.Context, name string, afterSeq uint64, limit int) ([]*broker.Entry, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	ch, err := b.channel(name, false)
	if err != nil {
		return nil, 0, err
	}
	if ch == nil {
		if afterSeq > 0 {
			return nil, 0, fmt.Errorf("channel %q: after_seq %d, head 0: %w", name, afterSeq, broker.ErrBeyondHead)
		}
		return nil, 0, nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	b.trim(ch, b.opts.Now())
	switch {
	case afterSeq > ch.head:
		return nil, ch.head, fmt.Errorf("channel %q: after_seq %d, head %d: %w", name, afterSeq, ch.head, broker.ErrBeyondHead)
	case afterSeq < ch.trimmedThrough:
		return nil, ch.head, fmt.Errorf("channel %q: history starts after seq %d, asked after %d: %w", name, ch.trimmedThrough, afterSeq, broker.ErrTrimmed)
	}
	out := ch.after(afterSeq, limit, nil, "")
	return out, ch.head, nil
}

// after returns up to limit entries with seq > afterSeq, skipping those sent by skipClient
// (if not empty), appended to dst. Callers hold ch.mu and have checked that afterSeq is
// within [trimmedThrough, head].
func (ch *channel) after(afterSeq uint64, limit int, dst []*broker.Entry, skipClient string) []*broker.Entry {
	oldest := ch.history.oldest()
	if oldest == nil || limit <= 0 {
		return dst
	}
	i := 0
	if afterSeq >= oldest.Seq() {
		i = int(afterSeq - oldest.Seq() + 1) // seqs are contiguous in history
	}
	for n := 0; i < ch.history.len() && n < limit; i++ {
		e := ch.history.at(i)
		if skipClient != "" && e.Action.GetClientId() == skipClient {
			continue
		}
		dst = append(dst, e)
		n++
	}
	return dst
}

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(opts broker.SubscribeOptions) (broker.Subscription, error) {
	s := &subscription{b: b, opts: opts, notify: make(chan struct{}, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	b.subs[s] = struct{}{}
	return s, nil
}

// Close implements broker.Broker.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed.Swap(true) {
		b.mu.Unlock()
		return nil
	}
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	var channels []*channel
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		for _, ch := range sh.channels {
			channels = append(channels, ch)
		}
		sh.mu.RUnlock()
	}
	// Taking each channel's lock waits for the Publish calls under way on it. A channel
	// created after the closed flag was set cannot be used: channel() checks the flag,
	// and Publish and Add check ch.closed under the channel lock.
	for _, ch := range channels {
		ch.mu.Lock()
		ch.subs, ch.closed = nil, true
		ch.mu.Unlock()
	}
	for _, s := range subs {
		s.end(broker.ErrClosed)
	}
	return nil
}
