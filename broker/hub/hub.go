// Package hub is the fan-out half of a broker, shared by every backend: bounded
// per-subscriber queues, Poll and Notify, the slow-consumer cut-off, and the seam between
// a subscriber's replay and its live entries. A backend is storage and ordering only: it
// implements Source (catch-up reads, and attaching a Topic to a channel) and hands each
// channel's new entries, in seq order, to that channel's Topic.
//
// How the seam works. When a subscriber follows a channel, the hub opens the channel's
// Topic (once per channel, however many subscribers). Open returns a floor: every entry
// after it will be delivered to the Topic, every entry up to it can be read. The
// subscriber then reads from its position with Source.Read until it has reached both
// what it read of the head and the last seq the Topic has delivered; at that point,
// under the Topic's lock, it becomes a member and gets every later delivery. Entries
// that a member already read are skipped if they are delivered again, so a backend whose
// reads run ahead of its deliveries (JetStream) keeps the seam without gap or duplicate.
package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// DefaultQueueSize is the default of Options.QueueSize.
const DefaultQueueSize = 1_024

// Source is the storage side of a broker as the hub uses it. All methods are safe for
// concurrent use.
type Source interface {
	// Open attaches t to channel: from now on the backend calls t.Deliver with each new
	// entry of the channel, in seq order, after it is readable with Read. It returns
	// the floor: the channel's head when t was attached, so that every entry after it
	// is delivered to t and every entry up to it can be read. Open is called once per
	// Topic, before any Read for it; it may create the channel, and fails with the
	// broker's errors (broker.ErrClosed, broker.ErrTooManyChannels, ...).
	Open(ctx context.Context, channel string, t *Topic) (floor uint64, err error)
	// Release detaches t from channel, if it is still attached: no subscriber follows
	// the channel through t any more.
	Release(channel string, t *Topic)
	// Read appends to dst up to limit entries of channel with seq > after, in order,
	// and returns it with the channel's view at the time of the read. It appends nothing
	// when after is outside [View.Trimmed, View.Head]. limit 0 reads the view only.
	Read(ctx context.Context, channel string, after uint64, limit int, dst []*broker.Entry) ([]*broker.Entry, View, error)
}

// View is what a Read saw of a channel.
type View struct {
	// Head is the channel's last seq (0: none).
	Head uint64
	// Trimmed is the highest seq no longer readable (0: none): a position before it
	// cannot be resumed.
	Trimmed uint64
	// Epoch names the channel's history; seqs are comparable only within one epoch.
	Epoch string
	// Snapshot is the channel's snapshot (nil: none), in this epoch. It must not be
	// modified.
	Snapshot *actionsyncv1.Snapshot
}

// Options configures a Hub. The zero value of each field means its default.
type Options struct {
	// QueueSize is the most actions queued for one subscriber (default 1,024); a
	// subscriber whose queue would overflow is cut off with broker.ErrSlowConsumer.
	QueueSize int
}

// Hub fans a backend's entries out to subscriptions.
type Hub struct {
	src  Source
	opts Options

	// Topics are sharded by channel name so that unrelated channels do not contend.
	shards [topicShards]topicShard

	mu     sync.Mutex // guards subs and closed
	subs   map[*subscription]struct{}
	closed bool

	replayed atomic.Uint64 // entries handed to subscriptions from the backend's history
}

// topicShards is the number of shards of the topic map.
const topicShards = 64

// topicShard is one part of the topic map.
type topicShard struct {
	mu     sync.Mutex
	topics map[string]*Topic
}

// New returns a hub that reads from src.
func New(src Source, opts Options) *Hub {
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	h := &Hub{src: src, opts: opts, subs: make(map[*subscription]struct{})}
	for i := range h.shards {
		h.shards[i].topics = make(map[string]*Topic)
	}
	return h
}

// shardOf returns the shard that holds the channel name (FNV-1a).
func (h *Hub) shardOf(name string) *topicShard {
	x := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		x = (x ^ uint32(name[i])) * 16777619
	}
	return &h.shards[x%topicShards]
}

// Subscribe returns a new, empty subscription. It fails with broker.ErrClosed after Close.
func (h *Hub) Subscribe(opts broker.SubscribeOptions) (broker.Subscription, error) {
	s := &subscription{h: h, opts: opts, notify: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, broker.ErrClosed
	}
	h.subs[s] = struct{}{}
	return s, nil
}

// Close ends every subscription with broker.ErrClosed and refuses new ones. The backend
// calls it from its own Close, after the publishes under way have finished. It is
// idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	subs := make([]*subscription, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.end(broker.ErrClosed)
	}
}

// EndAll ends every subscription open now with err (wrapping a broker sentinel, such as
// broker.ErrUnavailable), without closing the hub: a backend that lost its storage
// sends its subscribers away to resume later or elsewhere.
func (h *Hub) EndAll(err error) {
	h.mu.Lock()
	subs := make([]*subscription, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.end(err)
	}
}

// Topics returns how many channels have a topic open: channels with at least one
// subscriber.
func (h *Hub) Topics() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		n += len(sh.topics)
		sh.mu.Unlock()
	}
	return n
}

// Stats returns what the hub holds and has done, for metrics: subscriptions open, topics
// (channels with a subscriber), and entries replayed from history so far.
func (h *Hub) Stats() (subscriptions, topics int, replayed uint64) {
	h.mu.Lock()
	subscriptions = len(h.subs)
	h.mu.Unlock()
	return subscriptions, h.Topics(), h.replayed.Load()
}

// acquire returns the open topic of channel, opening it for the first subscriber, and
// counts one more reference to it.
func (h *Hub) acquire(ctx context.Context, name string) (*Topic, error) {
	sh := h.shardOf(name)
	for {
		sh.mu.Lock()
		t := sh.topics[name]
		if t != nil {
			t.refs++
			sh.mu.Unlock()
			select {
			case <-t.opened:
			case <-ctx.Done():
				h.release(t)
				return nil, ctx.Err()
			}
			if t.openErr != nil {
				h.release(t)
				if ctx.Err() == nil && (errors.Is(t.openErr, context.Canceled) || errors.Is(t.openErr, context.DeadlineExceeded)) {
					continue // the opener's context ended, not ours: open it again
				}
				return nil, t.openErr
			}
			return t, nil
		}
		t = &Topic{h: h, name: name, refs: 1, opened: make(chan struct{})}
		sh.topics[name] = t
		sh.mu.Unlock()

		// Open outside the shard lock: a backend may do I/O here.
		floor, err := h.src.Open(ctx, name, t)
		t.mu.Lock()
		t.last = max(t.last, floor)
		t.mu.Unlock()
		t.openErr = err
		if err != nil {
			// A failed topic leaves the map at once: a later Add opens anew.
			sh.mu.Lock()
			if sh.topics[name] == t {
				delete(sh.topics, name)
			}
			sh.mu.Unlock()
		}
		close(t.opened)
		if err != nil {
			h.release(t)
			return nil, err
		}
		return t, nil
	}
}

// release drops one reference to t; the last one removes it and detaches it from the
// backend.
func (h *Hub) release(t *Topic) {
	sh := h.shardOf(t.name)
	sh.mu.Lock()
	t.refs--
	last := t.refs == 0
	if last && sh.topics[t.name] == t {
		delete(sh.topics, t.name)
	}
	sh.mu.Unlock()
	if last {
		<-t.opened // the opener closes it before releasing
		if t.openErr == nil {
			h.src.Release(t.name, t)
		}
	}
}

// Topic is one channel's live fan-out: the subscribers past their replay. A backend
// gets it from Source.Open and calls Deliver with the channel's new entries.
type Topic struct {
	h    *Hub
	name string

	// Set by acquire before opened is closed, read after.
	opened  chan struct{}
	openErr error
	refs    int // guarded by the shard's mu

	mu      sync.Mutex
	last    uint64 // last seq delivered (or the floor)
	members []member
	cut     error // set by Cut: nobody joins any more
	// width is len(members), readable without mu (Subscription.FanoutWidth).
	width atomic.Int64
}

// member is a subscription past its replay of the topic's channel.
type member struct {
	s *subscription
	// skipThrough is the last seq the subscription read in its replay: a delivery
	// of it or of an earlier seq is not passed on.
	skipThrough uint64
}

// Channel returns the topic's channel name.
func (t *Topic) Channel() string { return t.name }

// Subscribers returns how many subscriptions are members of t (0 for a nil topic).
func (t *Topic) Subscribers() int {
	if t == nil {
		return 0
	}
	return int(t.width.Load())
}

// Deliver hands the channel's next entries, in seq order and after every entry
// delivered before, to every member (entries from several senders may come in one
// call). It never blocks on a subscriber: one whose queue would overflow is cut off.
// The backend calls it from one goroutine at a time per channel (under its channel
// lock), so that deliveries keep the channel's order.
func (t *Topic) Deliver(entries []*broker.Entry) {
	if len(entries) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.last = max(t.last, entries[len(entries)-1].Seq())
	live := t.members[:0]
	for _, m := range t.members {
		es := entries
		for len(es) > 0 && es[0].Seq() <= m.skipThrough {
			es = es[1:]
		}
		if len(es) == 0 || m.s.push(es) {
			live = append(live, m)
		}
	}
	clear(t.members[len(live):])
	t.members = live
	t.width.Store(int64(len(live)))
}

// Cut ends the subscription of every member with err and drops them, and retires the
// topic: a subscription added to the channel later gets a new topic (a new Open). A
// backend that cannot continue the channel's order (its view of the channel lost
// entries, or was thrown away) sends the subscribers away to resume, and they get a
// reset if they must. Subscriptions still replaying through t end when they next read
// (the backend's Read fails for them).
func (t *Topic) Cut(err error) {
	sh := t.h.shardOf(t.name)
	sh.mu.Lock()
	if sh.topics[t.name] == t {
		delete(sh.topics, t.name)
	}
	sh.mu.Unlock()
	t.mu.Lock()
	members := t.members
	t.members, t.cut = nil, err
	t.width.Store(0)
	t.mu.Unlock()
	for _, m := range members {
		m.s.end(err)
	}
}

// remove drops s from the members.
func (t *Topic) remove(s *subscription) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := slices.IndexFunc(t.members, func(m member) bool { return m.s == s }); i >= 0 {
		t.members = slices.Delete(t.members, i, i+1)
		t.width.Store(int64(len(t.members)))
	}
}

// wrapChannel adds the channel name to a backend's error.
func wrapChannel(name string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("channel %q: %w", name, err)
}
