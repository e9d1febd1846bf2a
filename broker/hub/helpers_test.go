package hub_test

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/protobuf/proto"
	"strings"
	"sync"
	"testing"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/hub"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// errLost is the error the tests end subscriptions with.
var errLost = fmt.Errorf("stream lost: %w", broker.ErrUnavailable)

// fakeSource is a hub.Source whose storage and deliveries the test drives by hand:
// store makes entries readable, deliver hands them to the channel's topic, so a test
// decides how far deliveries lag the reads. It counts Open and Release per topic.
type fakeSource struct {
	mu       sync.Mutex
	entries  map[string][]*broker.Entry // seq i+1 at index i
	topics   map[string]*hub.Topic      // the attached topic of each channel
	opens    map[*hub.Topic]int
	releases map[*hub.Topic]int
	openErr  error         // Open fails with it
	readErr  error         // Read fails with it
	gate     chan struct{} // Open waits for it to be closed (or for its ctx)
}

// newFakeSource returns an empty source.
func newFakeSource() *fakeSource {
	return &fakeSource{
		entries:  make(map[string][]*broker.Entry),
		topics:   make(map[string]*hub.Topic),
		opens:    make(map[*hub.Topic]int),
		releases: make(map[*hub.Topic]int),
	}
}

// Open implements hub.Source.
func (f *fakeSource) Open(ctx context.Context, name string, t *hub.Topic) (uint64, error) {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens[t]++
	if f.openErr != nil {
		return 0, f.openErr
	}
	f.topics[name] = t
	return uint64(len(f.entries[name])), nil
}

// Release implements hub.Source.
func (f *fakeSource) Release(name string, t *hub.Topic) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases[t]++
	if f.topics[name] == t {
		delete(f.topics, name)
	}
}

// Read implements hub.Source.
func (f *fakeSource) Read(_ context.Context, name string, after uint64, limit int, dst []*broker.Entry) ([]*broker.Entry, hub.View, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readErr != nil {
		return dst, hub.View{}, f.readErr
	}
	es := f.entries[name]
	if after < uint64(len(es)) {
		dst = append(dst, es[after:min(uint64(len(es)), after+uint64(limit))]...)
	}
	return dst, hub.View{Head: uint64(len(es)), Epoch: "epoch"}, nil
}

// store makes n more entries of channel readable, sent by clientID, without delivering
// them.
func (f *fakeSource) store(channel, clientID string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		seq := uint64(len(f.entries[channel]) + 1)
		a := &actionsyncv1.Action{Channel: channel, Seq: seq, Id: fmt.Sprintf("id-%d", seq), ClientId: clientID}
		f.entries[channel] = append(f.entries[channel], broker.NewEntry(a, mustMarshal(a)))
	}
}

// deliver hands the stored entries from..to of channel to its topic in one call, the
// way a backend delivers one publish.
func (f *fakeSource) deliver(t *testing.T, channel string, from, to uint64, clientID string) {
	t.Helper()
	f.mu.Lock()
	top, es := f.topics[channel], f.entries[channel]
	f.mu.Unlock()
	if top == nil || from < 1 || to > uint64(len(es)) {
		t.Fatalf("deliver %s %d..%d: topic %v, %d entries stored", channel, from, to, top, len(es))
	}
	top.Deliver(es[from-1 : to])
}

// topic returns the topic attached to channel (nil if none).
func (f *fakeSource) topic(channel string) *hub.Topic {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.topics[channel]
}

// set changes the source's failure and blocking settings under its lock.
func (f *fakeSource) set(fn func(f *fakeSource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// checkReleased fails the test unless every topic opened successfully has been
// released exactly once, a failed Open was not released, and the hub holds no topic.
func (f *fakeSource) checkReleased(t *testing.T, h *hub.Hub, wantOpens int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.opens) != wantOpens {
		t.Errorf("got %d topics opened, want %d", len(f.opens), wantOpens)
	}
	for top, n := range f.opens {
		if n != 1 {
			t.Errorf("topic of %s: opened %d times, want once", top.Channel(), n)
		}
	}
	for top, n := range f.releases {
		if f.opens[top] == 0 {
			t.Errorf("topic of %s: released %d times, never opened", top.Channel(), n)
		}
	}
	for top := range f.opens {
		if got := f.releases[top]; got != 1 {
			t.Errorf("topic of %s: released %d times, want once", top.Channel(), got)
		}
	}
	if len(f.topics) != 0 {
		t.Errorf("got %d topics still attached, want none", len(f.topics))
	}
	if n := h.Topics(); n != 0 {
		t.Errorf("Hub.Topics: got %d, want 0", n)
	}
}

// checkOpenFailed fails the test unless every Open failed and nothing was released.
func (f *fakeSource) checkOpenFailed(t *testing.T, h *hub.Hub, wantOpens int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.opens) != wantOpens || len(f.releases) != 0 || len(f.topics) != 0 {
		t.Errorf("got %d opened, %d released, %d attached; want %d failed opens and nothing released or attached", len(f.opens), len(f.releases), len(f.topics), wantOpens)
	}
	if n := h.Topics(); n != 0 {
		t.Errorf("Hub.Topics: got %d, want 0", n)
	}
}

// newHub returns a hub over a new fakeSource; the hub is closed when t ends.
func newHub(t *testing.T, opts hub.Options) (*hub.Hub, *fakeSource) {
	t.Helper()
	src := newFakeSource()
	h := hub.New(src, opts)
	t.Cleanup(h.Close)
	return h, src
}

// subscribe returns a new subscription of h, closed when t ends.
func subscribe(t *testing.T, h *hub.Hub, opts broker.SubscribeOptions) broker.Subscription {
	t.Helper()
	sub, err := h.Subscribe(opts)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(sub.Close)
	return sub
}

// add adds channel to sub from pos and fails the test on an error.
func add(t *testing.T, sub broker.Subscription, channel string, pos broker.Position) {
	t.Helper()
	if err := sub.Add(t.Context(), channel, pos); err != nil {
		t.Fatalf("Add(%q, %+v): %v", channel, pos, err)
	}
}

// poll polls sub once for at most maxActions entries and returns the events in the
// notation of summary; it fails the test on an error.
func poll(t *testing.T, sub broker.Subscription, maxActions int) string {
	t.Helper()
	events, err := sub.Poll(nil, maxActions)
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	return summary(events)
}

// summary writes events as "1 2 ready@2 3" (seqs of entries, controls with their seq),
// prefixed with the channel when it is not "ch".
func summary(events []broker.Event) string {
	words := make([]string, len(events))
	for i, ev := range events {
		var w, channel string
		switch {
		case ev.Entry != nil:
			w, channel = fmt.Sprint(ev.Entry.Seq()), ev.Entry.Channel()
		case ev.Control.Kind == broker.ControlReady:
			w, channel = fmt.Sprintf("ready@%d", ev.Control.Seq), ev.Control.Channel
		default:
			w, channel = fmt.Sprintf("reset@%d", ev.Control.Seq), ev.Control.Channel
		}
		if channel != "ch" {
			w = channel + ":" + w
		}
		words[i] = w
	}
	return strings.Join(words, " ")
}

// join concatenates poll results, skipping empty ones.
func join(parts ...string) string {
	var words []string
	for _, p := range parts {
		if p != "" {
			words = append(words, p)
		}
	}
	return strings.Join(words, " ")
}

// wantEnd fails the test unless sub has nothing left and ended with an error matching
// target.
func wantEnd(t *testing.T, sub broker.Subscription, target error) {
	t.Helper()
	events, err := sub.Poll(nil, 100)
	if len(events) != 0 || !errors.Is(err, target) {
		t.Fatalf("Poll: got %q, %v; want nothing and %v", summary(events), err, target)
	}
}

// mustMarshal encodes a.
func mustMarshal(a *actionsyncv1.Action) []byte {
	b, err := proto.Marshal(a)
	if err != nil {
		panic(err)
	}
	return b
}
