package brokertest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// testExcludeOwn checks SubscribeOptions.ExcludeOwn: the subscriber gets no action
// published with its client id, neither replayed nor live, and every other action in
// order; a subscriber with the same client id that does not opt out gets its own actions
// too (promise 5, echo with identity).
func testExcludeOwn(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "own"
	for i, client := range []string{"me", "other", "me", "me", "other", "me"} {
		publish(t, b, ch, action(client, fmt.Sprintf("history-%d", i)))
	}
	// Seqs 1..6; "other" published 2 and 5; the head, 6, is mine.
	excl := follow(t, b, broker.SubscribeOptions{ClientID: "me", ExcludeOwn: true}, ch, broker.Position{}, 1)
	echo := follow(t, b, broker.SubscribeOptions{ClientID: "me"}, ch, broker.Position{}, 4)
	excludeOthers := follow(t, b, broker.SubscribeOptions{ClientID: "other", ExcludeOwn: true}, ch, broker.Position{AfterSeq: 2}, 4)

	expectEntries(t, excl, ch, 2, 5)
	// Ready says where the replay ended: after the last action sent to the subscriber,
	// no later than the head.
	if ev := mustNext(t, excl); ev.Control == nil || ev.Control.Kind != broker.ControlReady || ev.Control.Seq < 5 || ev.Control.Seq > 6 {
		t.Fatalf("got %s, want ready at 5 or 6", describe(ev))
	}
	expectEntries(t, echo, ch, 1, 2, 3, 4, 5, 6)
	expectControl(t, echo, broker.ControlReady, ch, 6)
	expectEntries(t, excludeOthers, ch, 3, 4, 6)
	expectControl(t, excludeOthers, broker.ControlReady, ch, 6)

	// Live: single actions and batches from both clients.
	publish(t, b, ch, action("me", "live-1"))                         // 7
	publish(t, b, ch, action("other", "live-2"))                      // 8
	publish(t, b, ch, action("me", "live-3"), action("me", "live-4")) // 9, 10
	publish(t, b, ch, action("other", "live-5"), action("other", "live-6"))
	publish(t, b, ch, action("me", "live-7")) // 13
	publish(t, b, ch, action("third", "end")) // 14
	expectEntries(t, excl, ch, 8, 11, 12, 14)
	expectEntries(t, echo, ch, 7, 8, 9, 10, 11, 12, 13, 14)
	expectEntries(t, excludeOthers, ch, 7, 9, 10, 13, 14)
}

// testSlowConsumer checks promise 7: a subscriber that stops polling is cut off once
// its bounded queue is full; Poll hands it what was queued, in order, then
// ErrSlowConsumer. Publishing never blocks on it, other subscribers get everything, and
// the cut-off subscriber can resume from the last seq it got.
func testSlowConsumer(t *testing.T, s suite) {
	const (
		queue = 8
		total = 3 * queue
		ch    = "slow"
	)
	b := s.open(t, Config{QueueSize: queue})
	slow := follow(t, b, broker.SubscribeOptions{ClientID: "slow"}, ch, broker.Position{}, 64)
	expectControl(t, slow, broker.ControlReady, ch, 0)
	fast := follow(t, b, broker.SubscribeOptions{ClientID: "fast"}, ch, broker.Position{}, 64)
	expectControl(t, fast, broker.ControlReady, ch, 0)
	drainNotify(slow.sub)

	var seqs []uint64
	for i := range total {
		ack := publishWithin(t, time.Second, b, ch, action("writer", fmt.Sprintf("w-%d", i)))[0]
		seqs = append(seqs, ack.Seq)
		expectEntry(t, fast, ch, ack.Seq) // fast keeps up
	}
	// A batch too, after the cut-off.
	for _, ack := range publishWithin(t, time.Second, b, ch, action("writer", "batch-0"), action("writer", "batch-1")) {
		seqs = append(seqs, ack.Seq)
		expectEntry(t, fast, ch, ack.Seq)
	}
	waitNotify(t, slow.sub, "the slow subscriber's queue overflowed")

	var got []uint64
	for {
		ev, err := slow.next()
		if err != nil {
			if !errors.Is(err, broker.ErrSlowConsumer) {
				t.Fatalf("slow subscriber: got error %v after %d entries, want %v", err, len(got), broker.ErrSlowConsumer)
			}
			break
		}
		if ev.Entry == nil {
			t.Fatalf("slow subscriber: got %s, want entries", describe(ev))
		}
		got = append(got, ev.Entry.Seq())
	}
	if len(got) == 0 || len(got) > queue {
		t.Fatalf("slow subscriber got %d entries before the cut-off, want 1..%d", len(got), queue)
	}
	for i, seq := range got {
		if seq != seqs[i] {
			t.Fatalf("slow subscriber: got seqs %v, want a prefix of %v", got, seqs)
		}
	}
	// The end is sticky.
	if _, err := slow.next(); !errors.Is(err, broker.ErrSlowConsumer) {
		t.Errorf("Poll after the cut-off: got %v, want %v", err, broker.ErrSlowConsumer)
	}

	entries, _ := history(t, b, ch, 0)
	if fmt.Sprint(seqsOf(entries)) != fmt.Sprint(seqs) {
		t.Errorf("history: got seqs %v, want %v", seqsOf(entries), seqs)
	}
	// Resume where it was cut off.
	resumed := follow(t, b, broker.SubscribeOptions{ClientID: "slow"}, ch, broker.Position{AfterSeq: got[len(got)-1]}, 4)
	expectEntries(t, resumed, ch, seqs[len(got):]...)
	expectControl(t, resumed, broker.ControlReady, ch, seqs[len(seqs)-1])
	last := publish(t, b, ch, action("writer", "after-resume"))[0]
	expectEntry(t, resumed, ch, last.Seq)
	expectEntry(t, fast, ch, last.Seq)
}

// testAddDuplicateChannel checks that adding a channel twice fails with
// ErrDuplicateChannel and leaves the first Add working, with each action delivered once.
func testAddDuplicateChannel(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "twice"
	publishN(t, b, ch, "writer", "w", 2)
	sub := subscribe(t, b, broker.SubscribeOptions{})
	add(t, sub, ch, broker.Position{AfterSeq: 1})
	for _, pos := range []broker.Position{{AfterSeq: 1}, {}, {Live: true}, {AfterSeq: 99}} {
		if err := sub.Add(t.Context(), ch, pos); !errors.Is(err, broker.ErrDuplicateChannel) {
			t.Errorf("second Add(%q, %+v): got %v, want %v", ch, pos, err, broker.ErrDuplicateChannel)
		}
	}
	st := newStream(sub, 8)
	expectEntry(t, st, ch, 2)
	expectControl(t, st, broker.ControlReady, ch, 2)
	seqs := publishN(t, b, ch, "writer", "live", 2)
	expectEntries(t, st, ch, seqs...)
	// Another channel can still be added.
	add(t, sub, "twice-other", broker.Position{})
	expectControl(t, st, broker.ControlReady, "twice-other", 0)
}

// testAddSeveralChannels checks that one subscription follows several channels, each
// from its own position with its own seam (replay, live, reset), and delivers each
// channel's events in that channel's order.
func testAddSeveralChannels(t *testing.T, s suite) {
	b := s.open(t, Config{})
	publishN(t, b, "multi-a", "writer", "a", 5)
	publishN(t, b, "multi-b", "writer", "b", 3)
	publishN(t, b, "multi-d", "writer", "d", 2)
	sub := subscribe(t, b, broker.SubscribeOptions{})
	type follow struct {
		pos       broker.Position
		wantReset uint64 // reset seq; 0: no reset expected
	}
	follows := map[string]follow{
		"multi-a": {pos: broker.Position{AfterSeq: 2}},               // replay 3..5
		"multi-b": {pos: broker.Position{Live: true}},                // ready at 3
		"multi-c": {pos: broker.Position{}},                          // empty channel: ready at 0
		"multi-d": {pos: broker.Position{AfterSeq: 7}, wantReset: 2}, // beyond head
	}
	for _, ch := range []string{"multi-a", "multi-b", "multi-c", "multi-d"} {
		add(t, sub, ch, follows[ch].pos)
	}
	// Published after the Adds and before any Poll: whether these come replayed or
	// live, they must come once, in order.
	for i, ch := range []string{"multi-a", "multi-b", "multi-c", "multi-d", "multi-c", "multi-a"} {
		publish(t, b, ch, action("writer", fmt.Sprintf("after-add-%d", i)))
	}
	for ch := range follows {
		publish(t, b, ch, action("writer", "end"))
	}
	st := newStream(sub, 3)
	got := make(map[string][]broker.Event)
	ended, ready := make(map[string]bool), make(map[string]bool)
	for len(ended) < len(follows) || len(ready) < len(follows) {
		ev := mustNext(t, st)
		ch := channelOf(ev)
		if _, ok := follows[ch]; !ok {
			t.Fatalf("got %s, from a channel not followed", describe(ev))
		}
		got[ch] = append(got[ch], ev)
		if ev.Entry != nil && ev.Entry.ID() == "end" {
			ended[ch] = true
		}
		if ev.Control != nil && ev.Control.Kind == broker.ControlReady {
			ready[ch] = true
		}
	}
	for ch, f := range follows {
		events, after := got[ch], f.pos.AfterSeq
		if f.wantReset != 0 {
			if !isControl(events[0], broker.ControlReset, ch, f.wantReset) {
				t.Errorf("%s: got %s first, want reset at %d", ch, describe(events[0]), f.wantReset)
				continue
			}
			events, after = events[1:], f.wantReset
		}
		want, _ := history(t, b, ch, 0)
		if err := checkSeam(events, after, f.pos.Live, want); err != nil {
			t.Errorf("%s from %+v: %v", ch, f.pos, err)
		}
	}
	// A channel added later gets its own seam too, while the others stay live.
	add(t, sub, "multi-a-again", broker.Position{AfterSeq: 0})
	expectControl(t, st, broker.ControlReady, "multi-a-again", 0)
	seqB := publish(t, b, "multi-b", action("writer", "late"))[0].Seq
	expectEntry(t, st, "multi-b", seqB)
}

// testNotifyAfterPublish checks that Notify fires after a publish to a followed channel,
// for a live subscription and one still replaying.
func testNotifyAfterPublish(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "notify"
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 8)
	expectControl(t, st, broker.ControlReady, ch, 0)
	for i := range 3 {
		drainNotify(st.sub)
		ack := publish(t, b, ch, action("writer", fmt.Sprintf("w-%d", i)))[0]
		waitNotify(t, st.sub, fmt.Sprintf("publish %d", i))
		// Poll directly: the event must be there now, without another wait.
		events, err := st.sub.Poll(nil, 8)
		if err != nil || len(events) != 1 || events[0].Entry == nil || events[0].Entry.Seq() != ack.Seq {
			t.Fatalf("Poll after Notify: got %d events, %v, want entry %d", len(events), err, ack.Seq)
		}
	}
	// A subscription added after the fact is notified that it has something to replay.
	sub := subscribe(t, b, broker.SubscribeOptions{})
	drainNotify(sub)
	add(t, sub, ch, broker.Position{AfterSeq: 1})
	waitNotify(t, sub, "Add with a replay")
	other := newStream(sub, 8)
	expectEntries(t, other, ch, 2, 3)
	expectControl(t, other, broker.ControlReady, ch, 3)
	// And a subscription to another channel is not required to wake up, but must not
	// receive anything.
	unrelated := follow(t, b, broker.SubscribeOptions{}, "notify-unrelated", broker.Position{}, 8)
	expectControl(t, unrelated, broker.ControlReady, "notify-unrelated", 0)
	publish(t, b, ch, action("writer", "w-3"))
	if events, err := unrelated.sub.Poll(nil, 8); err != nil || len(events) != 0 {
		t.Errorf("unrelated subscription: got %d events, %v, want none", len(events), err)
	}
	expectEntry(t, other, ch, 4)
}

// actions is a shorthand to build a batch.
func actions(client string, ids ...string) []*actionsyncv1.Action {
	batch := make([]*actionsyncv1.Action, len(ids))
	for i, id := range ids {
		batch[i] = action(client, id)
	}
	return batch
}
