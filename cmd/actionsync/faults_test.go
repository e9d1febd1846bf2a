package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

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
