package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker/jetstream/embedded"
)

// startNATS starts a nats-server with JetStream in the test process, listening on
// loopback, and returns its client URL. It stops when t ends, after the processes
// started later.
func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

// startNodes starts one `actionsync serve --broker nats` process per name on the NATS
// servers of natsURL, all at once, and returns them in the order of names.
func startNodes(t *testing.T, natsURL string, names ...string) []*serveProc {
	t.Helper()
	nodes := make([]*serveProc, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			nodes[i], errs[i] = tryStartServe(t, name, "--broker", "nats", "--nats-url", natsURL)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// TestNodes_oneOrder: three processes on one NATS; publishers race on one channel
// through two of them, with batches. Every subscriber on every node applies the same
// sequence, seqs 1..N with no gap, duplicate or reorder, and it is History's as node A
// reads it; every dispatched action is in it once, at the seq of its ack.
func TestNodes_oneOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	nodes := startNodes(t, startNATS(t), "A", "B", "C")
	const (
		channel    = "board:one-order"
		publishers = 4 // two on B, two on C
		perPub     = 100
		total      = publishers * perPub
	)

	followCtx, stopFollowing := context.WithCancel(ctx)
	var following sync.WaitGroup
	var followers []*follower
	for _, n := range nodes {
		for j := range 2 {
			f := newFollower(fmt.Sprintf("sub-%s%d", n.name, j), channel, 0, "")
			followers = append(followers, f)
			client := n.client(t)
			following.Go(func() {
				err := f.follow(followCtx, client)
				if followCtx.Err() == nil {
					f.fault("stream on %s ended with %v, want it open", n.name, err)
				}
			})
		}
	}
	waitUntil(t, 10*time.Second, "every subscriber's ready", func() bool {
		for _, f := range followers {
			if f.readyCount() == 0 {
				return false
			}
		}
		return true
	})

	var (
		mu     sync.Mutex
		seqOf  = map[string]uint64{} // acked id -> seq
		byNode = map[uint64]string{} // acked seq -> id
	)
	var publishing sync.WaitGroup
	for p := range publishers {
		n := nodes[1+p%2]
		client := n.client(t)
		publishing.Go(func() {
			prefix := fmt.Sprintf("%s%d", n.name, p)
			var last uint64
			for i := 0; i < perPub; {
				size := min(1+(i/3+p)%4, perPub-i) // batches of 1..4
				batch := batchOf(t, prefix, i, size)
				i += size
				acks, err := dispatchBatch(ctx, t, client, channel, "pub-"+prefix, batch)
				if err != nil {
					t.Errorf("Dispatch of %s through %s: %v", batch[0].GetId(), n.name, err)
					return
				}
				mu.Lock()
				for _, a := range acks {
					if a.GetDuplicate() {
						t.Errorf("ack %v: got duplicate, want a new action", a)
					}
					if a.GetSeq() <= last {
						t.Errorf("publisher %s: ack %v after seq %d, want seqs increasing", prefix, a, last)
					}
					if id, ok := byNode[a.GetSeq()]; ok {
						t.Errorf("seq %d acked for %s and %s", a.GetSeq(), id, a.GetId())
					}
					last = a.GetSeq()
					seqOf[a.GetId()], byNode[a.GetSeq()] = a.GetSeq(), a.GetId()
				}
				mu.Unlock()
			}
		})
	}
	publishing.Wait()
	if t.Failed() {
		stopFollowing()
		following.Wait()
		return
	}

	history := waitHistory(ctx, t, nodes[0].client(t), channel, total)
	if len(history) != total {
		t.Fatalf("History on A: got %d actions, want %d", len(history), total)
	}
	for _, a := range history {
		if seq, ok := seqOf[a.GetId()]; !ok || seq != a.GetSeq() {
			t.Errorf("History on A: got %s at seq %d, acked at seq %d (acked: %v)", a.GetId(), a.GetSeq(), seq, ok)
		}
	}
	waitUntil(t, 10*time.Second, fmt.Sprintf("every subscriber at seq %d", total), func() bool {
		for _, f := range followers {
			if f.last() < total {
				return false
			}
		}
		return true
	})
	stopFollowing()
	following.Wait()
	want := appliedOf(history)
	for _, f := range followers {
		f.check(t, want)
	}
}

// TestNodes_killNode: subscribers on node A and a publisher on node B; A is SIGKILLed
// mid-stream and its subscribers resume on C from the last seq they applied, with the
// epoch of their last ready; then B is SIGKILLed mid-stream and the publisher re-sends
// its unacknowledged dispatch, same ids, through C. History holds every dispatched action
// exactly once in dispatch order, each at the seq of its ack, and every subscriber
// applied exactly History.
func TestNodes_killNode(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	nodes := startNodes(t, startNATS(t), "A", "B", "C")
	a, b, c := nodes[0], nodes[1], nodes[2]
	const channel = "board:kill-node"

	// Subscribers on A; when their stream breaks, they resume on C.
	followCtx, stopFollowing := context.WithCancel(ctx)
	var following sync.WaitGroup
	var followers []*follower
	var aKilled, bKilled atomic.Bool
	for i := range 3 {
		f := newFollower(fmt.Sprintf("sub-%d", i), channel, 0, "")
		followers = append(followers, f)
		onA, onC := a.client(t), c.client(t)
		following.Go(func() {
			err := f.follow(followCtx, onA)
			if followCtx.Err() != nil {
				return
			}
			if !aKilled.Load() {
				f.fault("stream on A ended with %v before A was killed", err)
			}
			t.Logf("%s: stream on A ended at seq %d with %v; resuming on C", f.name, f.last(), err)
			err = f.follow(followCtx, onC)
			if followCtx.Err() == nil {
				f.fault("stream on C ended with %v, want it open", err)
			}
		})
	}
	waitUntil(t, 10*time.Second, "every subscriber's ready", func() bool {
		for _, f := range followers {
			if f.readyCount() == 0 {
				return false
			}
		}
		return true
	})

	// The publisher dispatches through B until stopped, and re-sends a dispatch that
	// fails, with the same ids, through C.
	var (
		mu      sync.Mutex
		acked   []applied // in ack order
		resent  []string  // the first id of each re-sent dispatch, and how it was answered
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
		client, via := b.client(t), "B"
		onC := c.client(t)
		for i := 0; ; {
			select {
			case <-stop:
				return
			default:
			}
			batch := batchOf(t, "p", i, 1+i%3)
			i += len(batch)
			for attempt := 1; ; attempt++ {
				acks, err := dispatchBatch(ctx, t, client, channel, "publisher", batch)
				if err == nil {
					mu.Lock()
					if attempt > 1 {
						resent = append(resent, fmt.Sprintf("%s (duplicate: %v)", batch[0].GetId(), acks[0].GetDuplicate()))
					} else if acks[0].GetDuplicate() {
						t.Errorf("first dispatch of %s: got a duplicate ack", batch[0].GetId())
					}
					for _, a := range acks {
						acked = append(acked, applied{a.GetSeq(), a.GetId()})
					}
					mu.Unlock()
					break
				}
				if ctx.Err() != nil || via == "C" || !bKilled.Load() {
					t.Errorf("Dispatch of %s through %s (attempt %d): %v", batch[0].GetId(), via, attempt, err)
					return
				}
				client, via = onC, "C" // what a client behind a load balancer gets
			}
		}
	}()

	waitUntil(t, 20*time.Second, "100 acks", func() bool { return ackedCount() >= 100 })
	aKilled.Store(true)
	a.kill(t)
	t.Logf("killed A after %d acks", ackedCount())
	waitUntil(t, 20*time.Second, "every subscriber resumed on C", func() bool {
		for _, f := range followers {
			if f.readyCount() < 2 {
				return false
			}
		}
		return true
	})
	atResume := ackedCount()
	waitUntil(t, 20*time.Second, "100 more acks", func() bool { return ackedCount() >= atResume+100 })
	bKilled.Store(true)
	b.kill(t)
	atKill := ackedCount()
	t.Logf("killed B after %d acks", atKill)
	waitUntil(t, 20*time.Second, "100 acks through C", func() bool { return ackedCount() >= atKill+100 })
	close(stop)
	<-stopped
	mu.Lock()
	t.Logf("%d actions acked; re-sent through C: %v", len(acked), resent)
	want := acked
	mu.Unlock()
	if len(resent) == 0 && !t.Failed() {
		t.Errorf("no dispatch failed when B was killed, want the one in flight re-sent through C")
	}

	history := waitHistory(ctx, t, c.client(t), channel, len(want))
	if d := diffSequence(appliedOf(history), want); d != "" {
		t.Errorf("History on C vs the acks in dispatch order: %s", d)
	}
	waitUntil(t, 10*time.Second, fmt.Sprintf("every subscriber at seq %d", len(history)), func() bool {
		for _, f := range followers {
			if f.last() < uint64(len(history)) {
				return false
			}
		}
		return true
	})
	stopFollowing()
	following.Wait()
	for _, f := range followers {
		f.check(t, appliedOf(history))
		if got := f.readyCount(); got != 2 {
			t.Errorf("%s: got %d ready messages, want 2 (on A, then on C)", f.name, got)
		}
	}
}
