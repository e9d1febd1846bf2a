package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/jetstream"
	"github.com/actionsync/actionsync/broker/jetstream/embedded"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// waitTimeout bounds every wait of these tests.
const waitTimeout = 10 * time.Second

// node opens a broker (an actionsync node) on its own connection to srv, closed when t
// ends.
func node(t testing.TB, srv *embedded.Server, opts jetstream.Options) *jetstream.Broker {
	t.Helper()
	nc := connect(t, srv)
	b, err := jetstream.New(t.Context(), nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// act returns a test action.
func act(client, id string) *actionsyncv1.Action {
	return &actionsyncv1.Action{Type: "T", Id: id, ClientId: client}
}

// collector polls a subscription into a slice of events in a goroutine of its own.
type collector struct {
	sub  broker.Subscription
	mu   sync.Mutex
	evs  []broker.Event
	err  error
	done chan struct{}
}

// collect subscribes to channel on b from pos and collects until the subscription ends.
func collect(t *testing.T, b broker.Broker, client, channel string, pos broker.Position) *collector {
	t.Helper()
	sub, err := b.Subscribe(broker.SubscribeOptions{ClientID: client})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Add(t.Context(), channel, pos); err != nil {
		t.Fatal(err)
	}
	c := &collector{sub: sub, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		var buf []broker.Event
		for {
			var err error
			buf, err = sub.Poll(buf[:0], 256)
			c.mu.Lock()
			c.evs = append(c.evs, buf...)
			if err != nil {
				c.err = err
			}
			c.mu.Unlock()
			if err != nil {
				return
			}
			if len(buf) == 0 {
				<-sub.Notify()
			}
		}
	}()
	t.Cleanup(func() {
		sub.Close()
		<-c.done
	})
	return c
}

// seqs returns the seqs of the entries collected so far.
func (c *collector) seqs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for _, ev := range c.evs {
		if ev.Entry != nil {
			out = append(out, ev.Entry.Seq())
		}
	}
	return out
}

// controls returns the control events collected so far.
func (c *collector) controls() []broker.Control {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []broker.Control
	for _, ev := range c.evs {
		if ev.Control != nil {
			out = append(out, *ev.Control)
		}
	}
	return out
}

// waitFor polls cond until it holds or fails the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// allHistory reads a channel's whole history from b.
func allHistory(t *testing.T, b broker.Broker, channel string) []*broker.Entry {
	t.Helper()
	return historyAfter(t, b, channel, 0)
}

// historyAfter reads a channel's history after seq from b.
func historyAfter(t *testing.T, b broker.Broker, channel string, seq uint64) []*broker.Entry {
	t.Helper()
	var all []*broker.Entry
	for after := seq; ; {
		page, head, err := b.History(t.Context(), channel, after, 100)
		if err != nil {
			t.Fatalf("History(%q, after %d): %v", channel, after, err)
		}
		all = append(all, page...)
		if len(page) == 0 || page[len(page)-1].Seq() >= head {
			return all
		}
		after = page[len(page)-1].Seq()
	}
}

// TestBroker_NodesShareOneOrder: publishers on three nodes race on one channel; every
// seq is given once, seqs are contiguous, and subscribers on every node see the one
// order that History shows, each from its own starting point.
func TestBroker_NodesShareOneOrder(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "ORDER", SubjectPrefix: "order"}
	nodes := []*jetstream.Broker{node(t, srv, opts), node(t, srv, opts), node(t, srv, opts)}
	const (
		ch         = "board:race.1"
		publishers = 6
		perPub     = 60
	)
	// Subscribers from the start, live, and (below) from the middle, on every node.
	var subs []*collector
	for i, n := range nodes {
		subs = append(subs, collect(t, n, fmt.Sprintf("sub-%d", i), ch, broker.Position{}))
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked = map[uint64]string{}
		errs  []error
	)
	for p := range publishers {
		wg.Go(func() {
			n := nodes[p%len(nodes)]
			for i := 0; i < perPub; {
				size := 1 + (i+p)%3 // batches of 1..3
				batch := make([]*actionsyncv1.Action, 0, size)
				for j := 0; j < size && i < perPub; j, i = j+1, i+1 {
					batch = append(batch, act(fmt.Sprintf("pub-%d", p), fmt.Sprintf("p%d-%d", p, i)))
				}
				acks, err := n.Publish(t.Context(), ch, batch)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				for k, a := range acks {
					if prev, ok := acked[a.Seq]; ok {
						errs = append(errs, fmt.Errorf("seq %d acked for %q and %q", a.Seq, prev, a.ID))
					}
					acked[a.Seq] = a.ID
					if a.Duplicate || a.ID != batch[k].GetId() {
						errs = append(errs, fmt.Errorf("ack %+v for %q", a, batch[k].GetId()))
					}
				}
				// A batch is contiguous: nobody interleaves with it.
				for k := 1; k < len(acks); k++ {
					if acks[k].Seq != acks[k-1].Seq+1 {
						errs = append(errs, fmt.Errorf("batch acked with seqs %d then %d", acks[k-1].Seq, acks[k].Seq))
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	total := uint64(publishers * perPub)
	for seq := uint64(1); seq <= total; seq++ {
		if _, ok := acked[seq]; !ok {
			t.Fatalf("seq %d never acked: seqs are not contiguous", seq)
		}
	}
	mid := collect(t, nodes[1], "mid", ch, broker.Position{AfterSeq: total / 2})
	want := make([]uint64, total)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	for i, n := range nodes {
		h := allHistory(t, n, ch)
		for k, e := range h {
			if e.Seq() != uint64(k+1) || e.ID() != acked[e.Seq()] {
				t.Fatalf("node %d history[%d]: seq %d id %q, want seq %d id %q", i, k, e.Seq(), e.ID(), k+1, acked[uint64(k+1)])
			}
		}
		if uint64(len(h)) != total {
			t.Fatalf("node %d history: %d entries, want %d", i, len(h), total)
		}
	}
	for i, c := range subs {
		waitFor(t, fmt.Sprintf("subscriber %d to get %d actions", i, total), func() bool { return len(c.seqs()) >= int(total) })
		if got := c.seqs(); !slices.Equal(got, want) {
			t.Errorf("subscriber on node %d: got %d seqs, not 1..%d in order: %v", i, len(got), total, got)
		}
	}
	waitFor(t, "the subscriber from the middle", func() bool { return len(mid.seqs()) >= int(total/2) })
	if got := mid.seqs(); !slices.Equal(got, want[total/2:]) {
		t.Errorf("subscriber from %d: got %v", total/2, got)
	}
}

// TestBroker_SameIDOnTwoNodes: an action id dispatched to two nodes at the same moment
// gets one seq; one node stores it, the other answers duplicate; and an id the other
// node stored long ago (not in this node's cache yet) is recognised too.
func TestBroker_SameIDOnTwoNodes(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "IDEM", SubjectPrefix: "idem"}
	a, b := node(t, srv, opts), node(t, srv, opts)
	const ch, ids = "idem", 50
	for i := range ids {
		id := fmt.Sprintf("same-%d", i)
		var acks [2]broker.Ack
		var errs [2]error
		var wg sync.WaitGroup
		for k, n := range []*jetstream.Broker{a, b} {
			wg.Go(func() {
				var got []broker.Ack
				got, errs[k] = n.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", id)})
				if len(got) == 1 {
					acks[k] = got[0]
				}
			})
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("%s: %v, %v", id, errs[0], errs[1])
		}
		if acks[0].Seq != acks[1].Seq || acks[0].Duplicate == acks[1].Duplicate {
			t.Fatalf("%s: acks %+v and %+v: want one seq, one duplicate", id, acks[0], acks[1])
		}
	}
	if h := allHistory(t, a, ch); len(h) != ids {
		t.Fatalf("history: %d entries, want %d", len(h), ids)
	}
	// A third node that never saw the channel: the ids are duplicates there too, and
	// one with another body is a conflict.
	c := node(t, srv, opts)
	acks, err := c.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", "same-7")})
	if err != nil || len(acks) != 1 || !acks[0].Duplicate || acks[0].Seq != 8 {
		t.Fatalf("resend on a fresh node: %+v, %v; want duplicate of seq 8", acks, err)
	}
	other := act("c", "same-7")
	other.Type = "OTHER"
	if _, err := c.Publish(t.Context(), ch, []*actionsyncv1.Action{other}); !errors.Is(err, broker.ErrConflict) {
		t.Fatalf("same id, other body: got %v, want %v", err, broker.ErrConflict)
	}
}

// TestBroker_BatchCutHalfway: a node whose connection dies after sending part of a
// batch and before its commit stores none of it: the batch is all or nothing.
func TestBroker_BatchCutHalfway(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "ATOMIC", SubjectPrefix: "atomic"}
	healthy := node(t, srv, opts)
	const ch = "atomic"
	if _, err := healthy.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", "before")}); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, srv)
	dying, err := jetstream.New(t.Context(), nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dying.Close() })
	dying.SetBeforeCommit(func() {
		if err := nc.Flush(); err != nil { // the first messages have reached the server
			t.Error(err)
		}
		nc.Close()
	})
	batch := []*actionsyncv1.Action{act("c", "b1"), act("c", "b2"), act("c", "b3"), act("c", "b4")}
	if acks, err := dying.Publish(t.Context(), ch, batch); err == nil {
		t.Fatalf("Publish on a connection closed before the commit: got acks %+v, want an error", acks)
	} else if !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish: got %v, want %v", err, broker.ErrUnavailable)
	}
	after, err := healthy.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", "after")})
	if err != nil {
		t.Fatal(err)
	}
	if after[0].Seq != 2 {
		t.Errorf("next action: seq %d, want 2 (nothing of the cut batch stored)", after[0].Seq)
	}
	js, _ := natsjs.New(connect(t, srv))
	stream, err := js.Stream(t.Context(), "ATOMIC")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d messages, want 2 (before, after)", info.State.Msgs)
	}
	var ids []string
	for _, e := range allHistory(t, healthy, ch) {
		ids = append(ids, e.ID())
	}
	if !slices.Equal(ids, []string{"before", "after"}) {
		t.Errorf("history: got ids %v, want [before after]", ids)
	}
	// The batch, sent again through a healthy node, is stored whole.
	acks, err := healthy.Publish(t.Context(), ch, batch)
	if err != nil || len(acks) != 4 || acks[0].Seq != 3 || acks[3].Seq != 6 {
		t.Errorf("batch again: %+v, %v; want seqs 3..6", acks, err)
	}
}

// TestBroker_RestartKeepsHistoryAndEpoch: a node started on an existing stream serves
// its history, and a client resumes there without a reset; a stream deleted and
// recreated has a new epoch, so the same client gets a reset.
func TestBroker_RestartKeepsHistoryAndEpoch(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "RESTART", SubjectPrefix: "restart"}
	const ch = "restart"
	first := node(t, srv, opts)
	for i := range 5 {
		if _, err := first.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", fmt.Sprintf("a%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	epoch := first.Epoch()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := node(t, srv, opts)
	if second.Epoch() != epoch {
		t.Fatalf("epoch after a restart: got %q, want %q", second.Epoch(), epoch)
	}
	if h := allHistory(t, second, ch); len(h) != 5 {
		t.Fatalf("history after a restart: %d entries, want 5", len(h))
	}
	resumed := collect(t, second, "r", ch, broker.Position{AfterSeq: 3, Epoch: epoch})
	waitFor(t, "the resumed replay", func() bool { return len(resumed.controls()) > 0 })
	if got := resumed.seqs(); !slices.Equal(got, []uint64{4, 5}) {
		t.Errorf("resume after 3: got seqs %v, want [4 5]", got)
	}
	if c := resumed.controls(); c[0].Kind != broker.ControlReady || c[0].Seq != 5 {
		t.Errorf("resume after 3: got %+v first, want ready at 5", c[0])
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}

	js, _ := natsjs.New(connect(t, srv))
	if err := js.DeleteStream(t.Context(), "RESTART"); err != nil {
		t.Fatal(err)
	}
	third := node(t, srv, opts)
	if third.Epoch() == epoch {
		t.Fatalf("a recreated stream kept epoch %q", epoch)
	}
	if _, err := third.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", "new")}); err != nil {
		t.Fatal(err)
	}
	reset := collect(t, third, "r", ch, broker.Position{AfterSeq: 1, Epoch: epoch})
	waitFor(t, "the reset", func() bool { return len(reset.controls()) >= 2 })
	if c := reset.controls(); c[0].Kind != broker.ControlReset || c[0].Seq != 1 || c[0].Epoch != third.Epoch() {
		t.Errorf("resume with the lost epoch: got %+v, want a reset at 1 in the new epoch", c[0])
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestBroker_ConnectionLoss: while NATS is unreachable, publishing fails fast with
// ErrUnavailable, subscriptions end with it and OnStatus reports it; when NATS is back
// the node works again and nothing acknowledged is lost.
func TestBroker_ConnectionLoss(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	srv, err := embedded.Start(embedded.Config{DataDir: dir, Listen: listen})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Shutdown()
		}
	})
	nc, err := nats.Connect(srv.ClientURL(), append(jetstream.ConnectOptions(), nats.ReconnectWait(50*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	status := make(chan bool, 16)
	b, err := jetstream.New(t.Context(), nc, jetstream.Options{Stream: "LOSS", SubjectPrefix: "loss", OnStatus: func(up bool) { status <- up }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	const ch = "loss"
	if _, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", "kept")}); err != nil {
		t.Fatal(err)
	}
	sub := collect(t, b, "s", ch, broker.Position{})
	waitFor(t, "the subscriber's replay", func() bool { return len(sub.seqs()) == 1 })

	srv.Shutdown()
	stopped = true
	select {
	case up := <-status:
		if up {
			t.Fatal("OnStatus(true) after the server stopped")
		}
	case <-time.After(waitTimeout):
		t.Fatal("OnStatus not called after the server stopped")
	}
	select {
	case <-sub.done:
		if !errors.Is(sub.err, broker.ErrUnavailable) {
			t.Errorf("subscription ended with %v, want %v", sub.err, broker.ErrUnavailable)
		}
	case <-time.After(waitTimeout):
		t.Fatal("subscription still open after the connection was lost")
	}
	start := time.Now()
	_, err = b.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", "while-down")})
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish while NATS is down: got %v, want %v", err, broker.ErrUnavailable)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Publish while NATS is down took %v, want a fast failure", d)
	}
	if _, err := b.Subscribe(broker.SubscribeOptions{}); err != nil {
		t.Fatal(err) // subscribing is local; Add is what needs NATS
	}

	srv, err = embedded.Start(embedded.Config{DataDir: dir, Listen: listen})
	if err != nil {
		t.Fatal(err)
	}
	stopped = false
	select {
	case up := <-status:
		if !up {
			t.Fatal("OnStatus(false) again, want true after the server is back")
		}
	case <-time.After(waitTimeout):
		t.Fatal("OnStatus not called after the server came back")
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	acks, err := b.Publish(ctx, ch, []*actionsyncv1.Action{act("c", "after")})
	if err != nil || acks[0].Seq != 2 {
		t.Fatalf("Publish after reconnect: %+v, %v; want seq 2", acks, err)
	}
	if h := allHistory(t, b, ch); len(h) != 2 || h[0].ID() != "kept" {
		t.Errorf("history after reconnect: %d entries, want kept and after", len(h))
	}

	// Both nodes' feeds came back: a live subscriber on each gets what the other
	// publishes.
	other := node(t, srv, jetstream.Options{Stream: "LOSS", SubjectPrefix: "loss"})
	onB := collect(t, b, "s", ch, broker.Position{Live: true})
	onOther := collect(t, other, "s", ch, broker.Position{Live: true})
	waitFor(t, "both live subscribers' ready", func() bool { return len(onB.controls()) == 1 && len(onOther.controls()) == 1 })
	if _, err := other.Publish(ctx, ch, []*actionsyncv1.Action{act("c", "from-other")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, ch, []*actionsyncv1.Action{act("c", "from-b")}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*collector{"reconnected node": onB, "other node": onOther} {
		waitFor(t, name+" to get both live actions", func() bool { return len(c.seqs()) == 2 })
		if got := c.seqs(); !slices.Equal(got, []uint64{3, 4}) {
			t.Errorf("%s: got seqs %v, want [3 4]", name, got)
		}
	}
}

// TestBroker_CacheLimit: a node caches at most MaxChannels channels at once; one more
// is refused while all are in use, and accepted once one is idle (it is evicted).
func TestBroker_CacheLimit(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := node(t, srv, jetstream.Options{Stream: "CACHE", SubjectPrefix: "cache", MaxChannels: 2, CacheIdle: time.Hour})
	subs := []*collector{collect(t, b, "s", "c1", broker.Position{}), collect(t, b, "s", "c2", broker.Position{})}
	if _, err := b.Publish(t.Context(), "c3", []*actionsyncv1.Action{act("c", "x")}); !errors.Is(err, broker.ErrTooManyChannels) {
		t.Fatalf("third channel while two are in use: got %v, want %v", err, broker.ErrTooManyChannels)
	}
	if got := b.Channels(); got != 2 {
		t.Errorf("cached channels: %d, want 2", got)
	}
	subs[0].sub.Close()
	if _, err := b.Publish(t.Context(), "c3", []*actionsyncv1.Action{act("c", "x")}); err != nil {
		t.Fatalf("third channel once one is idle: %v", err)
	}
	if got := b.Channels(); got != 2 {
		t.Errorf("cached channels: %d, want 2", got)
	}
	// The evicted channel loads again from the stream when used.
	if _, err := b.Publish(t.Context(), "c1", []*actionsyncv1.Action{act("c", "y")}); err != nil {
		t.Fatal(err)
	}
}

// TestBroker_StreamLost: the stream is deleted under two running nodes. Their
// subscriptions end with ErrUnavailable; the stream is created again with a new epoch
// that both nodes take; publishing starts again at seq 1, and a client resuming with the
// old epoch gets a reset.
func TestBroker_StreamLost(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "LOST", SubjectPrefix: "lost"}
	a, b := node(t, srv, opts), node(t, srv, opts)
	const ch = "lost"
	for i := range 3 {
		if _, err := a.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", fmt.Sprintf("old-%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	old := a.Epoch()
	sub := collect(t, b, "s", ch, broker.Position{})
	waitFor(t, "the replay", func() bool { return len(sub.seqs()) == 3 })

	js, _ := natsjs.New(connect(t, srv))
	if err := js.DeleteStream(t.Context(), "LOST"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.done:
		if !errors.Is(sub.err, broker.ErrUnavailable) {
			t.Errorf("subscription ended with %v, want %v", sub.err, broker.ErrUnavailable)
		}
	case <-time.After(waitTimeout):
		t.Fatal("subscription still open after the stream was deleted")
	}
	waitFor(t, "both nodes to take the new epoch", func() bool {
		return a.Epoch() != old && a.Epoch() == b.Epoch()
	})
	var acks []broker.Ack
	var lastErr error
	waitFor(t, "publishing to work again", func() bool {
		acks, lastErr = a.Publish(t.Context(), ch, []*actionsyncv1.Action{act("c", "new")})
		if lastErr != nil {
			t.Logf("Publish: %v", lastErr)
		}
		return lastErr == nil
	})
	if acks[0].Seq != 1 || acks[0].Duplicate {
		t.Errorf("first action in the new stream: %+v, want seq 1", acks[0])
	}
	resumed := collect(t, b, "s", ch, broker.Position{AfterSeq: 3, Epoch: old})
	waitFor(t, "the reset", func() bool { return len(resumed.controls()) >= 2 })
	if c := resumed.controls(); c[0].Kind != broker.ControlReset || c[0].Seq != 1 || c[0].Epoch != b.Epoch() {
		t.Errorf("resume in the lost epoch: got %+v first, want a reset at 1 in epoch %q", c[0], b.Epoch())
	}
}

// TestBroker_CloseWhileDown: Close returns promptly while NATS is unreachable, even with
// a stream check under way.
func TestBroker_CloseWhileDown(t *testing.T) {
	t.Parallel()
	srv, err := embedded.Start(embedded.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	nc := connect(t, srv)
	b, err := jetstream.New(t.Context(), nc, jetstream.Options{Stream: "DOWN", SubjectPrefix: "down"})
	if err != nil {
		t.Fatal(err)
	}
	sub := collect(t, b, "s", "down", broker.Position{})
	waitFor(t, "ready", func() bool { return len(sub.controls()) == 1 })
	srv.Shutdown()
	b.CheckStream() // as the feed does when it sees the stream go
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close while NATS is down took %v, want under 2s", d)
	}
}

// TestBroker_LoadLongChannel: a node loads a channel whose stream history is longer
// than one batched read and starts after trimmed actions; its cache equals the
// publishing node's, and it continues the channel's seqs.
func TestBroker_LoadLongChannel(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "LONG", SubjectPrefix: "long", HistorySize: 2500}
	a := node(t, srv, opts)
	const ch, total = "long", 3100
	for i := 0; i < total; i += 100 {
		batch := make([]*actionsyncv1.Action, 100)
		for k := range batch {
			batch[k] = act("a", fmt.Sprintf("a-%d", i+k))
		}
		if _, err := a.Publish(t.Context(), ch, batch); err != nil {
			t.Fatal(err)
		}
	}
	want := historyAfter(t, a, ch, total-2500)
	if len(want) != 2500 || want[0].Seq() != total-2500+1 {
		t.Fatalf("publishing node: %d entries from seq %d, want 2500 from %d", len(want), want[0].Seq(), total-2500+1)
	}
	b := node(t, srv, opts)
	got := historyAfter(t, b, ch, total-2500)
	if len(got) != len(want) {
		t.Fatalf("loading node: %d entries, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Seq() != want[i].Seq() || got[i].ID() != want[i].ID() {
			t.Fatalf("entry %d: seq %d id %q, want seq %d id %q", i, got[i].Seq(), got[i].ID(), want[i].Seq(), want[i].ID())
		}
	}
	if _, _, err := b.History(t.Context(), ch, total-2500-1, 10); !errors.Is(err, broker.ErrTrimmed) {
		t.Errorf("History before the oldest kept action: got %v, want %v", err, broker.ErrTrimmed)
	}
	acks, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{act("b", "next")})
	if err != nil || acks[0].Seq != total+1 {
		t.Errorf("publish on the loading node: %+v, %v; want seq %d", acks, err, total+1)
	}
}

// TestBroker_LoadCanceledByItsCaller: the call that loads a channel is canceled while
// another call waits for the same load; the waiter loads it itself instead of failing
// with the first caller's cancellation.
func TestBroker_LoadCanceledByItsCaller(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "CANCEL", SubjectPrefix: "cancel"}
	a := node(t, srv, opts)
	const ch, total = "big", 5000
	for i := 0; i < total; i += 100 {
		batch := make([]*actionsyncv1.Action, 100)
		for k := range batch {
			batch[k] = act("a", fmt.Sprintf("a-%d", i+k))
		}
		if _, err := a.Publish(t.Context(), ch, batch); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 5 {
		b := node(t, srv, opts)
		ctx, cancel := context.WithCancel(t.Context())
		first := make(chan error, 1)
		go func() {
			_, _, err := b.History(ctx, ch, 0, 1)
			first <- err
		}()
		time.Sleep(2 * time.Millisecond) // the first call is loading
		second := make(chan error, 1)
		go func() {
			_, head, err := b.History(t.Context(), ch, 0, 1)
			if err == nil && head != total {
				err = fmt.Errorf("head %d, want %d", head, total)
			}
			second <- err
		}()
		time.Sleep(2 * time.Millisecond)
		cancel()
		<-first // canceled or done: either is fine
		if err := <-second; err != nil {
			t.Fatalf("round %d: the waiting call: %v", round, err)
		}
	}
}
