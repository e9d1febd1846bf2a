package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"google.golang.org/protobuf/proto"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/history"
	"github.com/actionsync/actionsync/broker/hub"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// channel is this node's cache of one channel: its history as stored in the stream, up
// to the last message the node has applied.
type channel struct {
	name    string
	subject string

	loaded  chan struct{} // closed when the first load has finished
	loadErr error         // set before loaded is closed

	// users counts what holds the channel in the cache (an open topic, a call under
	// way); idleSince is when it last dropped to 0. Both guarded by Broker.mu.
	users     int
	idleSince time.Time

	pubMu sync.Mutex // one Publish at a time per channel on this node

	mu         sync.Mutex
	epoch      string // the stream's epoch when the channel was loaded
	stale      bool   // the stream was lost after the channel was loaded
	log        *history.Log
	snap       *actionsyncv1.Snapshot // the channel's snapshot as last read; nil: none
	lastStream uint64                 // stream sequence of the last message applied; 0: none
	loading    bool                   // the first load is under way: the feed buffers
	buffered   []feedMsg              // what the feed saw while loading
	topic      *hub.Topic             // the channel's fan-out while it has subscribers
	// undelivered holds entries appended to the log and not yet handed to the topic:
	// the feed gathers the messages it has in hand before delivering them in one go.
	undelivered []*broker.Entry

	feedDirty bool // in the feed's list of channels to flush; owned by the feed goroutine
}

// feedFlushEvery is the most messages the feed applies before it delivers what it
// gathered, even while more are waiting in the stream.
const feedFlushEvery = 256

// feedMsg is a stream message as the feed or a read hands it over.
type feedMsg struct {
	streamSeq uint64
	data      []byte
}

// errGap says that a channel's cache missed messages: they were trimmed from the stream
// before this node applied them.
var errGap = errors.New("cache missed messages")

// use returns the channel's cache entry, loading it on first use, and counts one more
// user; call unuse when done.
func (b *Broker) use(ctx context.Context, name string) (*channel, error) {
	b.mu.Lock()
	ch := b.channels[name]
	if ch == nil {
		if len(b.channels) >= b.opts.MaxChannels && !b.evictLocked(b.opts.Now(), true) {
			n := len(b.channels)
			b.mu.Unlock()
			return nil, fmt.Errorf("cache channel %q: %d channels in use on this node: %w", name, n, broker.ErrTooManyChannels)
		}
		ch = &channel{
			name:    name,
			subject: b.opts.SubjectPrefix + "." + encodeToken(name),
			loaded:  make(chan struct{}),
			epoch:   b.Epoch(),
			log:     b.newLog(),
			loading: true,
		}
		b.channels[name] = ch
		b.bySubject[ch.subject] = ch
		ch.users++
		b.mu.Unlock()
		// Registered before loading: the feed buffers what arrives meanwhile, and the
		// load reads everything stored before.
		ch.loadErr = b.load(ctx, ch)
		if ch.loadErr != nil {
			// Out of the map before the waiters wake: one that loads again gets a new entry.
			b.mu.Lock()
			if b.channels[name] == ch {
				delete(b.channels, name)
				delete(b.bySubject, ch.subject)
			}
			b.mu.Unlock()
		}
		close(ch.loaded)
		if ch.loadErr != nil {
			return nil, ch.loadErr
		}
		return ch, nil
	}
	ch.users++
	b.mu.Unlock()
	select {
	case <-ch.loaded:
	case <-ctx.Done():
		b.unuse(ch)
		return nil, ctx.Err()
	}
	if err := ch.loadErr; err != nil {
		b.unuse(ch)
		if ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			return b.use(ctx, name) // the loader's context ended, not ours: load again
		}
		return nil, err
	}
	return ch, nil
}

// unuse drops one user of ch.
func (b *Broker) unuse(ch *channel) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch.users--
	if ch.users == 0 {
		ch.idleSince = b.opts.Now()
	}
}

// evictLocked drops cached channels idle for CacheIdle (or, with any, the one idle the
// longest) and reports whether it dropped one. Callers hold b.mu.
func (b *Broker) evictLocked(now time.Time, any bool) bool {
	var oldest *channel
	evicted := false
	for name, ch := range b.channels {
		if ch.users > 0 {
			continue
		}
		if now.Sub(ch.idleSince) >= b.opts.CacheIdle {
			delete(b.channels, name)
			delete(b.bySubject, ch.subject)
			evicted = true
			continue
		}
		if oldest == nil || ch.idleSince.Before(oldest.idleSince) {
			oldest = ch
		}
	}
	if !evicted && any && oldest != nil {
		delete(b.channels, oldest.name)
		delete(b.bySubject, oldest.subject)
		evicted = true
	}
	return evicted
}

// sweep evicts idle channels from the cache until Close.
func (b *Broker) sweep() {
	defer b.wg.Done()
	t := time.NewTicker(max(b.opts.CacheIdle/2, time.Second))
	defer t.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
			b.mu.Lock()
			b.evictLocked(b.opts.Now(), false)
			b.mu.Unlock()
		}
	}
}

// Channels returns how many channels this node has cached.
func (b *Broker) Channels() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.channels)
}

// load reads the channel's messages from the stream into its cache, then applies what
// the feed buffered meanwhile.
func (b *Broker) load(ctx context.Context, ch *channel) error {
	if err := b.loadSnapshot(ctx, ch); err != nil {
		return err
	}
	msgs, err := b.readSubject(ctx, ch.subject, 0, fromLeader)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, m := range msgs {
		if err := b.applyLocked(ch, m, false); err != nil {
			return fmt.Errorf("load channel %q: %w", ch.name, err)
		}
	}
	for _, m := range ch.buffered {
		if err := b.applyLocked(ch, m, false); err != nil {
			return fmt.Errorf("load channel %q: %w", ch.name, err)
		}
	}
	ch.buffered, ch.loading = nil, false
	return nil
}

// readBatch is how many messages one batched direct get asks for.
const readBatch = 1000

// readFrom says where readSubject learns a subject's last message: from the stream's
// leader, which has every acknowledged message, or from whichever source answers direct
// gets, which costs the leader nothing but may be behind (leaderget.go).
type readFrom int

const (
	// fromLeader: loads, History, and catching up before a write that must know the
	// head.
	fromLeader readFrom = iota
	// fromAnySource: a subscription's start, which only needs to know the head no worse
	// than the feed does and must not send every reconnecting client's request to the
	// leader's API queue.
	fromAnySource
)

// readSubject returns the messages of subject after stream sequence after, in order, up
// to the subject's last message when the read began, which it asks of the stream's
// leader or of any source (readFrom). It reads up to it with batched direct gets
// (orbit.go's jetstreamext.GetBatch: up to readBatch messages per round trip), so a
// channel of 10,000 actions loads in 10 round trips, not 10,000. A batch that comes back
// empty before the last message means either that the messages were trimmed meanwhile
// or that a source behind the stream answered; the leader says which, and gives the
// next message if there is one.
func (b *Broker) readSubject(ctx context.Context, subject string, after uint64, from readFrom) ([]feedMsg, error) {
	last, err := b.lastMsg(ctx, subject, from)
	if err != nil {
		return nil, b.unavailable("read last message of "+subject, err)
	}
	if last == nil || last.streamSeq <= after {
		return nil, nil
	}
	var msgs []feedMsg
	for next := after + 1; next < last.streamSeq; {
		batch, err := jetstreamext.GetBatch(ctx, b.js, b.opts.Stream, readBatch,
			jetstreamext.GetBatchSeq(next), jetstreamext.GetBatchSubject(subject))
		if err != nil {
			return nil, b.unavailable("read "+subject, err)
		}
		got := 0
		for m, err := range batch {
			if errors.Is(err, jetstreamext.ErrNoMessages) {
				break
			}
			if err != nil {
				return nil, b.unavailable("read "+subject, err)
			}
			got++
			next = m.Sequence + 1
			if m.Sequence >= last.streamSeq {
				break
			}
			msgs = append(msgs, feedMsg{streamSeq: m.Sequence, data: m.Data})
		}
		if got > 0 {
			continue
		}
		m, err := b.leaderGet(ctx, b.opts.Stream, msgGetRequest{Seq: next, NextFor: subject})
		if err != nil {
			return nil, b.unavailable("read "+subject, err)
		}
		if m == nil || m.streamSeq >= last.streamSeq {
			break // trimmed meanwhile: the last message stands for the rest
		}
		msgs = append(msgs, *m) // the direct get's source is behind
		next = m.streamSeq + 1
	}
	return append(msgs, *last), nil
}

// lastMsg returns subject's last message (nil: none), from the leader or any source.
func (b *Broker) lastMsg(ctx context.Context, subject string, from readFrom) (*feedMsg, error) {
	if from == fromLeader {
		return b.leaderGet(ctx, b.opts.Stream, msgGetRequest{LastFor: subject})
	}
	return lastMsgOf(ctx, b.stream, subject)
}

// lastMsgOf returns subject's last message in stream (nil: none) with a direct get.
func lastMsgOf(ctx context.Context, stream jetstream.Stream, subject string) (*feedMsg, error) {
	m, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &feedMsg{streamSeq: m.Sequence, data: m.Data}, nil
}

// refresh brings ch up to date with the stream, as the leader (fromLeader) or any source
// (fromAnySource) has it: after a publish lost a race with another node, before History
// or a snapshot's write, or before telling a subscriber that its position is beyond the
// head.
func (b *Broker) refresh(ctx context.Context, ch *channel, from readFrom) error {
	ch.mu.Lock()
	after := ch.lastStream
	ch.mu.Unlock()
	msgs, err := b.readSubject(ctx, ch.subject, after, from)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, m := range msgs {
		if err := b.applyLocked(ch, m, false); err != nil {
			return err
		}
	}
	return nil
}

// applyLocked adds one stream message to the channel's cache and delivers it to the
// channel's topic (with hold: later, at flushLocked), unless the cache already has it.
// Callers hold ch.mu. The feed, refresh and Publish all apply, in stream order each; the
// stream sequence decides who was first.
func (b *Broker) applyLocked(ch *channel, m feedMsg, hold bool) error {
	if m.streamSeq <= ch.lastStream {
		return nil
	}
	a := &actionsyncv1.Action{}
	if err := proto.Unmarshal(m.data, a); err != nil || a.GetSeq() == 0 {
		// Not an action written by actionsync: skip it rather than stop the channel.
		b.log.Warn("skipping a message that is not an action", slog.String("subject", ch.subject), slog.Uint64("stream_seq", m.streamSeq), slog.Any("err", err))
		ch.lastStream = m.streamSeq
		return nil
	}
	e := broker.NewEntry(a, m.data)
	return b.appendLocked(ch, []*broker.Entry{e}, m.streamSeq, hold)
}

// appendLocked appends entries (in seq order) whose last one is stored at stream
// sequence lastStream, skipping those the cache already has, and delivers the new ones.
// A seq past the head means the cache missed messages that the stream no longer has: the
// cache restarts from there and the channel's subscribers are cut off to resume (they
// get a reset). With hold, the new entries wait in ch.undelivered for flushLocked; a
// subscriber that reads them from the log meanwhile skips them when they are delivered
// (the hub's seam allows reads ahead of deliveries). Callers hold ch.mu.
func (b *Broker) appendLocked(ch *channel, entries []*broker.Entry, lastStream uint64, hold bool) error {
	fresh := entries[:0:0]
	for _, e := range entries {
		switch head := ch.log.Head(); {
		case e.Seq() <= head:
			continue
		case e.Seq() > head+1:
			if head != 0 || ch.log.Len() != 0 || ch.lastStream != 0 {
				b.log.Warn("channel cache missed trimmed messages; subscribers resume", slog.String("channel", ch.name), slog.Uint64("head", head), slog.Uint64("seq", e.Seq()))
				ch.log = b.newLog()
				ch.log.Hold(ch.snap.GetSeq())
				clear(ch.undelivered)
				ch.undelivered = ch.undelivered[:0]
				if ch.topic != nil {
					ch.topic.Cut(fmt.Errorf("channel %q: %w: %w", ch.name, errGap, broker.ErrUnavailable))
				}
			}
			ch.log.Start(e.Seq() - 1)
		}
		if err := ch.log.Append(e); err != nil {
			return err
		}
		fresh = append(fresh, e)
	}
	ch.lastStream = max(ch.lastStream, lastStream)
	ch.undelivered = append(ch.undelivered, fresh...)
	if !hold {
		b.flushLocked(ch)
	}
	return nil
}

// flushLocked delivers the entries appended and not yet delivered. Callers hold ch.mu.
func (b *Broker) flushLocked(ch *channel) {
	if len(ch.undelivered) == 0 {
		return
	}
	if ch.topic != nil && !ch.loading {
		ch.topic.Deliver(ch.undelivered)
	}
	clear(ch.undelivered)
	ch.undelivered = ch.undelivered[:0]
}

// onFeed applies one message of the feed to the channel it belongs to, if cached. It
// delivers what it applied once the stream has nothing more for it right now, or every
// feedFlushEvery messages: the actions of one dispatch (or of several) reach each
// subscriber as one batch, as on the node that published them. Messages are waiting
// only while the feed is behind the stream, and then it works through them back to
// back, so holding is bounded by feedFlushEvery messages' work, not by the stream's rate.
func (b *Broker) onFeed(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		b.log.Warn("feed message without metadata", slog.Any("err", err))
		return
	}
	b.mu.RLock()
	ch := b.bySubject[msg.Subject()]
	b.mu.RUnlock()
	if ch != nil {
		m := feedMsg{streamSeq: meta.Sequence.Stream, data: msg.Data()}
		ch.mu.Lock()
		if ch.loading {
			ch.buffered = append(ch.buffered, m)
		} else if err := b.applyLocked(ch, m, true); err != nil {
			b.log.Error("feed: apply", slog.String("channel", ch.name), slog.Any("err", err))
		}
		ch.mu.Unlock()
		if !ch.feedDirty {
			ch.feedDirty = true
			b.feedDirty = append(b.feedDirty, ch)
		}
	}
	b.feedHeld++
	if meta.NumPending == 0 || b.feedHeld >= feedFlushEvery {
		b.flushFeed()
	}
}

// flushFeed delivers what the feed applied. It runs on the feed's goroutine.
func (b *Broker) flushFeed() {
	for _, ch := range b.feedDirty {
		ch.mu.Lock()
		b.flushLocked(ch)
		ch.mu.Unlock()
		ch.feedDirty = false
	}
	clear(b.feedDirty)
	b.feedDirty, b.feedHeld = b.feedDirty[:0], 0
}

// onFeedError logs the feed's errors; the ordered consumer recreates itself after a
// disconnect and resumes after the last message it delivered.
func (b *Broker) onFeedError(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrNoResponders) {
		// The stream may be gone: if it was recreated, the ordered consumer would
		// resume at the old sequence in the new stream and miss messages.
		b.checkStream()
	}
	b.log.Debug("feed", slog.Any("err", err))
}

// unavailable wraps a NATS error of a read or publish as broker.ErrUnavailable, keeping
// context errors as they are.
func (b *Broker) unavailable(what string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrStreamNotFound) {
		b.checkStream() // nobody stores the subject: the stream may be gone
	}
	return fmt.Errorf("%s: %v: %w", what, err, broker.ErrUnavailable)
}

// newLog returns an empty cache of a channel's history, bounded as the options say.
func (b *Broker) newLog() *history.Log {
	return history.NewLogWith(history.Options{Size: b.opts.HistorySize, MaxBytes: b.opts.MaxChannelHistoryBytes})
}
