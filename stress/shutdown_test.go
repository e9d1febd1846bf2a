package stress

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestStress_ShutdownUnderLoad (scenario 6, guarantee 9): SIGTERM while 500
// subscribers stream, publishers dispatch as fast as they are answered, subscriber
// processes are stopped (SIGSTOP) and HTTP/2 clients have stopped reading. The process
// exits 0 within --shutdown-timeout; every action acknowledged before or during the drain
// reached every subscriber that was reading, whose streams end with UNAVAILABLE. With
// --data-dir, every acknowledged action is in History after a restart, exactly once,
// and the subscribers resume there without a gap or reset.
func TestStress_ShutdownUnderLoad(t *testing.T) {
	for _, durable := range []bool{false, true} {
		name := "memory"
		if durable {
			name = "data_dir"
		}
		t.Run(name, func(t *testing.T) { shutdownUnderLoad(t, durable) })
	}
}

// shutdownUnderLoad runs rounds of the scenario, each on a fresh server, until the
// duration has passed (one round in the short form): a long form repeats the shutdown,
// whose load before SIGTERM is capped at 10 s.
func shutdownUnderLoad(t *testing.T, durable bool) {
	s := begin(t)
	start := time.Now()
	var sum shutdownResult
	rounds := 0
	for round := 1; ; round++ {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			r := shutdownRound(t, s, durable, round == 1)
			sum.acks += r.acks
			sum.drained += r.drained
			sum.streams += r.streams
			sum.slowest = max(sum.slowest, r.slowest)
		})
		rounds++
		if t.Failed() || time.Since(start) >= s.duration {
			break
		}
	}
	if rounds > 1 {
		s.figure("%d rounds in %v, each on a fresh server: %d acks in all, %d of them during a drain; %d streams ended, every one unavailable with every acknowledged action of its channel; slowest exit %v after SIGTERM",
			rounds, time.Since(start).Round(time.Second), sum.acks, sum.drained, sum.streams, sum.slowest.Round(time.Millisecond))
	}
}

// shutdownResult is what one round of the shutdown scenario counted.
type shutdownResult struct {
	acks, drained, streams int
	slowest                time.Duration
}

// shutdownRound is one round: load, SIGTERM, checks. The first round (detail) records
// its figures.
func shutdownRound(t *testing.T, s *scenario, durable, detail bool) shutdownResult {
	const (
		nSubs       = 500
		nChannels   = 10
		nPublishers = 4
		nStopped    = 5 // subscriber processes, SIGSTOPped
		nNotReading = 5
		timeout     = 10 * time.Second
	)
	args := []string{"--shutdown-timeout", timeout.String()}
	var dir string
	if durable {
		dir = t.TempDir()
		args = append(args, "--data-dir", dir)
	}
	srv := startProc(t, "shutdown", args...)
	ctx, cancel := context.WithTimeout(t.Context(), s.duration+2*time.Minute)
	defer cancel()
	channels := make([]string, nChannels)
	for i := range channels {
		channels[i] = fmt.Sprintf("shutdown:%d", i)
	}

	// Subscribers, ten to a connection, each following one channel from seq 1.
	type ending struct {
		f   *follower
		err error
	}
	var (
		subs  []*follower
		ended = make(chan ending, nSubs)
	)
	readiesBefore := make(chan struct{}, nSubs)
	var cs *conns
	for i := range nSubs {
		if i%10 == 0 {
			cs = newConns(t, 0, 0)
		}
		f := newFollower(fmt.Sprintf("sub-%d", i), []string{channels[i%nChannels]})
		subs = append(subs, f)
		client := cs.sync(srv.url)
		go func() {
			stream, err := client.Subscribe(ctx, connect.NewRequest(f.request()))
			if err != nil {
				ended <- ending{f, err}
				return
			}
			defer stream.Close()
			first := true
			for stream.Receive() {
				f.apply(stream.Msg())
				if first && stream.Msg().GetReady() != nil {
					first = false
					readiesBefore <- struct{}{}
				}
			}
			ended <- ending{f, stream.Err()}
		}()
	}
	for range nSubs {
		select {
		case <-readiesBefore:
		case <-time.After(30 * time.Second):
			t.Fatal("subscribers not ready within 30s")
		}
	}
	// The stopped and the not-reading clients follow a channel of their own, flooded
	// with 6 MB so that their buffers are full: the drain cannot finish their streams.
	const stuck = "shutdown:stuck"
	for range nStopped {
		p := startSubscriberProcess(t, srv.url, stuck)
		if err := p.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Process.Signal(syscall.SIGCONT) })
	}
	for range nNotReading {
		stream, err := newConns(t, 0, 0).sync(srv.url).Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{
			Positions: []*actionsyncv1.Position{{Channel: stuck, Live: true}}}))
		if err != nil || !stream.Receive() {
			t.Fatalf("a subscriber that stops reading: %v", err)
		}
		t.Cleanup(func() { go stream.Close() })
	}
	flood := newConns(t, 0, 0).sync(srv.url)
	for i := range 100 {
		if _, err := flood.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: stuck,
			Actions: []*actionsyncv1.Action{action(fmt.Sprintf("flood-%d", i), 60_000)}})); err != nil {
			t.Fatal(err)
		}
	}

	// Publishers dispatch as fast as they are answered; what fails (from the drain on)
	// is kept, as a client keeps what it must re-send.
	l := newLedger()
	var (
		pubMu   sync.Mutex
		failed  []*actionsyncv1.DispatchRequest
		refused = map[connect.Code]int{}
		pubs    sync.WaitGroup
	)
	for p := range nPublishers {
		rng := s.rng()
		client := newConns(t, 0, 0).sync(srv.url)
		pubs.Go(func() {
			for n := 0; ; {
				req := &actionsyncv1.DispatchRequest{Channel: channels[rng.IntN(nChannels)], ClientId: fmt.Sprintf("p%d", p)}
				for range 1 + rng.IntN(4) {
					req.Actions = append(req.Actions, action(fmt.Sprintf("p%d-%d", p, n), 60))
					n++
				}
				res, err := client.Dispatch(ctx, connect.NewRequest(req))
				if err != nil {
					pubMu.Lock()
					failed = append(failed, req)
					refused[connect.CodeOf(err)]++
					pubMu.Unlock()
					return // the server is going away
				}
				l.add(req.GetChannel(), res.Msg.GetAcks())
			}
		})
	}
	time.Sleep(min(s.duration/2, 10*time.Second))
	ackedAtTerm := l.total()
	start := time.Now()
	srv.signal(syscall.SIGTERM)
	err, exited := srv.wait(timeout + 5*time.Second)
	took := time.Since(start)
	if !exited {
		t.Fatalf("still running %v after SIGTERM (--shutdown-timeout %v)\n%s", took, timeout, srv.logs())
	}
	if err != nil {
		t.Errorf("exit after SIGTERM: %v, want 0\n%s", err, srv.logs())
	}
	if took > timeout+time.Second {
		t.Errorf("exit %v after SIGTERM, want within --shutdown-timeout %v", took, timeout)
	}
	pubs.Wait()

	// Every subscriber that was reading got every acknowledged action of its channel.
	heads := map[string]uint64{}
	for ch, acks := range l.acks {
		for _, a := range acks {
			heads[ch] = max(heads[ch], a.seq)
		}
	}
	codes := map[connect.Code]int{}
	short := 0
	for range nSubs {
		e := <-ended
		codes[connect.CodeOf(e.err)]++
		if connect.CodeOf(e.err) != connect.CodeUnavailable {
			t.Errorf("%s: stream ended with %v, want unavailable", e.f.name, e.err)
		}
		ch := e.f.channels[0]
		if got := e.f.at(ch).last; got < heads[ch] {
			if short++; short <= 5 {
				t.Errorf("%s: applied %q up to seq %d, but seq %d was acknowledged", e.f.name, ch, got, heads[ch])
			}
		}
		if fs, first := e.f.found(); fs.total() > 0 {
			t.Errorf("%s: %v; %q", e.f.name, fs, first)
		}
	}

	res := shutdownResult{acks: l.total(), drained: l.total() - ackedAtTerm, streams: nSubs, slowest: took}
	if detail {
		s.figure("%d subscribers on %d channels (10 per connection), %d publishers dispatching as fast as answered, %d subscriber processes SIGSTOPped, %d HTTP/2 clients not reading; --shutdown-timeout %v%s",
			nSubs, nChannels, nPublishers, nStopped, nNotReading, timeout, map[bool]string{true: ", --data-dir"}[durable])
		s.figure("round 1: SIGTERM after %d acks: exit 0 after %v; %d acks in all (%d during the drain); dispatches refused then: %v",
			ackedAtTerm, took.Round(time.Millisecond), l.total(), l.total()-ackedAtTerm, refused)
		s.figure("round 1: streams ended: %v; every reading subscriber had every acknowledged action of its channel: %v", codes, short == 0)
	}

	if !durable {
		return res
	}
	// Restarted on its directory: History holds every acknowledged action exactly once
	// (and perhaps a failed dispatch, stored before its answer was lost), and the
	// subscribers resume without a gap or reset.
	srv.restart()
	client := newConns(t, 0, 0).sync(srv.url)
	hs := readHistories(ctx, t, client, channels)
	checkLedger(t, l, hs, false)
	extra := 0
	for ch, h := range hs {
		known := map[string]bool{}
		for _, a := range l.acks[ch] {
			known[a.id] = true
		}
		for _, req := range failed {
			if req.GetChannel() == ch {
				for _, a := range req.GetActions() {
					known[a.GetId()] = true
				}
			}
		}
		for _, id := range h.ids {
			if !known[id] {
				t.Errorf("%q: History holds %s, which no one dispatched", ch, id)
			} else if !slices.ContainsFunc(l.acks[ch], func(a acked) bool { return a.id == id }) {
				extra++
			}
		}
	}
	var resumed sync.WaitGroup
	for i, f := range subs {
		if i%10 == 0 {
			cs = newConns(t, 0, 0) // ten to a connection, as before
		}
		client := cs.sync(srv.url)
		resumed.Go(func() {
			rctx, stop := context.WithTimeout(ctx, 20*time.Second)
			defer stop()
			stream, err := client.Subscribe(rctx, connect.NewRequest(f.request()))
			if err != nil {
				t.Errorf("%s: resume: %v", f.name, err)
				return
			}
			defer stream.Close()
			for stream.Receive() {
				f.apply(stream.Msg())
				if stream.Msg().GetReady() != nil {
					return
				}
			}
			t.Errorf("%s: resume ended before ready: %v", f.name, stream.Err())
		})
	}
	resumed.Wait()
	for _, f := range subs {
		checkFollower(t, f, hs, true)
	}
	if detail {
		s.figure("round 1: restarted on --data-dir: every acknowledged action in History once (%d more from dispatches whose answer the drain cut); all %d subscribers resumed to the head with no gap, duplicate or reset", extra, nSubs)
	}
	return res
}
