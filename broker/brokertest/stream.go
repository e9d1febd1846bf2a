package brokertest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker"
)

// errTimeout is what stream.next returns when no event arrives in time.
var errTimeout = errors.New("no event before the timeout")

// stream reads a subscription one event at a time, the way a subscriber's writer does:
// Poll into a reused buffer and, when nothing is there, wait on Notify. Every wait is
// bounded. A stream is used by one goroutine at a time.
type stream struct {
	sub     broker.Subscription
	max     int            // maxActions per Poll
	wait    time.Duration  // how long next waits for an event
	buf     []broker.Event // reused Poll buffer
	backlog []broker.Event // polled but not yet returned by next
	err     error          // the error the subscription ended with
}

// newStream reads sub polling at most maxActions entries at a time.
func newStream(sub broker.Subscription, maxActions int) *stream {
	return &stream{sub: sub, max: maxActions, wait: waitTimeout}
}

// next returns the next event. Once the subscription has ended and every event before
// the end has been returned, it returns the error the subscription ended with; if no
// event arrives within s.wait it returns errTimeout.
func (s *stream) next() (broker.Event, error) {
	var timer *time.Timer
	for len(s.backlog) == 0 {
		if s.err != nil {
			return broker.Event{}, s.err
		}
		if err := s.poll(); err != nil {
			return broker.Event{}, err
		}
		if len(s.backlog) > 0 || s.err != nil {
			continue
		}
		if timer == nil {
			timer = time.NewTimer(s.wait)
			defer timer.Stop()
		}
		select {
		case <-s.sub.Notify():
		case <-timer.C:
			return broker.Event{}, fmt.Errorf("after %v: %w", s.wait, errTimeout)
		}
	}
	ev := s.backlog[0]
	s.backlog[0] = broker.Event{}
	s.backlog = s.backlog[1:]
	return ev, nil
}

// poll moves what Poll returns now into the backlog and records the error the
// subscription ended with. It returns an error only if Poll broke its contract.
func (s *stream) poll() error {
	var err error
	s.buf, err = s.sub.Poll(s.buf[:0], s.max)
	if n := countEntries(s.buf); n > s.max {
		return fmt.Errorf("Poll(maxActions %d) returned %d entries", s.max, n)
	}
	s.backlog = append(s.backlog, s.buf...)
	clear(s.buf) // don't keep entries alive in the reused buffer
	if err != nil {
		s.err = err
	}
	return nil
}

// countEntries returns how many of events are entries.
func countEntries(events []broker.Event) int {
	n := 0
	for _, ev := range events {
		if ev.Entry != nil {
			n++
		}
	}
	return n
}

// describe returns a short description of ev for failure messages.
func describe(ev broker.Event) string {
	switch {
	case ev.Entry != nil && ev.Control != nil:
		return "event with both entry and control"
	case ev.Entry != nil:
		return fmt.Sprintf("entry %s#%d (id %q, client %q)", ev.Entry.Channel(), ev.Entry.Seq(), ev.Entry.ID(), ev.Entry.ClientID())
	case ev.Control != nil:
		return fmt.Sprintf("%s %s@%d", kindName(ev.Control.Kind), ev.Control.Channel, ev.Control.Seq)
	default:
		return "empty event"
	}
}

// kindName names a control kind.
func kindName(k broker.ControlKind) string {
	switch k {
	case broker.ControlReset:
		return "reset"
	case broker.ControlReady:
		return "ready"
	case broker.ControlSnapshot:
		return "snapshot"
	default:
		return fmt.Sprintf("control(%d)", k)
	}
}

// channelOf returns the channel an event belongs to.
func channelOf(ev broker.Event) string {
	if ev.Entry != nil {
		return ev.Entry.Channel()
	}
	if ev.Control != nil {
		return ev.Control.Channel
	}
	return ""
}

// subscribe returns a new subscription that is closed when t ends.
func subscribe(t *testing.T, b broker.Broker, opts broker.SubscribeOptions) broker.Subscription {
	t.Helper()
	sub, err := b.Subscribe(opts)
	if err != nil {
		t.Fatalf("Subscribe(%+v): %v", opts, err)
	}
	t.Cleanup(sub.Close)
	return sub
}

// follow returns a stream of a new subscription that follows channel from pos.
func follow(t *testing.T, b broker.Broker, opts broker.SubscribeOptions, channel string, pos broker.Position, maxActions int) *stream {
	t.Helper()
	sub := subscribe(t, b, opts)
	add(t, sub, channel, pos)
	return newStream(sub, maxActions)
}

// add adds channel to sub from pos and fails the test on an error.
func add(t *testing.T, sub broker.Subscription, channel string, pos broker.Position) {
	t.Helper()
	if err := sub.Add(t.Context(), channel, pos); err != nil {
		t.Fatalf("Add(%q, %+v): %v", channel, pos, err)
	}
}

// mustNext returns the next event of s and fails the test if there is none.
func mustNext(t *testing.T, s *stream) broker.Event {
	t.Helper()
	ev, err := s.next()
	if err != nil {
		t.Fatalf("next event: %v", err)
	}
	if (ev.Entry == nil) == (ev.Control == nil) {
		t.Fatalf("got %s, want exactly one of entry and control", describe(ev))
	}
	return ev
}

// expectEntry fails the test unless the next event of s is the entry channel#seq, and
// returns it.
func expectEntry(t *testing.T, s *stream, channel string, seq uint64) *broker.Entry {
	t.Helper()
	ev := mustNext(t, s)
	if ev.Entry == nil || ev.Entry.Seq() != seq || ev.Entry.Channel() != channel {
		t.Fatalf("got %s, want entry %s#%d", describe(ev), channel, seq)
	}
	return ev.Entry
}

// expectEntries expects the entries channel#seq for each of seqs, in order.
func expectEntries(t *testing.T, s *stream, channel string, seqs ...uint64) {
	t.Helper()
	for _, seq := range seqs {
		expectEntry(t, s, channel, seq)
	}
}

// expectControl fails the test unless the next event of s is the given control.
func expectControl(t *testing.T, s *stream, kind broker.ControlKind, channel string, seq uint64) {
	t.Helper()
	ev := mustNext(t, s)
	if !isControl(ev, kind, channel, seq) {
		t.Fatalf("got %s, want %s %s@%d with an epoch", describe(ev), kindName(kind), channel, seq)
	}
}

// isControl reports whether ev is the given control, carrying an epoch.
func isControl(ev broker.Event, kind broker.ControlKind, channel string, seq uint64) bool {
	c := ev.Control
	return c != nil && c.Kind == kind && c.Channel == channel && c.Seq == seq && c.Epoch != ""
}

// expectEnd fails the test unless s has no event left and ended with an error matching
// target.
func expectEnd(t *testing.T, s *stream, target error) error {
	t.Helper()
	ev, err := s.next()
	if err == nil {
		t.Fatalf("got %s, want the end of the subscription with %v", describe(ev), target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("subscription ended with %v, want %v", err, target)
	}
	return err
}

// readUntil reads events of s until it has read the entry with id endID and a ready
// control, and returns them all. A subscription still replaying when endID is published
// replays it and only then sends ready, so stopping at endID alone would miss the seam.
// It is safe to call from any goroutine.
func readUntil(s *stream, endID string) ([]broker.Event, error) {
	var events []broker.Event
	ended, ready := false, false
	for !ended || !ready {
		ev, err := s.next()
		if err != nil {
			return events, fmt.Errorf("after %d events (end seen: %v, ready seen: %v): %w", len(events), ended, ready, err)
		}
		events = append(events, ev)
		ended = ended || ev.Entry != nil && ev.Entry.ID() == endID
		ready = ready || ev.Control != nil && ev.Control.Kind == broker.ControlReady
	}
	return events, nil
}

// drainNotify empties sub's Notify channel of a wake-up already pending.
func drainNotify(sub broker.Subscription) {
	for {
		select {
		case <-sub.Notify():
		default:
			return
		}
	}
}

// waitNotify fails the test unless sub's Notify channel receives within waitTimeout.
func waitNotify(t *testing.T, sub broker.Subscription, after string) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case <-sub.Notify():
	case <-timer.C:
		t.Fatalf("Notify did not fire within %v after %s", waitTimeout, after)
	}
}

// checkSeam checks one channel's events, read from a subscription that followed it from
// AfterSeq after (or from the head, if live) without a reset: they must be exactly the
// entries of want with seq > after, in order, with a single ready control placed right
// after the last replayed entry and carrying its seq (or after, if nothing was replayed).
// For a live start the ready control must come first and sets after. want must cover the
// whole range the events span.
func checkSeam(events []broker.Event, after uint64, live bool, want []*broker.Entry) error {
	pos, ready := after, false
	if live {
		if len(events) == 0 || events[0].Control == nil || events[0].Control.Kind != broker.ControlReady {
			return fmt.Errorf("live start: first event is not ready")
		}
	}
	i := 0 // next entry of want to expect
	for i < len(want) && want[i].Seq() <= after {
		i++
	}
	for n, ev := range events {
		switch {
		case ev.Control != nil && ev.Control.Kind == broker.ControlReady:
			if ready {
				return fmt.Errorf("event %d: second ready (%s)", n, describe(ev))
			}
			ready = true
			if live {
				pos = ev.Control.Seq
				for i < len(want) && want[i].Seq() <= pos {
					i++
				}
				continue
			}
			if ev.Control.Seq != pos {
				return fmt.Errorf("event %d: got %s, want ready at %d, the last replayed seq", n, describe(ev), pos)
			}
		case ev.Control != nil:
			return fmt.Errorf("event %d: unexpected %s", n, describe(ev))
		case ev.Entry != nil:
			if i == len(want) {
				return fmt.Errorf("event %d: got %s, want no more entries", n, describe(ev))
			}
			if got, w := ev.Entry.Seq(), want[i].Seq(); got != w {
				return fmt.Errorf("event %d: got %s, want seq %d (a gap or a duplicate)", n, describe(ev), w)
			}
			if got, w := ev.Entry.ID(), want[i].ID(); got != w {
				return fmt.Errorf("event %d: got %s, want id %q", n, describe(ev), w)
			}
			pos = ev.Entry.Seq()
			i++
		default:
			return fmt.Errorf("event %d: empty event", n)
		}
	}
	if !ready {
		return fmt.Errorf("no ready control in %d events", len(events))
	}
	if i != len(want) {
		return fmt.Errorf("missing entries from seq %d on (%d of %d delivered)", want[i].Seq(), i, len(want))
	}
	return nil
}

// fakeClock is a clock that moves only when told to. It is safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// newFakeClock returns a clock that reads now.
func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

// Now returns the clock's time.
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
