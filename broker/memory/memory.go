// Package memory is the default, zero set-up broker: per-channel seq, contiguous from 1,
// a ring-buffer history bounded by size and age, and dedupe by action id within that
// history. Fan-out (bounded per-subscriber queues that cut a slow subscriber off instead
// of blocking anyone) is the shared broker/hub.
//
// Everything lives in one process and is lost when it exits; subscribers that resume
// after a restart get a reset (every channel gets a new epoch).
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/history"
	"github.com/actionsync/actionsync/broker/hub"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Defaults for Options.
const (
	DefaultHistorySize = 10_000
	DefaultMaxAge      = 24 * time.Hour
	DefaultQueueSize   = 1_024
	DefaultMaxChannels = 100_000
	// DefaultMaxHistoryBytes bounds all history: sized for a server with 1 GiB of memory.
	DefaultMaxHistoryBytes = 512 << 20
	// DefaultMaxChannelHistoryBytes bounds one channel's history.
	DefaultMaxChannelHistoryBytes = 64 << 20
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
	// more, when no channel is idle enough to evict, fails with
	// broker.ErrTooManyChannels. A channel is idle when it has no subscriber, nothing
	// in history within its window and no snapshot; idle channels are evicted every
	// minute, and at once when the limit is reached.
	MaxChannels int
	// MaxHistoryBytes bounds the history of every channel together, in bytes
	// (broker.Entry.Size; default 512 MiB; negative: no bound): past it the oldest
	// history of any channel is dropped first.
	MaxHistoryBytes int64
	// MaxChannelHistoryBytes bounds one channel's history in bytes (default 64 MiB;
	// negative: no bound): past it the channel's oldest actions are dropped.
	MaxChannelHistoryBytes int
	// MaxSnapshotBytes is the most bytes of state a channel's snapshot may hold
	// (default broker.DefaultMaxSnapshotBytes, 1 MiB).
	MaxSnapshotBytes int
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
	if o.MaxHistoryBytes == 0 {
		o.MaxHistoryBytes = DefaultMaxHistoryBytes
	}
	if o.MaxHistoryBytes < 0 {
		o.MaxHistoryBytes = math.MaxInt64
	}
	if o.MaxChannelHistoryBytes == 0 {
		o.MaxChannelHistoryBytes = DefaultMaxChannelHistoryBytes
	}
	if o.MaxChannelHistoryBytes < 0 {
		o.MaxChannelHistoryBytes = 0 // history.Log: no byte bound
	}
	if o.MaxSnapshotBytes <= 0 {
		o.MaxSnapshotBytes = broker.DefaultMaxSnapshotBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Broker is the in-memory broker.Broker.
type Broker struct {
	opts Options
	hub  *hub.Hub

	// Channels are sharded by name so that unrelated channels do not contend on one lock.
	shards   [channelShards]shard
	nChannel atomic.Int64 // channels in all shards, for MaxChannels
	budget   budget       // the history byte budget across channels
	closed   atomic.Bool
	done     chan struct{} // closed by Close: stops sweep
	swept    chan struct{} // closed when sweep has returned
}

// channelShards is the number of shards of the channel map.
const channelShards = 64

// shard is one part of the channel map.
type shard struct {
	mu       sync.RWMutex
	channels map[string]*channel
}

var (
	_ broker.Broker = (*Broker)(nil)
	_ hub.Source    = source{}
)

// New returns an in-memory broker.
func New(opts Options) *Broker {
	b := &Broker{opts: opts.withDefaults(), done: make(chan struct{}), swept: make(chan struct{})}
	b.budget.max = b.opts.MaxHistoryBytes
	for i := range b.shards {
		b.shards[i].channels = make(map[string]*channel)
	}
	b.hub = hub.New(source{b}, hub.Options{QueueSize: b.opts.QueueSize})
	go b.sweep()
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

	mu      sync.Mutex
	log     *history.Log
	snap    *actionsyncv1.Snapshot // the channel's snapshot; nil: none
	topic   *hub.Topic             // the channel's fan-out while it has subscribers
	closed  bool                   // set by Broker.Close
	evicted bool                   // dropped from the map by evictIdle: look it up again
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
		// The limit counts live channels: make room by evicting idle ones first. That
		// takes every shard's lock, so this shard's is released meanwhile.
		sh.mu.Unlock()
		evicted := b.evictIdle(b.opts.Now())
		sh.mu.Lock()
		if evicted == 0 {
			return nil, fmt.Errorf("create channel %q: %d channels in use: %w", name, n-1, broker.ErrTooManyChannels)
		}
		if ch = sh.channels[name]; ch != nil {
			return ch, nil
		}
		if b.nChannel.Add(1) > int64(b.opts.MaxChannels) {
			b.nChannel.Add(-1)
			return nil, fmt.Errorf("create channel %q: %d channels in use: %w", name, n-1, broker.ErrTooManyChannels)
		}
	}
	ch = &channel{name: name, epoch: newEpoch(), log: history.NewLogWith(history.Options{
		Size: b.opts.HistorySize, MaxBytes: b.opts.MaxChannelHistoryBytes, OnDrop: b.budget.dropped,
	})}
	sh.channels[name] = ch
	return ch, nil
}

// lock returns the named channel with its mutex held, creating it if create is set
// (nil, unlocked, if not found). A channel evicted between the lookup and the lock is
// looked up again: whoever holds a live channel's lock can use it.
func (b *Broker) lock(name string, create bool) (*channel, error) {
	for {
		ch, err := b.channel(name, create)
		if err != nil || ch == nil {
			return nil, err
		}
		ch.mu.Lock()
		if !ch.evicted {
			return ch, nil
		}
		ch.mu.Unlock()
	}
}

// evictIdle drops the channels nobody needs: no subscriber on this broker, nothing left
// in history within its window (count and age), and no snapshot. Its head seq goes with
// it: a client that resumes it later gets a reset (the channel is created again, with a
// new epoch). It returns how many it dropped.
func (b *Broker) evictIdle(now time.Time) int {
	n := 0
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for name, ch := range sh.channels {
			ch.mu.Lock()
			b.trim(ch, now)
			if ch.topic == nil && ch.log.Len() == 0 && ch.snap == nil && !ch.closed {
				ch.evicted = true
				delete(sh.channels, name)
				b.nChannel.Add(-1)
				n++
			}
			ch.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	return n
}

// sweepInterval is how often the broker evicts idle channels.
const sweepInterval = time.Minute

// sweep evicts idle channels every sweepInterval until Close.
func (b *Broker) sweep() {
	defer close(b.swept)
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
			b.evictIdle(b.opts.Now())
		}
	}
}

// newEpoch returns a random channel epoch: 16 hex digits.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux; a zero epoch would still be valid
	return hex.EncodeToString(b[:])
}

// trim drops entries older than the broker's MaxAge. Callers hold ch.mu.
func (b *Broker) trim(ch *channel, now time.Time) {
	if b.opts.MaxAge >= 0 {
		ch.log.TrimBefore(now.Add(-b.opts.MaxAge))
	}
}

// Publish implements broker.Broker.
func (b *Broker) Publish(ctx context.Context, name string, actions []*actionsyncv1.Action, opts ...broker.PublishOption) ([]broker.Ack, error) {
	o := broker.NewPublishOptions(opts)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	now := b.opts.Now()
	ts := timestamppb.New(now)
	// Encode everything but the seq outside the lock; the seq is appended under it.
	encoded := make([][]byte, len(actions))
	if err := broker.EncodeActions(encoded, name, ts, actions); err != nil {
		return nil, err
	}

	ch, err := b.lock(name, true)
	if err != nil {
		return nil, err
	}
	acks, err := b.publishLocked(ch, actions, encoded, now, o)
	ch.mu.Unlock()
	// Over the history byte budget: the oldest history of any channel goes, with no
	// channel lock held.
	if b.budget.total.Load() > b.budget.max {
		b.enforceBudget()
	}
	return acks, err
}

// publishLocked is Publish under ch's lock.
func (b *Broker) publishLocked(ch *channel, actions []*actionsyncv1.Action, encoded [][]byte, now time.Time, o broker.PublishOptions) ([]broker.Ack, error) {
	name := ch.name
	if ch.closed {
		return nil, broker.ErrClosed
	}
	b.trim(ch, now)
	if err := o.CheckSentAfter(name, ch.log.Trimmed(), ch.epoch); err != nil {
		return nil, err
	}
	// Check every id first, so that a conflict refuses the whole batch.
	acks, dupOf, err := ch.log.Plan(actions)
	if err != nil {
		return nil, err
	}
	// Then assign seqs and append to history.
	fresh := make([]*broker.Entry, 0, len(actions))
	for i, a := range actions {
		if acks[i].Duplicate {
			if dupOf != nil && dupOf[i] >= 0 {
				acks[i].Seq = acks[dupOf[i]].Seq
			}
			continue
		}
		a.Seq = ch.log.Head() + 1
		e := broker.NewEntry(a, broker.AppendSeq(encoded[i], a.Seq))
		if err := ch.log.Append(e); err != nil {
			return nil, err // cannot happen: the seq follows the head
		}
		b.budget.add(ch, e)
		acks[i] = broker.Ack{ID: a.GetId(), Seq: a.Seq}
		fresh = append(fresh, e)
	}
	// Fan out, under the channel lock so that deliveries keep the channel's order.
	if ch.topic != nil {
		ch.topic.Deliver(fresh)
	}
	return acks, nil
}

// History implements broker.Broker.
func (b *Broker) History(ctx context.Context, name string, afterSeq uint64, limit int) ([]*broker.Entry, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	ch, err := b.lock(name, false)
	if err != nil {
		return nil, 0, err
	}
	if ch == nil {
		if afterSeq > 0 {
			return nil, 0, fmt.Errorf("channel %q: after_seq %d, head 0: %w", name, afterSeq, broker.ErrBeyondHead)
		}
		return nil, 0, nil
	}
	defer ch.mu.Unlock()
	b.trim(ch, b.opts.Now())
	entries, head, err := ch.log.Page(afterSeq, limit)
	if err != nil {
		return nil, head, fmt.Errorf("channel %q: %w", name, err)
	}
	return entries, head, nil
}

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(opts broker.SubscribeOptions) (broker.Subscription, error) {
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	return b.hub.Subscribe(opts)
}

// Close implements broker.Broker.
func (b *Broker) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	close(b.done)
	<-b.swept
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
	// and Publish and the hub's reads check ch.closed under the channel lock.
	for _, ch := range channels {
		ch.mu.Lock()
		ch.closed, ch.topic = true, nil
		ch.mu.Unlock()
	}
	b.hub.Close()
	return nil
}

// source is the broker as the hub reads it.
type source struct{ b *Broker }

// Open implements hub.Source: it creates the channel if needed.
func (s source) Open(ctx context.Context, name string, t *hub.Topic) (uint64, error) {
	ch, err := s.b.lock(name, true)
	if err != nil {
		return 0, err
	}
	defer ch.mu.Unlock()
	if ch.closed {
		return 0, broker.ErrClosed
	}
	ch.topic = t
	return ch.log.Head(), nil
}

// Release implements hub.Source.
func (s source) Release(name string, t *hub.Topic) {
	ch, _ := s.b.lock(name, false)
	if ch == nil {
		return
	}
	defer ch.mu.Unlock()
	if ch.topic == t {
		ch.topic = nil
	}
}

// Read implements hub.Source.
func (s source) Read(ctx context.Context, name string, after uint64, limit int, dst []*broker.Entry) ([]*broker.Entry, hub.View, error) {
	ch, err := s.b.lock(name, false)
	if err != nil {
		return dst, hub.View{}, err
	}
	if ch == nil {
		return dst, hub.View{}, fmt.Errorf("channel %q: read before open: %w", name, broker.ErrClosed)
	}
	defer ch.mu.Unlock()
	if ch.closed {
		return dst, hub.View{}, broker.ErrClosed
	}
	s.b.trim(ch, s.b.opts.Now())
	return ch.log.After(after, limit, dst), hub.View{Head: ch.log.Head(), Trimmed: ch.log.Trimmed(), Epoch: ch.epoch, Snapshot: ch.snap}, nil
}

// Channels returns how many channels the broker holds.
func (b *Broker) Channels() int { return int(b.nChannel.Load()) }

// Stats implements broker.StatsReporter.
func (b *Broker) Stats() broker.Stats {
	subs, _, replayed := b.hub.Stats()
	return broker.Stats{Channels: b.Channels(), Subscriptions: subs, Replayed: replayed}
}

// ListChannels implements broker.ChannelLister. It locks one channel at a time.
func (b *Broker) ListChannels(prefix string, limit int) ([]broker.ChannelStats, int) {
	var list []broker.ChannelStats
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		chans := make([]*channel, 0, len(sh.channels))
		for name, ch := range sh.channels {
			if strings.HasPrefix(name, prefix) {
				chans = append(chans, ch)
			}
		}
		sh.mu.RUnlock()
		for _, ch := range chans {
			ch.mu.Lock()
			st := broker.ChannelStats{Channel: ch.name, Subscribers: ch.topic.Subscribers(), Epoch: ch.epoch,
				HeadSeq: ch.log.Head(), FirstSeq: ch.log.First(), Actions: ch.log.Len(), HistoryBytes: ch.log.Bytes(), SnapshotSeq: ch.snap.GetSeq()}
			ch.mu.Unlock()
			list = append(list, st)
		}
	}
	return broker.TopChannels(list, limit), len(list)
}
