package stress

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// Where a churned stream ends.
const (
	endBeforeFirstByte = iota // cancelled before the first response byte
	endMidReplay              // cancelled during the replay of a long history
	endMidBatch               // cancelled while live batches pour in
	endIdle                   // cancelled while idle after ready
	endSync                   // a bidi Sync stream cancelled after its subscribe and a dispatch
	endReset                  // the connection is reset under the stream
	endKinds
)

var endNames = [endKinds]string{"before the first byte", "mid-replay", "mid-batch", "idle after ready", "Sync after a dispatch", "connection reset"}

// TestStress_ConnectCancelChurn (scenario 2, resource bounds): streams for the whole
// duration, at least 10,000 (scaled down for a duration under 20 s), of Subscribe and Sync over Connect, gRPC and gRPC-Web, opened and
// ended at random points: before the first byte, mid-replay, mid-batch, idle, after a
// dispatch on Sync, by a reset connection. Meanwhile a canary receives a live channel in
// order. Afterwards the server's goroutines and heap return to their baseline within a
// bounded wait, and its broker holds no subscription but the canary's.
func TestStress_ConnectCancelChurn(t *testing.T) {
	s := begin(t)
	const (
		workers        = 32
		replayLen      = 5000
		live           = "churn:live"
		replay         = "churn:replay"
		liveRate       = 300
		goroutineSlack = 8
		heapSlack      = 8 << 20
	)
	// At least this many streams; more if the duration has not passed by then. The rate is
	// the machine's, so a count scaled to the duration alone could outlast the deadline.
	least := min(s.scaled(10000, 500), 10000)
	// History is at its bound from the start, so that the heap measures what churn leaves.
	srv := startProc(t, "churn", "--history-size", fmt.Sprint(replayLen))
	ctx, cancel := context.WithTimeout(t.Context(), s.duration+2*time.Minute)
	defer cancel()

	setup := newConns(t, 0, 0)
	sc := setup.sync(srv.url)
	prefill := newLedger()
	// Every channel the churn writes to (the Sync streams dispatch to churn:sync:0..9)
	// starts full, so that a long run's heap measures what churn leaves, not history
	// growing to its bound (a 10-minute run grew ~22 MiB of it before).
	full := []string{replay, live}
	for i := range syncChannels {
		full = append(full, syncChannel(i))
	}
	for k, ch := range full {
		size := 100
		if k >= 2 {
			size = 20 // as the Sync streams' actions
		}
		for i := 0; i < replayLen; i += 100 {
			batch := make([]*actionsyncv1.Action, 100)
			for j := range batch {
				batch[j] = action(fmt.Sprintf("%s-%d", ch, i+j), size)
			}
			res, err := sc.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: ch, Actions: batch}))
			if err != nil {
				t.Fatal(err)
			}
			prefill.add(ch, res.Msg.GetAcks())
		}
	}
	cn := startCanary(t, srv.url, live)
	pub := startPacer(t, s, sc, "live", live, liveRate, 5, 100, prefill) // the canary follows from seq 1

	// Baseline: after a warm-up round of streams, with their connections closed.
	churn := func(n int, until time.Time) (byKind [endKinds]int64, codes map[string]int64) {
		var (
			next   atomic.Int64
			mu     sync.Mutex
			counts [endKinds]atomic.Int64
		)
		codes = map[string]int64{}
		var wg sync.WaitGroup
		for range workers {
			rng := s.rng()
			wg.Go(func() {
				var cs *conns
				for i := next.Add(1); (i <= int64(n) || time.Now().Before(until)) && ctx.Err() == nil; i = next.Add(1) {
					if cs == nil || rng.IntN(50) == 0 {
						if cs != nil {
							cs.close()
						}
						cs = newConns(t, 0, 0)
					}
					var opts []connect.ClientOption
					switch rng.IntN(3) {
					case 1:
						opts = append(opts, connect.WithGRPC())
					case 2:
						opts = append(opts, connect.WithGRPCWeb())
					}
					kind := rng.IntN(endKinds)
					err := churnOne(ctx, cs, cs.sync(srv.url, opts...), kind, rng.IntN(1000))
					counts[kind].Add(1)
					mu.Lock()
					codes[connect.CodeOf(err).String()]++
					mu.Unlock()
				}
				if cs != nil {
					cs.close()
				}
			})
		}
		wg.Wait()
		for k := range byKind {
			byKind[k] = counts[k].Load()
		}
		return byKind, codes
	}
	churn(200, time.Time{})
	settle := func(want func(*actionsyncv1.ServerStats) bool) (*actionsyncv1.ServerStats, time.Duration, bool) {
		start := time.Now()
		var st *actionsyncv1.ServerStats
		for time.Since(start) < 20*time.Second {
			var err error
			if st, err = srv.gcStats(ctx); err != nil {
				t.Fatal(err)
			}
			if want(st) {
				return st, time.Since(start), true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return st, time.Since(start), false
	}
	base, _, _ := settle(func(st *actionsyncv1.ServerStats) bool { return st.GetStreams() == 1 && st.GetSubscriptions() == 1 })
	var peakRSS uint64
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		for {
			select {
			case <-stopRSS:
				return
			case <-time.After(100 * time.Millisecond):
				peakRSS = max(peakRSS, srv.rss())
			}
		}
	}()

	start := time.Now()
	byKind, codes := churn(least, start.Add(s.duration))
	took := time.Since(start)
	var total int64
	for _, n := range byKind {
		total += n
	}
	close(stopRSS)
	<-rssDone

	after, settled, ok := settle(func(st *actionsyncv1.ServerStats) bool {
		return st.GetStreams() == 1 && st.GetSubscriptions() == 1 &&
			st.GetGoroutines() <= base.GetGoroutines()+goroutineSlack && st.GetHeapBytes() <= base.GetHeapBytes()+heapSlack
	})
	if !ok {
		t.Errorf("20s after the churn: %d streams, %d subscriptions, %d goroutines, heap %s; want 1 stream, 1 subscription (the canary's), at most %d goroutines and heap %s (baseline + slack)",
			after.GetStreams(), after.GetSubscriptions(), after.GetGoroutines(), mib(after.GetHeapBytes()),
			base.GetGoroutines()+goroutineSlack, mib(base.GetHeapBytes()+heapSlack))
		t.Logf("the server's goroutines:\n%s", srv.goroutines(ctx))
		t.Logf("the server's heap profile: %s (go tool pprof -top %s FILE)", srv.saveHeapProfile(ctx), serverBinary)
	}

	pub.stop(t)
	head := uint64(0)
	for _, a := range prefill.acks[live] {
		head = max(head, a.seq)
	}
	cn.f.waitAt(t, live, head, 10*time.Second)
	cn.stop(t)
	checkFollower(t, cn.f, historyOf(t, pub.l, live), true)

	s.figure("%d streams in %v (%.0f/s) by %d workers over Connect, gRPC and gRPC-Web, each on a connection shared with ~50 others", total, took.Round(time.Millisecond), float64(total)/took.Seconds(), workers)
	var ends string
	for k, n := range byKind {
		ends += fmt.Sprintf("%s %d; ", endNames[k], n)
	}
	s.figure("ended: %s", ends)
	s.figure("stream results by code: %v", codes)
	s.figure("baseline (after a warm-up of 200 streams, GC): %d goroutines, heap %s, 1 stream, 1 subscription (the canary)", base.GetGoroutines(), mib(base.GetHeapBytes()))
	s.figure("after the churn, settled in %v: %d goroutines, heap %s, %d streams, %d subscriptions; peak RSS during %s",
		settled.Round(time.Millisecond), after.GetGoroutines(), mib(after.GetHeapBytes()), after.GetStreams(), after.GetSubscriptions(), mib(peakRSS))
	s.figure("canary: %d actions of %q in order, no gap, duplicate or reset; equal to its acks", head, live)
}

// churnOne opens one stream and ends it as kind says; at is a random number that
// places the end. It returns the stream's error, if any.
func churnOne(ctx context.Context, cs *conns, client actionsyncv1connect.SyncServiceClient, kind, at int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	subscribe := func(positions ...*actionsyncv1.Position) (*connect.ServerStreamForClient[actionsyncv1.SubscribeResponse], error) {
		return client.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: positions}))
	}
	replayFrom := &actionsyncv1.Position{Channel: "churn:replay", AfterSeq: uint64(at)}
	liveAt := &actionsyncv1.Position{Channel: "churn:live", Live: true}
	switch kind {
	case endBeforeFirstByte:
		go func() {
			time.Sleep(time.Duration(at%2000) * time.Microsecond)
			cancel()
		}()
		stream, err := subscribe(replayFrom)
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
		}
		return stream.Err()
	case endMidReplay, endMidBatch, endIdle, endReset:
		stream, err := subscribe(replayFrom, liveAt)
		if err != nil {
			return err
		}
		defer stream.Close()
		msgs, ready := 0, false
		for stream.Receive() {
			msgs++
			ready = ready || stream.Msg().GetReady() != nil
			switch {
			case kind == endMidReplay && msgs > at%3:
				cancel()
			case kind == endMidBatch && ready && len(stream.Msg().GetActions()) > 0:
				if at%3 == 0 {
					cancel()
				}
				at /= 3
			case kind == endIdle && ready:
				time.Sleep(time.Duration(at%50) * time.Millisecond)
				cancel()
			case kind == endReset && msgs > at%4:
				cs.reset()
			}
		}
		return stream.Err()
	case endSync:
		stream := client.Sync(ctx)
		defer func() {
			_ = stream.CloseRequest()
			_ = stream.CloseResponse()
		}()
		_ = stream.Send(&actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Subscribe{Subscribe: &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{liveAt}}}})
		_ = stream.Send(&actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Dispatch{Dispatch: &actionsyncv1.DispatchRequest{
			Channel: syncChannel(at % syncChannels), Actions: []*actionsyncv1.Action{action("", 20)}}}})
		for i := 0; i < at%4; i++ {
			if _, err := stream.Receive(); err != nil {
				return err
			}
		}
		cancel()
		_, err := stream.Receive()
		return err
	}
	return nil
}

// syncChannels is how many channels the churn's Sync streams dispatch to.
const syncChannels = 10

// syncChannel names the i-th channel the churn's Sync streams dispatch to.
func syncChannel(i int) string { return fmt.Sprintf("churn:sync:%d", i) }
