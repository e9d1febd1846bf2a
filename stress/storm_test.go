package stress

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// Kinds of cut in the recovery storm.
const (
	cutCancel = iota // the client cancels its stream
	cutReset         // the client's TCP connection is reset (RST)
	cutStall         // the client stops reading until the server cuts it off as too slow
	cutKinds
)

// stormSub is one subscriber of the storm: a follower on its own connection, resuming
// whenever its stream ends.
type stormSub struct {
	f     *follower
	conns *conns

	mu       sync.Mutex
	cutting  bool // a cut is under way: not picked again until its stream is back
	kind     int
	cancel   context.CancelFunc
	stallFor time.Duration
}

// TestStress_RecoveryStorm (scenario 1, guarantees 1, 4 and 7): 500 subscribers on 20
// channels while publishers dispatch; every 50 ms a random tenth of the subscribers is
// cut (client cancel, TCP reset, or a stall until the server cuts the slow consumer off)
// and resumes from its last applied seq. At the end every subscriber's sequence on each
// channel equals History, every acknowledged action is in History once, and no
// subscriber saw a gap, duplicate, reorder or reset.
func TestStress_RecoveryStorm(t *testing.T) {
	s := begin(t)
	const (
		nSubs       = 500
		nChannels   = 20
		nPublishers = 8
		queueSize   = 64
		window      = 4 << 10 // HTTP/2 stream window of the subscribers: a stall fills it fast
	)
	rate := int(envUint("STRESS_RATE", 400)) // actions per second, all publishers together
	srv := startProc(t, "storm", "--queue-size", fmt.Sprint(queueSize), "--max-dispatch-actions", "10", "--history-size", "2000000",
		"--history-max-bytes", "4GiB", "--history-channel-max-bytes", "1GiB")
	ctx, cancel := context.WithTimeout(t.Context(), s.duration+2*time.Minute)
	defer cancel()

	channels := make([]string, nChannels)
	for i := range channels {
		channels[i] = fmt.Sprintf("storm:%d", i)
	}
	rng := s.rng()
	subs := make([]*stormSub, nSubs)
	for i := range subs {
		chs := slices.Clone(channels)
		rng.Shuffle(len(chs), func(a, b int) { chs[a], chs[b] = chs[b], chs[a] })
		subs[i] = &stormSub{f: newFollower(fmt.Sprintf("sub-%d", i), chs[:1+rng.IntN(3)]), conns: newConns(t, window, 0)}
	}

	var (
		cutsByKind        [cutKinds]atomic.Int64
		serverCuts        atomic.Int64 // streams the server ended as too slow
		unplanned         atomic.Int64 // healthy streams cut off as too slow under load
		unexpected        atomic.Int64
		firstUnexp        sync.Once
		firstErr          string
		subsDone          sync.WaitGroup
		subsCtx, stopSubs = context.WithCancel(ctx)
	)
	for _, sub := range subs {
		subRng := s.rng()
		subsDone.Go(func() {
			client := sub.conns.sync(srv.url)
			for subsCtx.Err() == nil {
				err, stalled := sub.run(subsCtx, client)
				if subsCtx.Err() != nil {
					return
				}
				sub.mu.Lock()
				kind, cutting := sub.kind, sub.cutting
				sub.cutting = false
				sub.mu.Unlock()
				code := connect.CodeOf(err)
				switch {
				case code == connect.CodeResourceExhausted && stalled:
					serverCuts.Add(1)
				case code == connect.CodeResourceExhausted:
					unplanned.Add(1)
				case cutting && kind == cutCancel && code == connect.CodeCanceled:
				case cutting && kind == cutReset && err != nil && code != connect.CodeCanceled:
					// A reset connection: connect-go reports the transport error as
					// unavailable or internal, depending on where it hit.
				default:
					unexpected.Add(1)
					firstUnexp.Do(func() { firstErr = fmt.Sprintf("%s (cut %v, kind %d): %v", sub.f.name, cutting, kind, err) })
				}
				time.Sleep(time.Duration(subRng.IntN(10)) * time.Millisecond) // backoff
			}
		})
	}

	// Publishers dispatch at rate, in batches of 1 to 5 actions on random channels, and
	// re-send a failed dispatch with the same ids.
	l := newLedger()
	var (
		pubDone          sync.WaitGroup
		pubCtx, stopPubs = context.WithCancel(ctx)
		dispatchErrs     atomic.Int64
	)
	for p := range nPublishers {
		pubRng := s.rng()
		pubDone.Go(func() {
			client := newConns(t, 0, 0).sync(srv.url)
			next := time.Now()
			for n := 0; pubCtx.Err() == nil; {
				ch := channels[pubRng.IntN(nChannels)]
				batch := make([]*actionsyncv1.Action, 1+pubRng.IntN(5))
				for i := range batch {
					batch[i] = action(fmt.Sprintf("p%d-%d", p, n), 40+pubRng.IntN(120))
					n++
				}
				for {
					res, err := client.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: ch, ClientId: fmt.Sprintf("p%d", p), Actions: batch}))
					if err == nil {
						l.add(ch, res.Msg.GetAcks())
						break
					}
					dispatchErrs.Add(1)
					if ctx.Err() != nil {
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
				next = next.Add(time.Duration(len(batch)) * time.Second * nPublishers / time.Duration(rate))
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				} else if d < -time.Second {
					next = time.Now() // behind by more than a second: don't burst to catch up
				}
			}
		})
	}

	// The storm: every 50 ms a tenth of the subscribers not already being cut.
	start := time.Now()
	ticker := time.NewTicker(50 * time.Millisecond)
	var peakRSS uint64
	for time.Since(start) < s.duration {
		<-ticker.C
		peakRSS = max(peakRSS, srv.rss())
		stalled := 0
		for _, sub := range subs {
			sub.mu.Lock()
			if sub.cutting && sub.kind == cutStall {
				stalled++
			}
			sub.mu.Unlock()
		}
		for _, i := range rng.Perm(nSubs)[:nSubs/10] {
			sub := subs[i]
			kind := rng.IntN(cutKinds)
			if kind == cutStall && stalled >= nSubs/10 {
				kind = rng.IntN(cutStall)
			}
			sub.mu.Lock()
			if sub.cutting || sub.cancel == nil {
				sub.mu.Unlock()
				continue
			}
			sub.cutting, sub.kind = true, kind
			switch kind {
			case cutCancel:
				sub.cancel()
			case cutReset:
				sub.conns.reset()
			case cutStall:
				stalled++
				sub.stallFor = time.Duration(1000+rng.IntN(3000)) * time.Millisecond
			}
			sub.mu.Unlock()
			cutsByKind[kind].Add(1)
		}
	}
	ticker.Stop()
	stopPubs()
	pubDone.Wait()
	stormTook := time.Since(start)

	// Every subscriber catches up with the head of its channels, then stops.
	heads := map[string]uint64{}
	l.mu.Lock()
	for ch, acks := range l.acks {
		for _, a := range acks {
			heads[ch] = max(heads[ch], a.seq)
		}
	}
	l.mu.Unlock()
	caughtUp := func() bool {
		for _, sub := range subs {
			for _, ch := range sub.f.channels {
				if sub.f.at(ch).last < heads[ch] {
					return false
				}
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	for !caughtUp() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	caughtUpIn := time.Since(start) - stormTook
	stopSubs()
	subsDone.Wait()

	hs := readHistories(ctx, t, newConns(t, 0, 0).sync(srv.url), channels)
	checked := checkLedger(t, l, hs, true)
	var (
		total    faults
		applied  int64
		sessions int
	)
	for _, sub := range subs {
		checkFollower(t, sub.f, hs, true)
		fs, _ := sub.f.found()
		total.add(fs)
		sub.f.mu.Lock()
		applied += sub.f.applied
		sessions += sub.f.sessions
		sub.f.mu.Unlock()
	}
	if n := unexpected.Load(); n > 0 {
		t.Errorf("%d streams ended unexpectedly; the first: %s", n, firstErr)
	}
	if serverCuts.Load() == 0 && s.duration >= 5*time.Second {
		t.Errorf("no stall was cut off by the server: the slow-consumer cut was not exercised")
	}

	s.figure("%d subscribers on %d channels (1-3 each), %d publishers at %d actions/s, server --queue-size %d, subscriber stream window %d B",
		nSubs, nChannels, nPublishers, rate, queueSize, window)
	s.figure("storm %v: %d actions acknowledged (%.0f/s), %d dispatch retries", stormTook.Round(time.Millisecond), l.total(), float64(l.total())/stormTook.Seconds(), dispatchErrs.Load())
	s.figure("cuts: %d client cancels, %d TCP resets, %d stalls of 1-4 s (%d cut off by the server as too slow, the rest outlasted), %d streams cut off as slow without a stall",
		cutsByKind[cutCancel].Load(), cutsByKind[cutReset].Load(), cutsByKind[cutStall].Load(), serverCuts.Load(), unplanned.Load())
	s.figure("%d streams opened (resumes), %d actions applied (%.0f/s), all caught up %v after the storm",
		sessions, applied, float64(applied)/stormTook.Seconds(), caughtUpIn.Round(time.Millisecond))
	s.figure("checked: %d acks against History (exactly once), every subscriber's sequence per channel equals History: %v; unexpected stream ends: %d",
		checked, total, unexpected.Load())
	s.figure("server peak RSS %s", mib(peakRSS))
}

// run opens one stream from the follower's position and applies what arrives until it
// ends; a requested stall stops reading for a while, as a busy client does, and then
// lets the subscriber be picked for a cut again. It returns the stream's error and
// whether it stalled.
func (sub *stormSub) run(ctx context.Context, client actionsyncv1connect.SyncServiceClient) (err error, stalled bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Subscribe(ctx, connect.NewRequest(sub.f.request()))
	if err != nil {
		return err, false
	}
	defer stream.Close()
	sub.mu.Lock()
	sub.cancel = cancel
	sub.mu.Unlock()
	defer func() {
		sub.mu.Lock()
		sub.cancel = nil
		sub.mu.Unlock()
	}()
	for stream.Receive() {
		sub.f.apply(stream.Msg())
		sub.mu.Lock()
		stall := sub.stallFor
		sub.stallFor = 0
		sub.mu.Unlock()
		if stall > 0 {
			stalled = true
			select {
			case <-time.After(stall):
			case <-ctx.Done():
			}
			sub.mu.Lock()
			sub.cutting = false
			sub.mu.Unlock()
		}
	}
	if err := stream.Err(); err != nil {
		return err, stalled
	}
	return errors.New("stream ended without an error"), stalled
}
