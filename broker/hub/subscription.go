package hub

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// subscription is the hub's broker.Subscription.
//
// Lock order: the backend's channel lock, then Topic.mu, then subscription.mu. Hub.mu
// and the topic shards' locks are never held with Topic.mu or subscription.mu.
type subscription struct {
	h      *Hub
	opts   broker.SubscribeOptions
	notify chan struct{} // capacity 1: a pending wake-up

	// ctx is the context of the reads Poll makes; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	scratch []*broker.Entry // Poll's read buffer: only the Poll goroutine uses it

	mu       sync.Mutex
	pending  []broker.Event // live entries and control events, in order
	queued   int            // entries in pending (control events don't count)
	catching []*cursor      // channels still replaying, not yet members of their topic
	names    []string       // every channel added or being added
	topics   []*Topic       // the topics this subscription holds a reference to
	err      error          // why the subscription ended; nil while it runs
	closed   bool           // Close was called
}

// cursor is a replaying channel's position: the last seq handed to the subscriber.
type cursor struct {
	t         *Topic
	after     uint64
	snapshots bool // the position takes snapshots in place of resets
}

var _ broker.Subscription = (*subscription)(nil)

// readContext returns the context of Poll's reads, created on first use.
func (s *subscription) readContext() context.Context {
	s.once.Do(func() { s.ctx, s.cancel = context.WithCancel(context.Background()) })
	return s.ctx
}

// signal wakes the subscriber's writer without blocking.
func (s *subscription) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Notify implements broker.Subscription.
func (s *subscription) Notify() <-chan struct{} { return s.notify }

// push queues live entries. It reports false if the subscription has ended (now or
// before) and should be dropped from the topic. Callers hold the topic's mutex.
func (s *subscription) push(es []*broker.Entry) bool {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	n := len(es)
	if s.opts.ExcludeOwn {
		for _, e := range es {
			if e.ClientID() == s.opts.ClientID {
				n--
			}
		}
		if n == 0 {
			s.mu.Unlock()
			return true
		}
	}
	if s.queued+n > s.h.opts.QueueSize {
		s.err = fmt.Errorf("%d actions queued, limit %d: %w", s.queued, s.h.opts.QueueSize, broker.ErrSlowConsumer)
		s.mu.Unlock()
		s.signal()
		return false
	}
	for _, e := range es {
		if n < len(es) && e.ClientID() == s.opts.ClientID {
			continue // ExcludeOwn
		}
		s.pending = append(s.pending, broker.Event{Entry: e})
	}
	s.queued += n
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
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return broker.ErrClosed
	case s.err != nil:
		err := s.err
		s.mu.Unlock()
		return err
	case slices.Contains(s.names, name):
		s.mu.Unlock()
		return fmt.Errorf("channel %q: %w", name, broker.ErrDuplicateChannel)
	}
	s.names = append(s.names, name) // reserved while the topic opens
	s.mu.Unlock()

	t, view, err := s.open(ctx, name)
	if err != nil {
		s.mu.Lock()
		s.names = slices.DeleteFunc(s.names, func(n string) bool { return n == name })
		s.mu.Unlock()
		return err
	}

	t.mu.Lock()
	s.mu.Lock()
	if t.cut != nil && s.err == nil {
		s.err = t.cut
	}
	if s.closed || s.err != nil {
		err := s.err
		s.mu.Unlock()
		t.mu.Unlock()
		s.h.release(t)
		return err
	}
	s.topics = append(s.topics, t)
	c := &cursor{t: t, after: pos.AfterSeq, snapshots: pos.Snapshots}
	switch {
	case pos.Live:
		c.after = max(view.Head, t.last)
	case pos.AfterSeq > view.Head || pos.AfterSeq < view.Trimmed || pos.Epoch != "" && pos.Epoch != view.Epoch,
		pos.AfterSeq == 0 && c.snapshotIn(view) != nil:
		s.pending = append(s.pending, c.restart(view))
	}
	if c.after >= view.Head && c.after >= t.last {
		s.pending = append(s.pending, s.join(c, view.Epoch))
	} else {
		s.catching = append(s.catching, c)
	}
	s.mu.Unlock()
	t.mu.Unlock()
	s.signal()
	return nil
}

// snapshotIn returns the snapshot of view that c can start from: one c takes (its
// position asked for snapshots) and that history continues. nil if none.
func (c *cursor) snapshotIn(view View) *actionsyncv1.Snapshot {
	snap := view.Snapshot
	if !c.snapshots || snap == nil || snap.GetSeq() < view.Trimmed || snap.GetSeq() > view.Head || snap.GetEpoch() != view.Epoch {
		return nil
	}
	return snap
}

// restart moves c to where its channel starts over when its position cannot be resumed
// (or, with a snapshot, need not be replayed from 0) and returns the control that says
// so: the channel's snapshot when c can take it, else a reset at the head.
func (c *cursor) restart(view View) broker.Event {
	if snap := c.snapshotIn(view); snap != nil {
		c.after = snap.GetSeq()
		return broker.Event{Control: &broker.Control{Kind: broker.ControlSnapshot, Channel: c.t.name, Seq: snap.GetSeq(), Epoch: view.Epoch, Snapshot: snap}}
	}
	c.after = view.Head
	return broker.Event{Control: &broker.Control{Kind: broker.ControlReset, Channel: c.t.name, Seq: view.Head, Epoch: view.Epoch}}
}

// open acquires the channel's topic and reads the channel's view.
func (s *subscription) open(ctx context.Context, name string) (*Topic, View, error) {
	t, err := s.h.acquire(ctx, name)
	if err != nil {
		return nil, View{}, err
	}
	_, view, err := s.h.src.Read(ctx, name, 0, 0, nil)
	if err != nil {
		s.h.release(t)
		return nil, View{}, err
	}
	return t, view, nil
}

// join makes c's subscription a member of c's topic, past its replay, and returns the
// ready marker to queue. Callers hold the topic's and the subscription's mutexes, so no
// delivery can slip between the replay and the membership.
func (s *subscription) join(c *cursor, epoch string) broker.Event {
	c.t.members = append(c.t.members, member{s: s, skipThrough: c.after})
	c.t.width.Store(int64(len(c.t.members)))
	return broker.Event{Control: &broker.Control{Kind: broker.ControlReady, Channel: c.t.name, Seq: c.after, Epoch: epoch}}
}

// Poll implements broker.Subscription. It does not wait for new events, but a channel
// still replaying is read from the backend here, in chunks of at most maxActions.
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
	s.mu.Unlock()

	// Replays come after everything queued: a channel still replaying has nothing
	// queued but its reset.
	for tries := 0; err == nil && n < maxActions; tries++ {
		s.mu.Lock()
		if len(s.catching) == 0 || s.err != nil || tries == len(s.catching) {
			s.mu.Unlock()
			break
		}
		c := s.catching[0]
		s.mu.Unlock()
		var got int
		var moved bool
		buf, got, moved = s.catchUp(c, buf, maxActions-n)
		n += got
		if moved {
			tries = -1 // something happened: every cursor gets another turn
		}
	}
	if len(buf) == start {
		s.mu.Lock()
		err = s.err // it may have ended while catching up
		s.mu.Unlock()
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// catchUp appends up to limit replayed entries of c's channel to buf; when the replay
// has reached the channel's head and everything its topic delivered, it appends the
// ready marker and joins the topic in the same critical section, so the seam has no gap
// and no duplicate. It returns how many entries it appended and whether the cursor
// moved or joined; a cursor that did neither goes to the back of the line.
func (s *subscription) catchUp(c *cursor, buf []broker.Event, limit int) ([]broker.Event, int, bool) {
	entries, view, err := s.h.src.Read(s.readContext(), c.t.name, c.after, limit, s.scratch[:0])
	s.scratch = entries[:0]
	defer clear(entries)
	if err != nil {
		s.end(wrapChannel(c.t.name, err))
		return buf, 0, false
	}
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.cut != nil && s.err == nil {
		s.err = t.cut
		defer s.signal()
	}
	if s.err != nil {
		return buf, 0, false
	}
	before := c.after
	if c.after < view.Trimmed {
		// Publishers overtook the replay and history moved past it.
		buf = append(buf, c.restart(view))
		entries = nil
	}
	n := 0
	for _, e := range entries {
		c.after = e.Seq()
		if s.opts.ExcludeOwn && e.ClientID() == s.opts.ClientID {
			continue
		}
		buf = append(buf, broker.Event{Entry: e})
		n++
	}
	s.h.replayed.Add(uint64(n))
	if c.after >= view.Head && c.after >= t.last {
		s.catching = slices.DeleteFunc(s.catching, func(x *cursor) bool { return x == c })
		return append(buf, s.join(c, view.Epoch)), n, true
	}
	if c.after == before {
		// Nothing to read yet (a backend whose deliveries run ahead of its reads):
		// let the other channels replay meanwhile.
		if i := slices.Index(s.catching, c); i >= 0 {
			s.catching = append(slices.Delete(s.catching, i, i+1), c)
		}
		return buf, n, false
	}
	return buf, n, true
}

// FanoutWidth implements broker.FanoutWidther: the members of the topics s follows,
// itself included.
func (s *subscription) FanoutWidth() int {
	s.mu.Lock()
	topics := s.topics
	s.mu.Unlock()
	n := int64(0)
	for _, t := range topics {
		n += t.width.Load()
	}
	return int(n)
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
	topics := s.topics
	s.pending, s.catching, s.topics, s.queued = nil, nil, nil, 0
	s.mu.Unlock()
	s.readContext()
	s.cancel()
	for _, t := range topics {
		t.remove(s)
		s.h.release(t)
	}
	s.h.mu.Lock()
	delete(s.h.subs, s)
	s.h.mu.Unlock()
	s.signal()
}
