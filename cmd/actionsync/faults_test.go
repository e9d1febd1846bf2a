package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/actionsync/actionsync/broker/jetstream/embedded"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	actionsyncv1connect "github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// TestDataDir_kill9: `serve --data-dir DIR` is SIGKILLed while a client dispatches, and
// restarted on DIR. Every acknowledged action is in History in ack order (the dispatch in
// flight at the kill is re-sent with its ids and stored once), dedupe survived, and a
// client resuming with {after_seq, epoch} from before the kill gets the replay and a
// ready in the same epoch, no reset. A restart on a new, empty directory is a new
// epoch: a client resuming with the old one gets a reset, even once the new history has
// grown past its seq.
func TestDataDir_kill9(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	const (
		channel = "board:kill9"
		n       = 150 // acked before the kill
		k       = 60  // a position from before the kill
	)

	first := startServe(t, "first", "--data-dir", dir)
	client := first.client(t)
	live := newFollower("sub-live", channel, 0, "")
	liveEnded := make(chan error, 1)
	go func() { liveEnded <- live.follow(ctx, client) }()
	waitUntil(t, 10*time.Second, "the subscriber's ready", func() bool { return live.readyCount() == 1 })

	var acked []applied // in ack order
	record := func(acks []*actionsyncv1.Ack) {
		for _, a := range acks {
			acked = append(acked, applied{a.GetSeq(), a.GetId()})
		}
	}
	firstBatch := batchOf(t, "a", 0, 1)
	for i := 0; i < n; {
		batch := batchOf(t, "a", i, min(1+i%4, n-i))
		if i == 0 {
			batch = firstBatch
		}
		i += len(batch)
		acks, err := dispatchBatch(ctx, t, client, channel, "writer", batch)
		if err != nil {
			t.Fatalf("Dispatch of %s: %v", batch[0].GetId(), err)
		}
		record(acks)
	}
	waitUntil(t, 10*time.Second, fmt.Sprintf("the subscriber at seq %d", n), func() bool { return live.last() >= n })
	epoch := live.currentEpoch()

	// The writer goes on dispatching while the process is killed; the dispatch that
	// fails is the one a client keeps to re-send.
	var (
		mu      sync.Mutex
		pending []*actionsyncv1.Action
	)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := n; ; {
			batch := batchOf(t, "b", i, 1+i%3)
			i += len(batch)
			acks, err := dispatchBatch(ctx, t, client, channel, "writer", batch)
			mu.Lock()
			if err != nil {
				pending = batch
				mu.Unlock()
				return
			}
			record(acks)
			mu.Unlock()
		}
	}()
	waitUntil(t, 10*time.Second, "30 more acks", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= n+30
	})
	first.kill(t)
	<-writerDone
	if err := <-liveEnded; err == nil {
		t.Errorf("subscriber's stream after SIGKILL: ended without an error, want one")
	}
	t.Logf("killed after %d acks; the subscriber at seq %d; in flight: %d actions from %s", len(acked), live.last(), len(pending), pending[0].GetId())

	second := startServe(t, "second", "--data-dir", dir)
	client = second.client(t)
	history := readHistory(ctx, t, client, channel)
	// The dispatch in flight may have been stored before the kill, unacknowledged.
	stored := len(history) - len(acked)
	if stored != 0 && stored != len(pending) {
		t.Fatalf("History after restart: %d actions, want the %d acked, or those and the %d in flight", len(history), len(acked), len(pending))
	}
	t.Logf("History after restart: the %d acked actions and %d of the %d in flight", len(acked), stored, len(pending))
	if d := diffSequence(appliedOf(history[:len(acked)]), acked); d != "" {
		t.Fatalf("History after restart vs the acks: %s", d)
	}
	acks, err := dispatchBatch(ctx, t, client, channel, "writer", pending)
	if err != nil {
		t.Fatalf("re-sent Dispatch of %s after restart: %v", pending[0].GetId(), err)
	}
	if want := stored > 0; acks[0].GetDuplicate() != want || acks[0].GetSeq() != uint64(len(acked))+1 {
		t.Errorf("re-sent Dispatch after restart: got %v, want seqs from %d, duplicate %v", acks, len(acked)+1, want)
	}
	record(acks)
	// The dedupe window survived the kill too.
	if acks, err := dispatchBatch(ctx, t, client, channel, "writer", firstBatch); err != nil || !acks[0].GetDuplicate() || acks[0].GetSeq() != 1 {
		t.Errorf("re-sent Dispatch of the first action after restart: got %v, %v; want a duplicate of seq 1", acks, err)
	}
	history = readHistory(ctx, t, client, channel)
	if d := diffSequence(appliedOf(history), acked); d != "" {
		t.Fatalf("History after the re-send vs the acks: %s", d)
	}

	// Clients from before the kill resume: the subscriber from its last seq, another
	// from k; both in the epoch of their last ready.
	fromK := newFollower("sub-k", channel, k, epoch)
	var following sync.WaitGroup
	followCtx, stopFollowing := context.WithCancel(ctx)
	for _, f := range []*follower{live, fromK} {
		following.Go(func() {
			if err := f.follow(followCtx, client); followCtx.Err() == nil {
				f.fault("stream after restart ended with %v, want it open", err)
			}
		})
	}
	waitUntil(t, 10*time.Second, "both subscribers' ready after restart", func() bool {
		return live.readyCount() == 2 && fromK.readyCount() == 1
	})
	stopFollowing()
	following.Wait()
	live.check(t, appliedOf(history))
	fromK.check(t, appliedOf(history))

	// A new, empty directory is a new epoch: the position from the old one gets a reset,
	// whether it is beyond the new head or not.
	second.kill(t)
	third := startServe(t, "third", "--data-dir", t.TempDir())
	client = third.client(t)
	newEpoch := expectReset(ctx, t, client, channel, k, epoch, 0) // dispatches seq 1
	for i := 0; i < k+10; {
		batch := batchOf(t, "c", i, min(1+i%4, k+10-i))
		i += len(batch)
		if _, err := dispatchBatch(ctx, t, client, channel, "writer", batch); err != nil {
			t.Fatalf("Dispatch on the new directory: %v", err)
		}
	}
	if got := expectReset(ctx, t, client, channel, k, epoch, 1+k+10); got != newEpoch {
		t.Errorf("epoch of the second reset on the new directory: got %q, want %q", got, newEpoch)
	}
}

// expectReset subscribes through client from {after, epoch}, a position from a lost
// history, and checks that the stream starts with a reset to head in a new epoch, then a
// ready at head in that epoch, then the next action dispatched. It returns the new epoch.
func expectReset(ctx context.Context, t *testing.T, client actionsyncv1connect.SyncServiceClient, channel string, after uint64, epoch string, head uint64) string {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{
		Positions: []*actionsyncv1.Position{{Channel: channel, AfterSeq: after, Epoch: epoch}},
	}))
	if err != nil {
		t.Fatalf("Subscribe after seq %d in epoch %q: %v", after, epoch, err)
	}
	defer stream.Close()
	next := func(what string) *actionsyncv1.SubscribeResponse {
		t.Helper()
		for stream.Receive() {
			if stream.Msg().GetHeartbeat() == nil {
				return stream.Msg()
			}
		}
		t.Fatalf("Subscribe after seq %d in epoch %q: stream ended with %v before the %s", after, epoch, stream.Err(), what)
		return nil
	}
	reset := next("reset").GetReset_()
	if reset.GetChannel() != channel || reset.GetHeadSeq() != head || reset.GetEpoch() == "" || reset.GetEpoch() == epoch {
		t.Fatalf("resume after seq %d in epoch %q on a new directory: got %v first, want a reset to head %d in a new epoch", after, epoch, reset, head)
	}
	if r := next("ready").GetReady(); r.GetChannel() != channel || r.GetHeadSeq() != head || r.GetEpoch() != reset.GetEpoch() {
		t.Fatalf("after the reset: got %v, want ready at head %d in epoch %q", r, head, reset.GetEpoch())
	}
	acks, err := dispatchBatch(ctx, t, client, channel, "writer", batchOf(t, fmt.Sprintf("after-reset-%d", head), 0, 1))
	if err != nil {
		t.Fatalf("Dispatch after the reset: %v", err)
	}
	if got := next("action").GetActions(); len(got) != 1 || got[0].GetSeq() != head+1 || got[0].GetId() != acks[0].GetId() {
		t.Fatalf("after the ready: got %v, want the action dispatched next at seq %d", got, head+1)
	}
	return reset.GetEpoch()
}

// natsCluster is three nats-servers with JetStream in the test process, routed to each
// other on loopback, each on fixed ports so that it can be restarted where it was.
type natsCluster struct {
	cfgs    []embedded.Config
	servers []*embedded.Server // nil while stopped
	urls    []string           // client URLs, in the order of servers
	js      natsjs.JetStream   // the test's own JetStream client on the cluster
}

// startNATSCluster starts the cluster and waits until JetStream answers (its meta
// leader is elected). The servers still running stop when t ends.
func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	c := &natsCluster{cfgs: make([]embedded.Config, 3), servers: make([]*embedded.Server, 3)}
	var routes []string
	for i := range c.cfgs {
		c.cfgs[i] = embedded.Config{
			DataDir:    t.TempDir(),
			Listen:     closedAddr(t),
			ServerName: fmt.Sprintf("n%d", i+1),
			Cluster:    closedAddr(t),
		}
		routes = append(routes, "nats://"+c.cfgs[i].Cluster)
		c.urls = append(c.urls, "nats://"+c.cfgs[i].Listen)
	}
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range c.cfgs {
		c.cfgs[i].Routes = routes
		wg.Go(func() { c.servers[i], errs[i] = embedded.Start(c.cfgs[i]) })
	}
	wg.Wait()
	t.Cleanup(func() {
		for i := range c.servers {
			c.stop(i)
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	nc, err := nats.Connect(strings.Join(c.urls, ","), nats.Name("observer"), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if c.js, err = natsjs.New(nc); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "a JetStream meta leader", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := c.js.AccountInfo(ctx)
		return err == nil
	})
	return c
}

// stop shuts server i down, if it runs.
func (c *natsCluster) stop(i int) {
	if c.servers[i] != nil {
		c.servers[i].Shutdown()
		c.servers[i] = nil
	}
}

// restart starts server i again, on its directory and ports.
func (c *natsCluster) restart(t *testing.T, i int) {
	t.Helper()
	srv, err := embedded.Start(c.cfgs[i])
	if err != nil {
		t.Fatalf("restart %s: %v", c.cfgs[i].ServerName, err)
	}
	c.servers[i] = srv
}

// connectedTo returns the index of the running server the client named name is
// connected to, or -1.
func (c *natsCluster) connectedTo(t *testing.T, name string) int {
	t.Helper()
	for i, srv := range c.servers {
		if srv == nil {
			continue
		}
		connz, err := srv.NATS().Connz(&natsserver.ConnzOptions{})
		if err != nil {
			t.Fatalf("connz of %s: %v", c.cfgs[i].ServerName, err)
		}
		for _, conn := range connz.Conns {
			if conn.Name == name {
				return i
			}
		}
	}
	return -1
}

// TestNATSCluster_killServer: one process on a 3-server NATS cluster with a stream of 3
// replicas. A publisher dispatches continuously, re-sending a failed dispatch with the
// same ids as a client does, and a subscriber resumes whenever its stream ends. The NATS
// server the process is connected to is shut down, then restarted once the others
// carried on; three times, one server down at a time. Every acknowledged action is in
// History exactly once, in ack order, and the subscriber applied exactly History.
func TestNATSCluster_killServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-server NATS cluster")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cluster := startNATSCluster(t)
	node := startServe(t, "node", "--broker", "nats", "--nats-url", strings.Join(cluster.urls, ","), "--nats-replicas", "3")
	const channel = "board:cluster"

	// The subscriber resumes on the same process whenever its stream ends.
	sub := newFollower("sub", channel, 0, "")
	var (
		resumes   atomic.Int64
		following sync.WaitGroup
	)
	followCtx, stopFollowing := context.WithCancel(ctx)
	following.Go(func() {
		client := node.client(t)
		for followCtx.Err() == nil {
			err := sub.follow(followCtx, client)
			if followCtx.Err() != nil {
				return
			}
			if code := connect.CodeOf(err); code != connect.CodeUnavailable {
				sub.fault("stream ended with %v, want unavailable", err)
			}
			resumes.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
	})

	var (
		mu      sync.Mutex
		acked   []applied // in ack order
		retries int
		stop    = make(chan struct{})
		stopped = make(chan struct{})
	)
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	go func() {
		defer close(stopped)
		client := node.client(t)
		for i := 0; ; {
			select {
			case <-stop:
				return
			default:
			}
			batch := batchOf(t, "p", i, 1+i%3)
			i += len(batch)
			for attempt := 1; ; attempt++ {
				sent := time.Now()
				acks, err := dispatchBatch(ctx, t, client, channel, "publisher", batch)
				if err != nil {
					t.Logf("Dispatch of %s (attempt %d) failed after %v: %v", batch[0].GetId(), attempt, time.Since(sent).Round(time.Millisecond), err)
				}
				if err == nil {
					mu.Lock()
					if attempt == 1 && acks[0].GetDuplicate() {
						t.Errorf("first dispatch of %s: got a duplicate ack", batch[0].GetId())
					}
					for _, a := range acks {
						acked = append(acked, applied{a.GetSeq(), a.GetId()})
					}
					mu.Unlock()
					break
				}
				if ctx.Err() != nil || connect.CodeOf(err) != connect.CodeUnavailable {
					t.Errorf("Dispatch of %s (attempt %d): %v, want unavailable at worst", batch[0].GetId(), attempt, err)
					return
				}
				mu.Lock()
				retries++
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()

	start := time.Now()
	killed := map[string]bool{}
	for round := range 3 {
		var i int
		waitUntil(t, 10*time.Second, "the process connected to NATS", func() bool {
			i = cluster.connectedTo(t, "actionsync")
			return i >= 0
		})
		name := cluster.cfgs[i].ServerName
		base := ackedCount()
		waitUntil(t, 20*time.Second, "50 acks", func() bool { return ackedCount() >= base+50 })
		cluster.stop(i)
		killed[name] = true
		atKill := ackedCount()
		t.Logf("round %d: shut %s down after %d acks (%v)", round, name, atKill, time.Since(start))
		waitUntil(t, 30*time.Second, "50 acks with "+name+" down", func() bool { return ackedCount() >= atKill+50 })
		t.Logf("round %d: 50 acks with %s down (%v)", round, name, time.Since(start))
		cluster.restart(t, i)
		waitUntil(t, 30*time.Second, "every replica current", func() bool {
			return replicasCurrent(t, cluster.js, "ACTIONSYNC")
		})
		t.Logf("round %d: %s back and current (%v)", round, name, time.Since(start))
	}
	close(stop)
	<-stopped
	mu.Lock()
	want := acked
	t.Logf("%d actions acked, %d retries, the subscriber resumed %d times; servers shut down: %v", len(want), retries, resumes.Load(), killed)
	mu.Unlock()

	history := readHistory(ctx, t, node.client(t), channel)
	if d := diffSequence(appliedOf(history), want); d != "" {
		t.Errorf("History vs the acks: %s", d)
	}
	// The subscriber may be in a resume back-off when the load stops; on a loaded CI
	// runner (every package's tests at once, with -race) catching up took over 10 s.
	waitUntil(t, 30*time.Second, fmt.Sprintf("the subscriber at seq %d", len(history)), func() bool {
		return sub.last() >= uint64(len(history))
	})
	stopFollowing()
	following.Wait()
	sub.check(t, appliedOf(history))
}

// replicasCurrent reports whether the stream has a leader and both other replicas are
// online and current (a lag of a few messages is current under load).
func replicasCurrent(t *testing.T, js natsjs.JetStream, stream string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		return false
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current || r.Offline {
			return false
		}
	}
	return true
}

// cutProxy is a TCP proxy to a NATS server that, once armed, drops the connection that
// sends a message on a subject starting with subject, before the message reaches NATS.
type cutProxy struct {
	ln      net.Listener
	target  string
	subject []byte
	armed   atomic.Bool
	cut     chan struct{} // gets one value per connection dropped
}

// startCutProxy starts a proxy to the NATS server at target (host:port), closed when t
// ends.
func startCutProxy(t *testing.T, target, subject string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, subject: []byte(subject), cut: make(chan struct{}, 16)}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { p.serve(client) })
		}
	}()
	return p
}

// url is the proxy's NATS URL.
func (p *cutProxy) url() string { return "nats://" + p.ln.Addr().String() }

// serve pipes one client connection to NATS and back.
func (p *cutProxy) serve(client net.Conn) {
	defer client.Close()
	upstream, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer upstream.Close()
	go func() {
		_, _ = io.Copy(client, upstream)
		client.Close()
	}()
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the last read, for a subject split between reads
	for {
		n, err := client.Read(buf)
		if n > 0 {
			seen := append(tail, buf[:n]...)
			if p.armed.Load() && bytes.Contains(seen, p.subject) {
				p.armed.Store(false)
				p.cut <- struct{}{}
				return // both connections close; the message never reaches NATS
			}
			tail = append(tail[:0], seen[max(0, len(seen)-len(p.subject)):]...)
			if _, err := upstream.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestNATS_dispatchInFlightWhenConnectionDrops: the node's connection to NATS drops
// while a dispatch waits for JetStream's answer (here: the publish never reached NATS).
// The answer cannot come over a connection that is gone, so the dispatch should fail
// at once with UNAVAILABLE for the client to re-send, as new dispatches do while NATS is
// unreachable (scale-out.md, failure modes).
func TestNATS_dispatchInFlightWhenConnectionDrops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	natsURL := startNATS(t)
	proxy := startCutProxy(t, strings.TrimPrefix(natsURL, "nats://"), "actionsync.ch.board:inflight")
	node := startServe(t, "node", "--broker", "nats", "--nats-url", proxy.url())
	client := node.client(t)
	const channel = "board:inflight"
	if _, err := dispatchBatch(ctx, t, client, channel, "writer", batchOf(t, "a", 0, 1)); err != nil {
		t.Fatalf("Dispatch before the cut: %v", err)
	}

	proxy.armed.Store(true)
	batch := batchOf(t, "a", 1, 1)
	start := time.Now()
	_, err := dispatchBatch(ctx, t, client, channel, "writer", batch)
	took := time.Since(start)
	select {
	case <-proxy.cut:
	default:
		t.Fatalf("the proxy cut nothing; the dispatch got %v", err)
	}
	if connect.CodeOf(err) != connect.CodeUnavailable || took > time.Second {
		t.Errorf("Dispatch in flight when the connection dropped: got %v after %v, want unavailable within 1s", err, took)
	}
	// The client re-sends; the node is back on NATS within its reconnect wait.
	waitUntil(t, 10*time.Second, "the re-sent dispatch acked", func() bool {
		acks, err := dispatchBatch(ctx, t, client, channel, "writer", batch)
		if err != nil {
			return false
		}
		if acks[0].GetSeq() != 2 || acks[0].GetDuplicate() {
			t.Fatalf("re-sent Dispatch: got %v, want seq 2, not a duplicate (the first never reached NATS)", acks)
		}
		return true
	})
}
