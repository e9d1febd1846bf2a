package hub_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/hub"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestTopic_Cut checks that Cut ends the topic's members with the given error, after
// what they had queued, and retires the topic: later deliveries to it reach nobody, a
// subscription still replaying through it ends at its next read, a subscription added
// later gets a new topic, and other channels go on.
func TestTopic_Cut(t *testing.T) {
	t.Parallel()
	h, src := newHub(t, hub.Options{})
	a := subscribe(t, h, broker.SubscribeOptions{})
	b := subscribe(t, h, broker.SubscribeOptions{})
	other := subscribe(t, h, broker.SubscribeOptions{}) // follows another channel only
	add(t, a, "ch", broker.Position{})
	add(t, b, "ch", broker.Position{})
	add(t, other, "other", broker.Position{})
	for _, sub := range []broker.Subscription{a, b} {
		if got := poll(t, sub, 100); got != "ready@0" {
			t.Fatalf("got %q, want ready@0", got)
		}
	}
	if got := poll(t, other, 100); got != "other:ready@0" {
		t.Fatalf("other: got %q, want other:ready@0", got)
	}
	src.store("ch", "writer", 3)
	src.deliver(t, "ch", 1, 1, "writer") // queued for a and b, not polled
	replaying := subscribe(t, h, broker.SubscribeOptions{})
	add(t, replaying, "ch", broker.Position{})
	if got := poll(t, replaying, 1); got != "1" {
		t.Fatalf("replaying: got %q, want 1", got)
	}

	cut := src.topic("ch")
	cut.Cut(errLost)
	if n := h.Topics(); n != 1 {
		t.Errorf("Hub.Topics after Cut: got %d, want 1 (other)", n)
	}
	src.deliver(t, "ch", 2, 3, "writer") // to the cut topic: reaches nobody
	for name, sub := range map[string]broker.Subscription{"a": a, "b": b} {
		if got := poll(t, sub, 100); got != "1" {
			t.Errorf("%s after Cut: got %q, want what was queued, 1", name, got)
		}
		wantEnd(t, sub, errLost)
		if err := sub.Add(t.Context(), "later", broker.Position{}); !errors.Is(err, errLost) {
			t.Errorf("%s: Add after Cut: got %v, want %v", name, err, errLost)
		}
	}
	// Within two Polls: the first one that finds the cut may return nothing and no error
	// (see TestTopic_Cut_EndsReplayingAtOnce).
	var events []broker.Event
	var err error
	for range 2 {
		if events, err = replaying.Poll(events, 100); err != nil {
			break
		}
	}
	if len(events) != 0 || !errors.Is(err, errLost) {
		t.Errorf("replaying after Cut: got %q, %v; want nothing and %v", summary(events), err, errLost)
	}

	later := subscribe(t, h, broker.SubscribeOptions{})
	add(t, later, "ch", broker.Position{})
	if src.topic("ch") == cut {
		t.Fatal("Add after Cut: got the cut topic, want a new one")
	}
	got := poll(t, later, 100)
	src.store("ch", "writer", 1)
	src.deliver(t, "ch", 4, 4, "writer")
	if got, want := join(got, poll(t, later, 100)), "1 2 3 ready@3 4"; got != want {
		t.Errorf("Add after Cut: got %q, want %q", got, want)
	}
	src.store("other", "writer", 1)
	src.deliver(t, "other", 1, 1, "writer")
	if got := poll(t, other, 100); got != "other:1" {
		t.Errorf("other channel after Cut: got %q, want other:1", got)
	}

	for _, sub := range []broker.Subscription{a, b, replaying, later, other} {
		sub.Close()
	}
	src.checkReleased(t, h, 3) // the cut topic, its successor, other
}

// TestTopic_Cut_EndsReplayingAtOnce checks the broker.Subscription contract for a
// subscription replaying through a topic that is cut: Notify fires for the end, and the
// Poll that finds the cut returns the error, nothing being left.
func TestTopic_Cut_EndsReplayingAtOnce(t *testing.T) {
	t.Parallel()
	h, src := newHub(t, hub.Options{})
	add(t, subscribe(t, h, broker.SubscribeOptions{}), "ch", broker.Position{})
	src.store("ch", "writer", 3)
	replaying := subscribe(t, h, broker.SubscribeOptions{})
	add(t, replaying, "ch", broker.Position{})
	if got := poll(t, replaying, 1); got != "1" {
		t.Fatalf("got %q, want 1", got)
	}
	for len(replaying.Notify()) > 0 {
		<-replaying.Notify() // the wake-ups so far: the writer has had them
	}
	src.topic("ch").Cut(errLost)
	if events, err := replaying.Poll(nil, 100); len(events) != 0 || !errors.Is(err, errLost) {
		t.Errorf("first Poll after Cut: got %q, %v; want nothing and %v", summary(events), err, errLost)
	}
	select {
	case <-replaying.Notify():
	default:
		t.Error("no wake-up for the end of the subscription")
	}
}

// TestHub_EndAll checks that EndAll ends every subscription, live, replaying or idle,
// with the given error after what each had queued, while the hub stays open: a new
// subscription works, on the same topic, and all topics go once every subscription is
// closed.
func TestHub_EndAll(t *testing.T) {
	t.Parallel()
	h, src := newHub(t, hub.Options{})
	live := subscribe(t, h, broker.SubscribeOptions{})
	add(t, live, "ch", broker.Position{})
	src.store("ch", "writer", 3)
	src.deliver(t, "ch", 1, 3, "writer")
	replaying := subscribe(t, h, broker.SubscribeOptions{})
	add(t, replaying, "ch", broker.Position{})
	if got := poll(t, replaying, 1); got != "1" {
		t.Fatalf("replaying: got %q, want 1", got)
	}
	idle := subscribe(t, h, broker.SubscribeOptions{})

	h.EndAll(errLost)
	if got := poll(t, live, 100); got != "ready@0 1 2 3" {
		t.Errorf("live after EndAll: got %q, want what was queued, ready@0 1 2 3", got)
	}
	for name, sub := range map[string]broker.Subscription{"live": live, "replaying": replaying, "idle": idle} {
		select {
		case <-sub.Notify():
		default:
			t.Errorf("%s: no wake-up after EndAll", name)
		}
		wantEnd(t, sub, errLost)
		if err := sub.Add(t.Context(), "later", broker.Position{}); !errors.Is(err, errLost) {
			t.Errorf("%s: Add after EndAll: got %v, want %v", name, err, errLost)
		}
	}

	fresh := subscribe(t, h, broker.SubscribeOptions{})
	add(t, fresh, "ch", broker.Position{AfterSeq: 2})
	got := poll(t, fresh, 100)
	src.store("ch", "writer", 1)
	src.deliver(t, "ch", 4, 4, "writer")
	if got, want := join(got, poll(t, fresh, 100)), "3 ready@3 4"; got != want {
		t.Errorf("new subscription after EndAll: got %q, want %q", got, want)
	}
	if n := h.Topics(); n != 1 {
		t.Errorf("Hub.Topics: got %d, want 1", n)
	}
	for _, sub := range []broker.Subscription{live, replaying, idle, fresh} {
		sub.Close()
	}
	src.checkReleased(t, h, 1)
}

// TestHub_ReleasesTopic checks that a channel's topic is released exactly once after
// the last subscription following it closes, and never for an Open that failed, so that
// Hub.Topics goes back to 0, whichever way Add ended.
func TestHub_ReleasesTopic(t *testing.T) {
	t.Parallel()
	t.Run("one_subscription", func(t *testing.T) {
		t.Parallel()
		h, src := newHub(t, hub.Options{})
		sub := subscribe(t, h, broker.SubscribeOptions{})
		add(t, sub, "ch", broker.Position{})
		if n := h.Topics(); n != 1 {
			t.Errorf("Hub.Topics: got %d, want 1", n)
		}
		sub.Close()
		sub.Close()
		src.checkReleased(t, h, 1)
	})
	t.Run("shared_channel", func(t *testing.T) {
		t.Parallel()
		h, src := newHub(t, hub.Options{})
		subs := make([]broker.Subscription, 3)
		for i := range subs {
			subs[i] = subscribe(t, h, broker.SubscribeOptions{})
			add(t, subs[i], "ch", broker.Position{})
		}
		add(t, subs[0], "second", broker.Position{})
		for i, sub := range subs[1:] {
			sub.Close()
			if n := h.Topics(); n != 2 {
				t.Errorf("after %d of 3 closed: Hub.Topics: got %d, want 2", i+1, n)
			}
		}
		src.mu.Lock()
		released := len(src.releases)
		src.mu.Unlock()
		if released != 0 {
			t.Errorf("%d topics released while a subscription follows them", released)
		}
		subs[0].Close()
		src.checkReleased(t, h, 2)
	})
	t.Run("reopen_after_release", func(t *testing.T) {
		t.Parallel()
		h, src := newHub(t, hub.Options{})
		for range 2 {
			sub := subscribe(t, h, broker.SubscribeOptions{})
			add(t, sub, "ch", broker.Position{})
			sub.Close()
		}
		src.checkReleased(t, h, 2)
	})
	t.Run("ended_subscription", func(t *testing.T) {
		t.Parallel()
		h, src := newHub(t, hub.Options{QueueSize: 1})
		sub := subscribe(t, h, broker.SubscribeOptions{})
		add(t, sub, "ch", broker.Position{})
		if got := poll(t, sub, 100); got != "ready@0" {
			t.Fatalf("got %q, want ready@0", got)
		}
		src.store("ch", "writer", 2)
		src.deliver(t, "ch", 1, 2, "writer") // overflows the queue
		wantEnd(t, sub, broker.ErrSlowConsumer)
		if n := h.Topics(); n != 1 {
			t.Errorf("Hub.Topics before Close: got %d, want 1", n)
		}
		sub.Close()
		src.checkReleased(t, h, 1)
	})
	t.Run("open_fails", func(t *testing.T) {
		t.Parallel()
		h, src := newHub(t, hub.Options{})
		src.set(func(f *fakeSource) { f.openErr = broker.ErrTooManyChannels })
		sub := subscribe(t, h, broker.SubscribeOptions{})
		if err := sub.Add(t.Context(), "ch", broker.Position{}); !errors.Is(err, broker.ErrTooManyChannels) {
			t.Fatalf("Add: got %v, want %v", err, broker.ErrTooManyChannels)
		}
		src.checkOpenFailed(t, h, 1)
		// The channel is not left reserved: once Open succeeds, Add does too.
		src.set(func(f *fakeSource) { f.openErr = nil })
		add(t, sub, "ch", broker.Position{})
		if got := poll(t, sub, 100); got != "ready@0" {
			t.Errorf("got %q, want ready@0", got)
		}
		sub.Close()
		src.mu.Lock()
		released := len(src.releases)
		src.mu.Unlock()
		if released != 1 || h.Topics() != 0 {
			t.Errorf("got %d topics released, %d open; want 1 released, 0 open", released, h.Topics())
		}
	})
	t.Run("view_read_fails", func(t *testing.T) {
		t.Parallel()
		h, src := newHub(t, hub.Options{})
		src.set(func(f *fakeSource) { f.readErr = errLost })
		sub := subscribe(t, h, broker.SubscribeOptions{})
		if err := sub.Add(t.Context(), "ch", broker.Position{}); !errors.Is(err, errLost) {
			t.Fatalf("Add: got %v, want %v", err, errLost)
		}
		src.checkReleased(t, h, 1)
	})
	t.Run("hub_close", func(t *testing.T) {
		t.Parallel()
		h, src := newHub(t, hub.Options{})
		sub := subscribe(t, h, broker.SubscribeOptions{})
		add(t, sub, "ch", broker.Position{})
		if got := poll(t, sub, 100); got != "ready@0" {
			t.Fatalf("got %q, want ready@0", got)
		}
		h.Close()
		wantEnd(t, sub, broker.ErrClosed)
		if _, err := h.Subscribe(broker.SubscribeOptions{}); !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Subscribe after Close: got %v, want %v", err, broker.ErrClosed)
		}
		sub.Close()
		src.checkReleased(t, h, 1)
	})
}

// TestHub_AddWhileOpening checks the topic's release when Add ends while the channel's
// Open is still running: the subscription ended meanwhile, the Open failed with another
// Add waiting for it, or the waiting Add was canceled.
//
// It does not run in parallel: waitBlocked looks for goroutines by the functions on their
// stacks, which other tests must not add to.
func TestHub_AddWhileOpening(t *testing.T) {
	t.Run("add_to_ended_subscription", func(t *testing.T) {
		h, src := newHub(t, hub.Options{})
		sub := subscribe(t, h, broker.SubscribeOptions{})
		src.set(func(f *fakeSource) { f.gate = make(chan struct{}) })
		done := make(chan error, 1)
		go func() { done <- sub.Add(t.Context(), "ch", broker.Position{}) }()
		waitBlocked(t, "(*fakeSource).Open", 1)
		h.EndAll(errLost) // while Open runs: Add must give the topic back
		src.set(func(f *fakeSource) { close(f.gate) })
		if err := <-done; !errors.Is(err, errLost) {
			t.Fatalf("Add: got %v, want %v", err, errLost)
		}
		src.checkReleased(t, h, 1)
	})
	t.Run("open_fails_with_a_waiter", func(t *testing.T) {
		h, src := newHub(t, hub.Options{})
		src.set(func(f *fakeSource) { f.gate, f.openErr = make(chan struct{}), broker.ErrTooManyChannels })
		subs := []broker.Subscription{subscribe(t, h, broker.SubscribeOptions{}), subscribe(t, h, broker.SubscribeOptions{})}
		errs := make(chan error, len(subs))
		go func() { errs <- subs[0].Add(t.Context(), "ch", broker.Position{}) }()
		waitBlocked(t, "(*fakeSource).Open", 1)
		go func() { errs <- subs[1].Add(t.Context(), "ch", broker.Position{}) }()
		waitBlocked(t, "(*Hub).acquire", 2) // the opener and the waiter
		src.set(func(f *fakeSource) { close(f.gate) })
		for range subs {
			if err := <-errs; !errors.Is(err, broker.ErrTooManyChannels) {
				t.Errorf("Add: got %v, want %v", err, broker.ErrTooManyChannels)
			}
		}
		src.checkOpenFailed(t, h, 1)
	})
	t.Run("waiter_canceled", func(t *testing.T) {
		h, src := newHub(t, hub.Options{})
		src.set(func(f *fakeSource) { f.gate = make(chan struct{}) })
		opener, waiter := subscribe(t, h, broker.SubscribeOptions{}), subscribe(t, h, broker.SubscribeOptions{})
		opened := make(chan error, 1)
		go func() { opened <- opener.Add(t.Context(), "ch", broker.Position{}) }()
		waitBlocked(t, "(*fakeSource).Open", 1)
		ctx, cancel := context.WithCancel(t.Context())
		canceled := make(chan error, 1)
		go func() { canceled <- waiter.Add(ctx, "ch", broker.Position{}) }()
		waitBlocked(t, "(*Hub).acquire", 2)
		cancel()
		if err := <-canceled; !errors.Is(err, context.Canceled) {
			t.Errorf("canceled Add: got %v, want %v", err, context.Canceled)
		}
		src.set(func(f *fakeSource) { close(f.gate) })
		if err := <-opened; err != nil {
			t.Fatalf("Add: %v", err)
		}
		if got := poll(t, opener, 100); got != "ready@0" {
			t.Errorf("got %q, want ready@0", got)
		}
		// The waiter's channel is not left reserved.
		add(t, waiter, "ch", broker.Position{})
		opener.Close()
		waiter.Close()
		src.checkReleased(t, h, 1)
	})
	t.Run("opener_canceled", func(t *testing.T) {
		h, src := newHub(t, hub.Options{})
		src.set(func(f *fakeSource) { f.gate = make(chan struct{}) })
		opener, waiter := subscribe(t, h, broker.SubscribeOptions{}), subscribe(t, h, broker.SubscribeOptions{})
		ctx, cancel := context.WithCancel(t.Context())
		canceled := make(chan error, 1)
		go func() { canceled <- opener.Add(ctx, "ch", broker.Position{}) }()
		waitBlocked(t, "(*fakeSource).Open", 1)
		added := make(chan error, 1)
		go func() { added <- waiter.Add(t.Context(), "ch", broker.Position{}) }()
		waitBlocked(t, "(*Hub).acquire", 2)
		cancel() // the opener's Open returns context.Canceled
		if err := <-canceled; !errors.Is(err, context.Canceled) {
			t.Errorf("canceled Add: got %v, want %v", err, context.Canceled)
		}
		src.set(func(f *fakeSource) { close(f.gate) }) // Open no longer blocks: a new one succeeds
		// The waiter's context is live: another subscriber's cancellation is not its error.
		if err := <-added; err != nil {
			t.Fatalf("Add with a live context: %v", err)
		}
		if got := poll(t, waiter, 100); got != "ready@0" {
			t.Errorf("got %q, want ready@0", got)
		}
		opener.Close()
		waiter.Close()
		if n := h.Topics(); n != 0 {
			t.Errorf("Hub.Topics: got %d, want 0", n)
		}
	})
}

// waitBlocked waits until n goroutines are parked in a select with fn (a function name
// as the runtime prints it, such as "(*Hub).acquire") on their stack: the state the test
// needs another goroutine to have reached, which nothing else makes observable.
func waitBlocked(t *testing.T, fn string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		found := 0
		for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			if strings.Contains(header, "[select") && strings.Contains(g, fn+"(") {
				found++
			}
		}
		if found >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d goroutines waiting in %s after 5s", found, n, fn)
		}
		runtime.Gosched()
	}
}
