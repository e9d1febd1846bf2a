package main

import (
	"context"
	"fmt"
	"sync"
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
