package hub_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/brokertest"
	"github.com/actionsync/actionsync/broker/history"
	"github.com/actionsync/actionsync/broker/hub"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestLagBroker_Conformance runs the conformance suite against a broker whose deliveries
// lag its storage, the case the hub's seam handles by skipping what a member already
// read. It fails if no replay ever reached the head before its delivery: the suite would
// then not have exercised that path.
func TestLagBroker_Conformance(t *testing.T) {
	var stats lagStats
	t.Cleanup(func() {
		// Cleanups run after the parallel subtests.
		t.Logf("%d of %d replay reads reached the head before its delivery", stats.ahead.Load(), stats.reads.Load())
		if stats.ahead.Load() == 0 {
			t.Error("no replay read ran ahead of the deliveries")
		}
	})
	brokertest.Run(t, func(_ *testing.T, cfg brokertest.Config) broker.Broker {
		return newLagBroker(cfg, &stats)
	})
}

// lagStats counts, over every lagBroker that shares it, the replay reads and those that
// read up to the head while the head had not been delivered yet.
type lagStats struct {
	reads, ahead atomic.Int64
}

// lagBroker is a broker.Broker built on the hub whose deliveries lag its storage:
// Publish stores entries and returns, and a goroutine of the broker hands them to the
// channel's topic later, after a random delay. Close delivers everything acknowledged,
// then ends the subscriptions. It is its own hub.Source.
//
// It bends one promise of broker.Broker: Publish returns before its entries are queued
// for the live subscribers. The suite waits for events rather than expecting them at
// once, so it still applies.
type lagBroker struct {
	cfg   brokertest.Config
	hub   *hub.Hub
	stats *lagStats

	mu       sync.Mutex // guards channels and closed
	channels map[string]*lagChannel
	closed   bool

	qmu   sync.Mutex // guards queue; taken under a channel's mu
	queue []lagDelivery
	wake  chan struct{} // capacity 1: the queue has something
	stop  chan struct{} // closed by Close once no Publish can enqueue
	done  chan struct{} // closed when the delivery goroutine returns
}

// lagChannel is one channel; mu guards everything but name and epoch.
type lagChannel struct {
	name, epoch string

	mu        sync.Mutex
	log       *history.Log
	topic     *hub.Topic
	snap      *actionsyncv1.Snapshot
	floor     uint64 // the topic's floor: it gets the entries after it
	delivered uint64 // last seq the delivery goroutine handled
	closed    bool
}

// lagDelivery is one Publish's new entries, waiting for the delivery goroutine.
type lagDelivery struct {
	ch       *lagChannel
	entries  []*broker.Entry
	clientID string
}

var (
	_ broker.Broker = (*lagBroker)(nil)
	_ hub.Source    = (*lagBroker)(nil)
)

// newLagBroker returns a lagBroker configured by cfg (a zero MaxAge: no age limit).
func newLagBroker(cfg brokertest.Config, stats *lagStats) *lagBroker {
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = 10_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b := &lagBroker{
		cfg:      cfg,
		stats:    stats,
		channels: make(map[string]*lagChannel),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	b.hub = hub.New(b, hub.Options{QueueSize: cfg.QueueSize})
	go b.deliverLoop()
	return b
}

// channel returns the named channel, creating it if create is set (nil if not found).
func (b *lagBroker) channel(name string, create bool) (*lagChannel, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, broker.ErrClosed
	}
	ch := b.channels[name]
	if ch == nil && create {
		var epoch [8]byte
		_, _ = rand.Read(epoch[:]) // never fails on Linux
		ch = &lagChannel{name: name, epoch: hex.EncodeToString(epoch[:]), log: history.NewLog(b.cfg.HistorySize)}
		b.channels[name] = ch
	}
	return ch, nil
}

// trim applies MaxAge. Callers hold ch.mu.
func (b *lagBroker) trim(ch *lagChannel) {
	if b.cfg.MaxAge > 0 {
		ch.log.TrimBefore(b.cfg.Now().Add(-b.cfg.MaxAge))
	}
}

// Publish implements broker.Broker: it stores and queues the delivery, without waiting
// for it.
func (b *lagBroker) Publish(ctx context.Context, name string, actions []*actionsyncv1.Action, opts ...broker.PublishOption) ([]broker.Ack, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch, err := b.channel(name, true)
	if err != nil {
		return nil, err
	}
	ts := timestamppb.New(b.cfg.Now())
	encoded := make([][]byte, len(actions))
	if err := broker.EncodeActions(encoded, name, ts, actions); err != nil {
		return nil, err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return nil, broker.ErrClosed
	}
	b.trim(ch)
	if err := broker.NewPublishOptions(opts).CheckSentAfter(name, ch.log.Trimmed(), ch.epoch); err != nil {
		return nil, err
	}
	acks, dupOf, err := ch.log.Plan(actions)
	if err != nil {
		return nil, err
	}
	var fresh []*broker.Entry
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
			return nil, err
		}
		acks[i] = broker.Ack{ID: a.GetId(), Seq: a.Seq}
		fresh = append(fresh, e)
	}
	if len(fresh) > 0 {
		// Queued under the channel lock, so that the queue keeps the channel's order.
		b.qmu.Lock()
		b.queue = append(b.queue, lagDelivery{ch: ch, entries: fresh, clientID: actions[0].GetClientId()})
		b.qmu.Unlock()
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return acks, nil
}

// deliverLoop hands queued entries to their topics, in order, each after a random
// delay; once Close has stopped the publishes it empties the queue and returns.
func (b *lagBroker) deliverLoop() {
	defer close(b.done)
	for {
		d, ok := b.next()
		if !ok {
			select {
			case <-b.wake:
				continue
			case <-b.stop:
				if d, ok = b.next(); !ok {
					return
				}
			}
		}
		if mrand.IntN(4) == 0 {
			time.Sleep(time.Duration(mrand.IntN(50)) * time.Microsecond)
		} else {
			for range mrand.IntN(8) {
				runtime.Gosched()
			}
		}
		d.ch.mu.Lock()
		if es := d.entries; d.ch.topic != nil {
			for len(es) > 0 && es[0].Seq() <= d.ch.floor {
				es = es[1:] // stored before the topic was attached: it reads them
			}
			d.ch.topic.Deliver(es)
		}
		d.ch.delivered = d.entries[len(d.entries)-1].Seq()
		d.ch.mu.Unlock()
	}
}

// next pops the oldest queued delivery.
func (b *lagBroker) next() (lagDelivery, bool) {
	b.qmu.Lock()
	defer b.qmu.Unlock()
	if len(b.queue) == 0 {
		return lagDelivery{}, false
	}
	d := b.queue[0]
	b.queue[0] = lagDelivery{}
	b.queue = b.queue[1:]
	return d, true
}

// History implements broker.Broker.
func (b *lagBroker) History(ctx context.Context, name string, afterSeq uint64, limit int) ([]*broker.Entry, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	ch, err := b.channel(name, false)
	if err != nil || ch == nil {
		if err == nil && afterSeq > 0 {
			err = fmt.Errorf("channel %q: after_seq %d, head 0: %w", name, afterSeq, broker.ErrBeyondHead)
		}
		return nil, 0, err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	b.trim(ch)
	return ch.log.Page(afterSeq, limit)
}

// Subscribe implements broker.Broker.
func (b *lagBroker) Subscribe(opts broker.SubscribeOptions) (broker.Subscription, error) {
	return b.hub.Subscribe(opts)
}

// Close implements broker.Broker: it waits for the publishes under way, delivers every
// acknowledged entry, then closes the hub.
func (b *lagBroker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	channels := make([]*lagChannel, 0, len(b.channels))
	for _, ch := range b.channels {
		channels = append(channels, ch)
	}
	b.mu.Unlock()
	for _, ch := range channels {
		ch.mu.Lock()
		ch.closed = true
		ch.mu.Unlock()
	}
	close(b.stop)
	<-b.done
	b.hub.Close()
	return nil
}

// Open implements hub.Source.
func (b *lagBroker) Open(_ context.Context, name string, t *hub.Topic) (uint64, error) {
	ch, err := b.channel(name, true)
	if err != nil {
		return 0, err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return 0, broker.ErrClosed
	}
	ch.topic, ch.floor = t, ch.log.Head()
	return ch.floor, nil
}

// Release implements hub.Source.
func (b *lagBroker) Release(name string, t *hub.Topic) {
	ch, _ := b.channel(name, false)
	if ch == nil {
		return // closed: the topics go with the broker
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.topic == t {
		ch.topic = nil
	}
}

// Read implements hub.Source.
func (b *lagBroker) Read(_ context.Context, name string, after uint64, limit int, dst []*broker.Entry) ([]*broker.Entry, hub.View, error) {
	ch, err := b.channel(name, false)
	if err == nil && ch == nil {
		err = fmt.Errorf("channel %q: read before open: %w", name, broker.ErrClosed)
	}
	if err != nil {
		return dst, hub.View{}, err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return dst, hub.View{}, broker.ErrClosed
	}
	b.trim(ch)
	n := len(dst)
	dst = ch.log.After(after, limit, dst)
	if limit > 0 {
		b.stats.reads.Add(1)
		if len(dst) > n && dst[len(dst)-1].Seq() == ch.log.Head() && ch.log.Head() > ch.delivered {
			// The reader joins the topic past its last delivery: the deliveries still to
			// come up to the head must be skipped for it.
			b.stats.ahead.Add(1)
		}
	}
	return dst, hub.View{Head: ch.log.Head(), Trimmed: ch.log.Trimmed(), Epoch: ch.epoch, Snapshot: ch.snap}, nil
}

// PutSnapshot implements broker.Broker.
func (b *lagBroker) PutSnapshot(ctx context.Context, snap *actionsyncv1.Snapshot) error {
	ch, err := b.channel(snap.GetChannel(), false)
	if err != nil {
		return err
	}
	maxBytes := cmp.Or(b.cfg.MaxSnapshotBytes, broker.DefaultMaxSnapshotBytes)
	if ch == nil {
		return broker.CheckSnapshot(snap, broker.ChannelView{}, maxBytes)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	b.trim(ch)
	if err := broker.CheckSnapshot(snap, broker.ChannelView{Head: ch.log.Head(), Trimmed: ch.log.Trimmed(), Epoch: ch.epoch, Snapshot: ch.snap}, maxBytes); err != nil {
		return err
	}
	snap.Time = timestamppb.New(b.cfg.Now())
	ch.snap = snap
	ch.log.Hold(snap.GetSeq())
	return nil
}

// Snapshot implements broker.Broker.
func (b *lagBroker) Snapshot(ctx context.Context, name string) (*actionsyncv1.Snapshot, error) {
	ch, err := b.channel(name, false)
	if err != nil {
		return nil, err
	}
	if ch != nil {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		if ch.snap != nil {
			return ch.snap, nil
		}
	}
	return nil, fmt.Errorf("channel %q: %w", name, broker.ErrNoSnapshot)
}

// DeleteSnapshot implements broker.Broker.
func (b *lagBroker) DeleteSnapshot(ctx context.Context, name string, seq uint64) (uint64, error) {
	ch, err := b.channel(name, false)
	if err != nil {
		return 0, err
	}
	if ch == nil {
		return 0, broker.CheckDelete(name, nil, seq)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err := broker.CheckDelete(name, ch.snap, seq); err != nil {
		return 0, err
	}
	deleted := ch.snap.GetSeq()
	ch.snap = nil
	ch.log.Hold(0)
	return deleted, nil
}
