package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/actionsync/actionsync/broker"
)

// subscription is the in-memory broker.Subscription.
//
// Lock order: channel.mu, then subscription.mu. Broker.mu is never held with either.
type subscription struct {
	b      *Broker
	opts   broker.SubscribeOptions
	notify chan struct{} // capacity 1: a pending wake-up

	mu       sync.Mutex
	pending  []broker.Event // live entries and control events, in order
	queued   int            // entries in pending (control events don't count)
	catching []*cursor      // channels still replaying, not yet registered with their channel
	channels []*channel     // every channel added
	err      error          // why the subscription ended; nil while it runs
	closed   bool           // Close was called
}

// cursor is a replaying channel's position: the last seq handed to the subscriber.
type cursor struct {
	ch    *channel
	after uint64
}

var _ broker.Subscription = (*subscription)(nil)

// signal wakes the subscriber's writer without blocking.
func (s *subscription) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Notify implements broker.Subscription.
func (s *subscription) Notify() <-chan struct{} { return s.notify }

// push queues live entries sent by clientID. It reports false if the subscription has
// ended (now or before) and should be dropped from the channel. Callers hold the
// channel's mutex.
func (s *subscription) push(es []*broker.Entry, clientID string) bool {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	if s.opts.ExcludeOwn && clientID == s.opts.ClientID {
		s.mu.Unlock()
		return true
	}
	if s.queued+len(es) > s.b.opts.QueueSize {
		s.err = fmt.Errorf("%d actions queued, limit %d: %w", s.queued, s.b.opts.QueueSize, broker.ErrSlowConsumer)
		s.mu.Unlock()
		s.signal()
		return false
	}
	for _, e := range es {
		s.pending = append(s.pending, broker.Event{Entry: e})
	}
	s.queued += len(es)
	s.mu.Unlock()
	s.signal()
	return true
}

// end stops the subscription with err unless it has already ended.
func (s *subscription) end(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.signal()
}

// Add implements broker.Subscription.
func (s *subscription) Add(ctx context.Context, name string, pos broker.Position) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch, err := s.b.channel(name, true)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || ch.closed:
		return broker.ErrClosed
	case s.err != nil:
		return s.err
	case slices.Contains(s.channels, ch):
		return fmt.Errorf("channel %q: %w", name, broker.ErrDuplicateChannel)
	}
	s.channels = append(s.channels, ch)
	s.b.trim(ch, s.b.opts.Now())
	switch {
	case pos.Live:
		s.goLive(ch)
	case pos.AfterSeq > ch.head || pos.AfterSeq < ch.trimmedThrough || pos.Epoch != "" && pos.Epoch != ch.epoch:
		s.pending = append(s.pending, broker.Event{Control: &broker.Control{Kind: broker.ControlReset, Channel: name, Seq: ch.head, Epoch: ch.epoch}})
		s.goLive(ch)
	case pos.AfterSeq == ch.head:
		s.goLive(ch)
	default:
		s.catching = append(s.catching, &cursor{ch: ch, after: pos.AfterSeq})
	}
	s.signal()
	return nil
}

// goLive queues the ready marker for ch at its head and registers for live entries.
// Callers hold ch.mu and s.mu, so no entry can slip between the two.
func (s *subscription) goLive(ch *channel) {
	s.pending = append(s.pending, broker.Event{Control: &broker.Control{Kind: broker.ControlReady, Channel: ch.name, Seq: ch.head, Epoch: ch.epoch}})
	ch.subs = append(ch.subs, s)
}

// Poll implements broker.Subscription.
func (s *subscription) Poll(buf []broker.Event, maxActions int) ([]broker.Event, error) {
	start := len(buf)
	s.mu.Lock()
	n, take := 0, 0
	for ; take < len(s.pending); take++ {
		if s.pending[take].Entry != nil {
			if n == maxActions {
				break
			}
			n++
		}
	}
	buf = append(buf, s.pending[:take]...)
	rest := copy(s.pending, s.pending[take:])
	clear(s.pending[rest:])
	s.pending = s.pending[:rest]
	s.queued -= n
	err := s.err
	var c *cursor
	if err == nil && n < maxActions && len(s.catching) > 0 {
		c = s.catching[0]
	}
	s.mu.Unlock()

	if c != nil {
		buf = s.catchUp(c, buf, maxActions-n)
	}
	if len(buf) == start && err != nil {
		return buf, err
	}
	return buf, nil
}

// catchUp appends up to limit replayed entries of c's channel to buf; when the replay
// reaches the head it appends the ready marker and registers for live entries in the same
// critical section, so the seam has no gap and no duplicate.
func (s *subscription) catchUp(c *cursor, buf []broker.Event, limit int) []broker.Event {
	ch := c.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || ch.closed {
		return buf
	}
	s.b.trim(ch, s.b.opts.Now())
	if c.after < ch.trimmedThrough {
		// Publishers overtook the replay and history moved past it.
		buf = append(buf, broker.Event{Control: &broker.Control{Kind: broker.ControlReset, Channel: ch.name, Seq: ch.head, Epoch: ch.epoch}})
		c.after = ch.head
	}
	skip := ""
	if s.opts.ExcludeOwn {
		skip = s.opts.ClientID
	}
	if oldest := ch.history.oldest(); oldest != nil && c.after < ch.head {
		i := int(c.after + 1 - oldest.Seq()) // seqs are contiguous in history
		for n := 0; i < ch.history.len() && n < limit; i++ {
			e := ch.history.at(i)
			c.after = e.Seq()
			if skip != "" && e.Action.GetClientId() == skip {
				continue
			}
			buf = append(buf, broker.Event{Entry: e})
			n++
		}
	}
	if c.after == ch.head {
		s.catching = slices.DeleteFunc(s.catching, func(x *cursor) bool { return x == c })
		buf = append(buf, broker.Event{Control: &broker.Control{Kind: broker.ControlReady, Channel: ch.name, Seq: ch.head, Epoch: ch.epoch}})
		ch.subs = append(ch.subs, s)
	}
	return buf
}

// Close implements broker.Subscription.
func (s *subscription) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if s.err == nil {
		s.err = fmt.Errorf("subscription closed: %w", broker.ErrClosed)
	}
	channels := s.channels
	s.pending, s.catching, s.queued = nil, nil, 0
	s.mu.Unlock()
	for _, ch := range channels {
		ch.mu.Lock()
		if i := slices.Index(ch.subs, s); i >= 0 {
			ch.subs = slices.Delete(ch.subs, i, i+1)
		}
		ch.mu.Unlock()
	}
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	s.signal()
}
