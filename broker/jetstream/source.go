package jetstream

import (
	"context"
	"fmt"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/hub"
)

// History implements broker.Broker. It reads this node's cache after catching it up
// with the stream, so it holds every action acknowledged (on any node) before the call.
func (b *Broker) History(ctx context.Context, name string, afterSeq uint64, limit int) ([]*broker.Entry, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if err := b.checkOpen(); err != nil {
		return nil, 0, err
	}
	ch, err := b.use(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	defer b.unuse(ch)
	// Catch the cache up with the stream first (one get from the stream's leader when
	// nothing is missing): History then has every action acknowledged before it was
	// called, on any node, not only what this node's feed has brought so far.
	if err := b.refresh(ctx, ch, fromLeader); err != nil {
		return nil, 0, err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	b.trimLocked(ch)
	entries, head, err := ch.log.Page(afterSeq, limit)
	if err != nil {
		return nil, head, fmt.Errorf("channel %q: %w", name, err)
	}
	return entries, head, nil
}

// source is the broker as the hub reads it.
type source struct{ b *Broker }

// Open implements hub.Source: it loads the channel into the cache (if needed) and keeps
// it there while the topic is open.
func (s source) Open(ctx context.Context, name string, t *hub.Topic) (uint64, error) {
	b := s.b
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if err := b.checkOpen(); err != nil {
		return 0, err
	}
	ch, err := b.use(ctx, name)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	b.topics[t] = ch
	b.mu.Unlock()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.topic = t
	// Entries not yet delivered are in the log, below the floor: nobody who joins t
	// needs them delivered.
	clear(ch.undelivered)
	ch.undelivered = ch.undelivered[:0]
	return ch.log.Head(), nil
}

// Release implements hub.Source.
func (s source) Release(name string, t *hub.Topic) {
	b := s.b
	b.mu.Lock()
	ch := b.topics[t]
	delete(b.topics, t)
	b.mu.Unlock()
	if ch == nil {
		return
	}
	ch.mu.Lock()
	if ch.topic == t {
		ch.topic = nil
	}
	ch.mu.Unlock()
	b.unuse(ch) // the use of Open
}

// Read implements hub.Source. A read of the view alone (limit 0), which starts a
// subscription, first catches the cache up with the stream, so that a client resuming
// from a seq another node gave it is not told its position is beyond the head.
func (s source) Read(ctx context.Context, name string, after uint64, limit int, dst []*broker.Entry) ([]*broker.Entry, hub.View, error) {
	b := s.b
	b.mu.RLock()
	ch := b.channels[name]
	b.mu.RUnlock()
	if ch == nil {
		return dst, hub.View{}, fmt.Errorf("channel %q: read before open: %w", name, broker.ErrClosed)
	}
	if limit == 0 {
		// A subscription starts: catch up with the stream, and with snapshots written
		// or deleted on other nodes.
		if err := b.refresh(ctx, ch, fromAnySource); err != nil {
			return dst, hub.View{}, err
		}
		if err := b.loadSnapshot(ctx, ch); err != nil {
			return dst, hub.View{}, err
		}
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	b.trimLocked(ch)
	if ch.stale {
		return dst, hub.View{}, fmt.Errorf("channel %q: stream lost: %w", name, broker.ErrUnavailable)
	}
	return ch.log.After(after, limit, dst), hub.View{Head: ch.log.Head(), Trimmed: ch.log.Trimmed(), Epoch: ch.epoch, Snapshot: ch.snap}, nil
}
