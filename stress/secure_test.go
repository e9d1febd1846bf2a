package stress

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/auth"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// The secure scenario's settings.
const (
	secureGrace      = 500 * time.Millisecond // --auth-stream-grace
	secureLate       = 1 * time.Second        // how long after exp + grace an expired stream may end at the client
	secureQuickBound = 5 * time.Second        // garbage, HTTP in clear, unknown ALPN: answered within this
	// The server closes a connection that completes no handshake, or sends no request
	// after it, within 10 s: net/http bounds the handshake and an HTTP/1.1 request's
	// header by the read-header timeout (readHeaderTimeout in cmd/actionsync), and waits
	// 10 s for an HTTP/2 client's preface.
	secureStallBound = 12 * time.Second
	secureMaxStalls  = 16 // stalled connections open at once
	refuserSubs      = 8  // identities per refuser, to stay far below the dispatch quota
)

// TestStress_SecureUnderLoad (scenario 8, guarantees 4, 6 and 8 over TLS): one server
// with TLS and HS256 tokens (--auth-stream-grace 500ms). 150 followers on 10 channels
// over TLS (HTTP/2 by ALPN with Connect or gRPC, HTTP/1.1 with Connect or gRPC-Web), each
// with a token of 2 to 6 s that covers only its channels: the server ends each stream at
// its token's expiry plus the grace with UNAUTHENTICATED "token expired at …", and the
// follower mints a fresh token and resumes from its last seq and epoch. Publishers with
// short-lived tokens dispatch throughout, re-sending a dispatch refused as expired with a
// fresh token and the same ids. Meanwhile 3 workers send requests that must be refused
// (expired, badly signed, rights without publish, channels outside the grants, types
// not granted, another's client id, malformed Authorization headers), each with its
// code and message, and a worker abuses the TLS port (garbage, HTTP in clear, unknown
// ALPN, stalled handshakes), each of which must end within its bound. A canary's
// stream, its token outliving the load, must never end. At the end every follower's
// sequence equals History, every ack is in History once, no refused id is, no refused
// channel was created, and the server is back at its baseline.
func TestStress_SecureUnderLoad(t *testing.T) {
	s := begin(t)
	const (
		nChannels      = 10
		nFollowers     = 150
		perConn        = 10 // clients per connection pool
		nPublishers    = 4
		rate           = 200 // actions per second, all publishers
		nRefusers      = 3
		goroutineSlack = 8
	)
	dir := t.TempDir()
	certFile, keyFile, roots := selfSigned(t, dir)
	r := &secureRun{s: s, roots: roots, l: newLedger(), refusedIDs: map[string]bool{}}
	r.secret = []byte(hex.EncodeToString(randBytes(s.rng(), 32)))
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, r.secret, 0o600); err != nil {
		t.Fatal(err)
	}
	r.srv = startProc(t, "secure", "--tls-cert", certFile, "--tls-key", keyFile, "--auth-hs256-secret-file", secretFile,
		"--auth-stream-grace", secureGrace.String(),
		"--history-size", "10000000", "--history-max-bytes", "4GiB", "--history-channel-max-bytes", "1GiB")
	srv := r.srv
	if !strings.HasPrefix(srv.url, "https://") {
		t.Fatalf("the server serves %s, want https://", srv.url)
	}
	ctx, cancel := context.WithTimeout(t.Context(), s.duration+2*time.Minute)
	defer cancel()
	for i := range nChannels {
		r.channels = append(r.channels, fmt.Sprintf("sec:%d", i))
	}
	r.pools = &tlsPools{t: t, roots: roots, perConn: perConn}
	all := auth.Grant{Channels: []string{"sec:*"}, Allow: []auth.Right{auth.RightSubscribe, auth.RightPublish, auth.RightHistory}}
	auditorToken := r.mint("auditor", time.Now().Add(s.duration+10*time.Minute), all)
	auditor := r.pools.newConns(true).sync(srv.url, connect.WithInterceptors(bearer(auditorToken)))

	// Warm-up, then the baseline: every channel created (one action each, in the ledger)
	// and a stream over each wire, their connections closed.
	for _, ch := range r.channels {
		res, err := auditor.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: ch, Actions: []*actionsyncv1.Action{action("warm-"+ch, 50)}}))
		if err != nil {
			t.Fatalf("warm-up dispatch over TLS: %v", err)
		}
		r.l.add(ch, res.Msg.GetAcks())
	}
	for _, w := range secureWires {
		if err := warmUp(ctx, r.pools.newConns(w.h2).sync(srv.url, w.opts...), auditorToken, r.channels[0]); err != nil {
			t.Fatalf("warm-up stream over %s: %v", w.name, err)
		}
	}
	r.pools.closeAll()
	base, _, ok := settleStats(ctx, srv, 20*time.Second, func(st *actionsyncv1.ServerStats) bool { return st.GetStreams() == 0 && st.GetSubscriptions() == 0 })
	if !ok {
		t.Fatalf("before the load: %d streams, %d subscriptions open, want 0", base.GetStreams(), base.GetSubscriptions())
	}

	// The canary: one stream for the whole load, its token outliving it.
	cn := newFollower("canary", r.channels[:1])
	canaryCtx, stopCanary := context.WithCancel(ctx)
	defer stopCanary()
	canaryEnded := make(chan error, 1)
	canaryClient := r.pools.client(srv.url, secureWires[0])
	canaryToken := r.mint("canary", time.Now().Add(s.duration+10*time.Minute), auth.Grant{Channels: cn.channels, Allow: []auth.Right{auth.RightSubscribe}})
	go func() {
		stream, err := canaryClient.Subscribe(canaryCtx, withToken(cn.request(), canaryToken))
		if err == nil {
			for stream.Receive() {
				cn.apply(stream.Msg())
			}
			err = stream.Err()
			stream.Close()
		}
		canaryEnded <- err
	}()

	// The load: followers, publishers, refusers and the TLS abuser, each with its PRNG.
	r.start = time.Now()
	var (
		wireCount         = make([]int, len(secureWires))
		syncCount         int // followers on Sync streams rather than Subscribe
		subs              []*follower
		subsDone          sync.WaitGroup
		subsCtx, stopSubs = context.WithCancel(ctx)
		pubsDone          sync.WaitGroup
		pubCtx, stopPubs  = context.WithCancel(ctx)
		refDone, abDone   sync.WaitGroup
	)
	defer stopSubs()
	defer stopPubs()
	for i := range nFollowers {
		rng := s.rng()
		sub := fmt.Sprintf("f%d", i)
		name := sub // its client id: the sub, or sub:device
		if rng.IntN(3) == 0 {
			name = fmt.Sprintf("%s:dev%d", sub, rng.IntN(100))
		}
		chs := slices.Clone(r.channels)
		rng.Shuffle(len(chs), func(a, b int) { chs[a], chs[b] = chs[b], chs[a] })
		f := newFollower(name, chs[:1+rng.IntN(2)])
		subs = append(subs, f)
		w := rng.IntN(len(secureWires))
		wireCount[w]++
		onSync := secureWires[w].h2 && rng.IntN(3) == 0 // bidi streams need HTTP/2
		if onSync {
			syncCount++
		}
		client := r.pools.client(srv.url, secureWires[w])
		subsDone.Go(func() { r.follow(subsCtx, rng, f, sub, secureWires[w], client, onSync) })
	}
	for p := range nPublishers {
		rng := s.rng()
		w := rng.IntN(len(secureWires))
		client := r.pools.client(srv.url, secureWires[w])
		pubsDone.Go(func() { r.publish(pubCtx, rng, p, rate/nPublishers, secureWires[w], client) })
	}
	for w := range nRefusers {
		rng := s.rng()
		clients := make([]actionsyncv1connect.SyncServiceClient, len(secureWires))
		for i, wire := range secureWires {
			clients[i] = r.pools.client(srv.url, wire)
		}
		refDone.Go(func() { r.refuse(ctx, rng, w, clients) })
	}
	arng := s.rng()
	abDone.Go(func() { r.abuse(ctx, arng, &abDone) })

	// The server must answer GetStats throughout.
	var peakRSS uint64
	var peakStreams uint32
	for time.Since(r.start) < s.duration {
		time.Sleep(100 * time.Millisecond)
		st, err := srv.stats(ctx)
		if err != nil {
			t.Errorf("the server stopped answering GetStats: %v", err)
			break
		}
		peakStreams = max(peakStreams, st.GetStreams())
		peakRSS = max(peakRSS, srv.rss())
	}
	refDone.Wait()
	stopPubs() // each publisher stops once its last dispatch is acknowledged
	pubsDone.Wait()
	loadTook := time.Since(r.start)

	// Every follower catches up with the heads, then stops.
	heads := map[string]uint64{}
	r.l.mu.Lock()
	for ch, acks := range r.l.acks {
		for _, a := range acks {
			heads[ch] = max(heads[ch], a.seq)
		}
	}
	r.l.mu.Unlock()
	followers := append(slices.Clip(subs), cn)
	for _, f := range followers {
		for _, ch := range f.channels {
			f.waitAt(t, ch, heads[ch], 60*time.Second)
		}
	}
	caughtUp := time.Since(r.start) - loadTook
	stopSubs()
	subsDone.Wait()
	select {
	case err := <-canaryEnded:
		t.Errorf("canary: its stream ended during the load: %v", err)
	default:
		stopCanary()
		<-canaryEnded
	}
	abDone.Wait() // stalls end within secureStallBound of their start
	abuseTook := time.Since(r.start)

	// The checks against History.
	hs := readHistories(ctx, t, auditor, r.channels)
	checked := checkLedger(t, r.l, hs, true)
	var (
		total    faults
		applied  int64
		sessions int
	)
	for _, f := range followers {
		checkFollower(t, f, hs, true)
		fs, _ := f.found()
		total.add(fs)
		f.mu.Lock()
		applied += f.applied
		sessions += f.sessions
		f.mu.Unlock()
	}
	present := 0
	for id := range r.refusedIDs {
		for ch, h := range hs {
			if seq, ok := h.seqOf[id]; ok {
				if present++; present <= 5 {
					t.Errorf("refused action %s is in History of %q at seq %d", id, ch, seq)
				}
			}
		}
	}
	if n := r.unexpected.Load(); n > 0 {
		t.Errorf("%d streams or dispatches ended unexpectedly; the first: %s", n, r.firstErr)
	}
	if r.expiries.Load() == 0 {
		t.Errorf("no stream ended at its token's expiry: the expiry path was not exercised")
	}
	var refusals, refusedDispatches int
	for k, tl := range r.refusals {
		refusals += tl.runs
		refusedDispatches += tl.answers["dispatch"]
		for _, f := range tl.fails {
			t.Errorf("refusal %q: %s", refuseNames[k], f)
		}
	}
	for k, tl := range r.abuses {
		for _, f := range tl.fails {
			t.Errorf("TLS abuse %q: %s", abuseNames[k], f)
		}
	}
	if srv.exited() {
		t.Fatalf("the server exited: %v\n%s", srv.err, srv.logs())
	}
	// Refusals and expiries are the clients' errors (logged at info), TLS handshake
	// failures net/http's (warn): nothing here is the server's own error.
	if n := srv.count("level=ERROR"); n > 0 {
		t.Errorf("the server logged %d errors; its last lines:\n%s", n, srv.logs())
	}
	// net/http's error lines (a failed handshake each) are rate-limited: a burst of 20,
	// then 1 a second (cmd/actionsync/errorlog.go), however many bad connections came.
	httpLines := srv.count(netHTTPLine)
	if limit := 20 + int(time.Since(r.start).Seconds()) + 1; httpLines > limit {
		t.Errorf("the server logged %d of net/http's error lines in %v, want at most %d (rate-limited)", httpLines, time.Since(r.start).Round(time.Second), limit)
	}

	// Back at the baseline once every client connection is closed.
	r.pools.closeAll()
	after, settled, ok := settleStats(ctx, srv, 20*time.Second, func(st *actionsyncv1.ServerStats) bool {
		return st.GetStreams() == 0 && st.GetSubscriptions() == 0 && st.GetGoroutines() <= base.GetGoroutines()+goroutineSlack
	})
	if !ok {
		t.Errorf("20s after the load: %d streams, %d subscriptions, %d goroutines; want 0, 0 and at most %d (baseline + %d)",
			after.GetStreams(), after.GetSubscriptions(), after.GetGoroutines(), base.GetGoroutines()+goroutineSlack, goroutineSlack)
		t.Logf("the server's goroutines:\n%s", srv.goroutines(ctx))
	}
	if after.GetChannels() != nChannels {
		t.Errorf("the server holds %d channels, want the %d dispatched to: a refused request created one", after.GetChannels(), nChannels)
	}

	p50, p99, maxLate := percentile(r.lateness, 0.5), percentile(r.lateness, 0.99), percentile(r.lateness, 1)
	s.figure("%d followers on %d channels (1-2 each, a token of 2-6 s per stream covering only its channels), %d publishers at %d actions/s (tokens of 2-8 s), %d refusers, 1 TLS abuser; --auth-stream-grace %v",
		nFollowers, nChannels, nPublishers, rate, nRefusers, secureGrace)
	var wires []string
	for i, w := range secureWires {
		wires = append(wires, fmt.Sprintf("%s %d", w.name, wireCount[i]))
	}
	s.figure("followers' wires: %s (%d of the HTTP/2 ones on Sync, the others on Subscribe); TLS handshakes of the clients: %d negotiated h2, %d http/1.1 (%d connection pools)",
		strings.Join(wires, ", "), syncCount, r.pools.handshakes[1].Load(), r.pools.handshakes[0].Load(), r.pools.count())
	s.figure("load %v: %d actions acknowledged (%.0f/s); %d dispatches refused as expired and re-sent with a fresh token (each then new, not a duplicate), %d re-sent after a connection failure",
		loadTook.Round(time.Millisecond), r.l.total(), float64(r.l.total())/loadTook.Seconds(), r.pubExpired.Load(), r.retries.Load())
	s.figure("stream expiries: %d, each UNAUTHENTICATED %q, seen by the client %v (p50) / %v (p99) / %v (max) after exp + grace; %d resumes, %d actions applied, all caught up %v after the load; unexpected ends: %d",
		r.expiries.Load(), "token expired at <exp>: reconnect with a fresh token and resume …", p50.Round(time.Millisecond), p99.Round(time.Millisecond), maxLate.Round(time.Millisecond),
		sessions-len(followers), applied, caughtUp.Round(time.Millisecond), r.unexpected.Load())
	var refs []string
	for k, tl := range r.refusals {
		refs = append(refs, fmt.Sprintf("%s %d", refuseNames[k], tl.runs))
	}
	s.figure("refusals: %d, each with its code and message (%s); %d of them dispatches, none of their %d ids in History; %d channels held",
		refusals, strings.Join(refs, ", "), refusedDispatches, len(r.refusedIDs), after.GetChannels())
	for k, tl := range r.abuses {
		s.figure("TLS abuse, %-34s %5d, answers %v, slowest %v", abuseNames[k]+":", tl.runs, tl.answers, tl.slowest.Round(time.Millisecond))
	}
	s.figure("checked: %d acks against History (exactly once); every follower's sequence per channel equals History: %v; the canary's stream (%d actions) never ended; the last stall ended %v after the start",
		checked, total, cn.at(r.channels[0]).last, abuseTook.Round(time.Millisecond))
	s.figure("server log: %d of net/http's error lines (rate-limited) for the TLS abuse above", httpLines)
	s.figure("server: baseline %d goroutines, heap %s; after the load, settled in %v: %d goroutines, heap %s, %d streams, %d subscriptions; peak %d streams, peak RSS %s",
		base.GetGoroutines(), mib(base.GetHeapBytes()), settled.Round(time.Millisecond), after.GetGoroutines(), mib(after.GetHeapBytes()),
		after.GetStreams(), after.GetSubscriptions(), peakStreams, mib(peakRSS))
}

// secureRun is what the secure scenario's goroutines share.
type secureRun struct {
	s        *scenario
	srv      *proc
	secret   []byte
	roots    *x509.CertPool
	pools    *tlsPools
	channels []string
	l        *ledger
	start    time.Time // of the load

	expiries   atomic.Int64 // streams ended at their token's expiry, as documented
	pubExpired atomic.Int64 // dispatches refused as expired, re-sent with a fresh token
	retries    atomic.Int64 // dispatches re-sent after a connection failure
	stalls     atomic.Int64 // stalled connections open
	unexpected atomic.Int64 // streams or dispatches that ended in a way the scenario does not explain

	mu         sync.Mutex
	firstErr   string
	lateness   []time.Duration // when the client saw an expired stream end, after exp + grace
	refusals   [refuseKinds]tally
	refusedIDs map[string]bool // ids of the refused dispatches' actions
	abuses     [abuseKinds]tally
}

// tally counts one kind of refusal or abuse: how many, the answers, the slowest, and
// the first failures.
type tally struct {
	runs    int
	answers map[string]int
	slowest time.Duration
	fails   []string
}

func (tl *tally) add(answer string, took time.Duration, err error) {
	if tl.answers == nil {
		tl.answers = map[string]int{}
	}
	tl.runs++
	tl.answers[answer]++
	tl.slowest = max(tl.slowest, took)
	if err != nil && len(tl.fails) < 3 {
		tl.fails = append(tl.fails, err.Error())
	}
}

// mint returns an HS256 token of sub that expires at exp.
func (r *secureRun) mint(sub string, exp time.Time, grants ...auth.Grant) string {
	tok, err := auth.Mint(auth.Claims{Subject: sub, Expires: exp, Rights: grants}, r.secret, "")
	if err != nil {
		panic(err) // a []byte key: never
	}
	return tok
}

// fail counts an unexpected end and keeps the first described.
func (r *secureRun) fail(format string, args ...any) {
	if r.unexpected.Add(1) == 1 {
		r.mu.Lock()
		r.firstErr = fmt.Sprintf(format, args...)
		r.mu.Unlock()
	}
}

// follow runs follower f of identity sub until ctx ends, on Subscribe streams or (onSync)
// on Sync streams: each stream with a fresh token of 2-6 s covering only its channels,
// each resuming from its last seq and epoch. Every stream must end at its token's exp +
// grace with UNAUTHENTICATED "token expired at …".
func (r *secureRun) follow(ctx context.Context, rng *rand.Rand, f *follower, sub string, w secureWire, client actionsyncv1connect.SyncServiceClient, onSync bool) {
	grant := auth.Grant{Channels: f.channels, Allow: []auth.Right{auth.RightSubscribe}}
	for ctx.Err() == nil {
		exp := expiry(time.Duration(2000+rng.IntN(4001)) * time.Millisecond)
		err := followOnce(ctx, client, f, r.mint(sub, exp, grant), onSync)
		ended := time.Now()
		if ctx.Err() != nil {
			return
		}
		switch late := ended.Sub(exp.Add(secureGrace)); {
		case !isStreamExpiry(err, exp):
			r.fail("%s over %s: stream ended with %v, want UNAUTHENTICATED %q", f.name, w.name, err, expiredMessage(exp))
			time.Sleep(10 * time.Millisecond)
		case late < -20*time.Millisecond: // the same clock: only rounding
			r.fail("%s: stream ended %v before its token's exp %v plus the grace", f.name, -late, exp.Format(time.RFC3339))
		case late > secureLate:
			r.fail("%s: stream ended %v after its token's exp %v plus the grace, bound %v", f.name, late, exp.Format(time.RFC3339), secureLate)
		default:
			r.expiries.Add(1)
			r.mu.Lock()
			r.lateness = append(r.lateness, late)
			r.mu.Unlock()
		}
	}
}

// followOnce opens one stream of f with token, a Subscribe or (onSync) a Sync with one
// subscribe, applies what arrives until it ends, and returns how it ended.
func followOnce(ctx context.Context, client actionsyncv1connect.SyncServiceClient, f *follower, token string, onSync bool) error {
	if !onSync {
		stream, err := client.Subscribe(ctx, withToken(f.request(), token))
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
			f.apply(stream.Msg())
		}
		return stream.Err()
	}
	stream := client.Sync(ctx)
	stream.RequestHeader().Set("Authorization", "Bearer "+token)
	defer func() {
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
	}()
	if err := stream.Send(&actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Subscribe{Subscribe: f.request()}}); err != nil {
		_, rerr := stream.Receive() // the server's answer, if it ended the stream
		return errors.Join(err, rerr)
	}
	for {
		m, err := stream.Receive()
		if err != nil {
			return err
		}
		f.apply(&actionsyncv1.SubscribeResponse{Actions: m.GetActions(), Reset_: m.GetReset_(), Ready: m.GetReady()})
	}
}

// publish dispatches as publisher p at rate actions per second until quit, in batches
// of 1-5 actions of two types to random channels, with tokens of 2-8 s that allow
// publishing those types on sec:*. A dispatch refused as expired is re-sent with a
// fresh token and the same ids, and must then be new: nothing of the refused one was
// applied. One that failed otherwise is re-sent until acknowledged.
func (r *secureRun) publish(quit context.Context, rng *rand.Rand, p, rate int, w secureWire, client actionsyncv1connect.SyncServiceClient) {
	grant := auth.Grant{Channels: []string{"sec:*"}, Allow: []auth.Right{auth.RightPublish}, Types: []string{"ADD_TASK", "MOVE_TASK"}}
	sub := fmt.Sprintf("pub%d", p)
	clientID := sub
	if rng.IntN(2) == 0 {
		clientID = sub + ":laptop"
	}
	ttl := func() time.Duration { return time.Duration(2000+rng.IntN(6001)) * time.Millisecond }
	exp := expiry(ttl())
	token := r.mint(sub, exp, grant)
	ctx := r.s.t.Context() // not quit: a dispatch under way is never cancelled
	next := time.Now()
	for n := 0; quit.Err() == nil; {
		ch := r.channels[rng.IntN(len(r.channels))]
		batch := make([]*actionsyncv1.Action, 1+rng.IntN(5))
		for i := range batch {
			batch[i] = action(fmt.Sprintf("%s-%d", sub, n), 40+rng.IntN(120))
			if rng.IntN(2) == 0 {
				batch[i].Type = "MOVE_TASK"
			}
			n++
		}
		req := &actionsyncv1.DispatchRequest{Channel: ch, ClientId: clientID, Actions: batch}
		for attempt, refused := 0, 0; ; attempt++ {
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := client.Dispatch(dctx, withToken(req, token))
			dcancel()
			if err == nil {
				if res.Msg.GetAcks()[0].GetDuplicate() && attempt == refused {
					r.fail("%s: %s answered as a duplicate after %d refusals: a refused dispatch was applied", sub, batch[0].GetId(), refused)
				}
				r.l.add(ch, res.Msg.GetAcks())
				break
			}
			if ctx.Err() != nil {
				return
			}
			switch code := connect.CodeOf(err); {
			case code == connect.CodeUnauthenticated && strings.Contains(errMessage(err), expiredMessage(exp)):
				r.pubExpired.Add(1)
				refused++
				exp = expiry(ttl())
				token = r.mint(sub, exp, grant)
			case code == connect.CodeUnavailable, code == connect.CodeUnknown, code == connect.CodeInternal, code == connect.CodeDeadlineExceeded:
				r.retries.Add(1) // the connection failed: re-send; a duplicate is fine now
				time.Sleep(10 * time.Millisecond)
			default:
				r.fail("%s over %s: dispatch failed with %v", sub, w.name, err)
				time.Sleep(10 * time.Millisecond)
			}
		}
		next = next.Add(time.Duration(len(batch)) * time.Second / time.Duration(rate))
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else if d < -time.Second {
			next = time.Now() // behind by more than a second: don't burst to catch up
		}
	}
}

// refuse sends requests that must be refused, one kind at a time drawn from rng, over
// a wire drawn from rng, as refuser w, until the load ends.
func (r *secureRun) refuse(ctx context.Context, rng *rand.Rand, w int, clients []actionsyncv1connect.SyncServiceClient) {
	for n := 0; time.Since(r.start) < r.s.duration && ctx.Err() == nil; n++ {
		kind, wi := rng.IntN(refuseKinds), rng.IntN(len(secureWires))
		ref := newRefusal(rng, kind, fmt.Sprintf("rw%d-%d", w, n%refuserSubs), fmt.Sprintf("rw%d-%d", w, n), r.channels, r.mint)
		start := time.Now()
		err := ref.check(ctx, clients[wi])
		if err != nil {
			err = fmt.Errorf("over %s: %w", secureWires[wi].name, err)
		}
		r.mu.Lock()
		answer := "subscribe"
		if ref.dispatch != nil {
			answer = "dispatch"
			for _, a := range ref.dispatch.GetActions() {
				r.refusedIDs[a.GetId()] = true
			}
		}
		r.refusals[kind].add(answer, time.Since(start), err)
		r.mu.Unlock()
		time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
	}
}

// abuse abuses the TLS port until the load ends: the quick kinds one after the other,
// stalls beside them (in stalls), up to secureMaxStalls at once, and only while they
// can end within a few seconds of the load.
func (r *secureRun) abuse(ctx context.Context, rng *rand.Rand, stalls *sync.WaitGroup) {
	stallUntil := max(r.s.duration-secureStallBound, r.s.duration/2)
	tallyAbuse := func(kind int, answer string, took time.Duration, err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.abuses[kind].add(answer, took, err)
	}
	for time.Since(r.start) < r.s.duration && ctx.Err() == nil {
		kind := rng.IntN(abuseKinds)
		if kind >= abuseStall && (time.Since(r.start) > stallUntil || r.stalls.Load() >= secureMaxStalls) {
			kind = rng.IntN(abuseStall)
		}
		if kind < abuseStall {
			answer, took, err := tlsAbuse(rng, kind, r.srv.addr, r.roots, secureQuickBound)
			tallyAbuse(kind, answer, took, err)
		} else {
			h2 := rng.IntN(2) == 0
			r.stalls.Add(1)
			stalls.Go(func() {
				defer r.stalls.Add(-1)
				stall := func() (string, time.Duration, error) { return tcpSilent(r.srv.addr, secureStallBound) }
				if kind == abuseStall {
					stall = func() (string, time.Duration, error) { return tlsStall(r.srv.addr, r.roots, h2, secureStallBound) }
				}
				answer, took, err := stall()
				tallyAbuse(kind, answer, took, err)
			})
		}
		time.Sleep(time.Duration(10+rng.IntN(30)) * time.Millisecond)
	}
}

// warmUp opens a stream of channel with token and ends it after its ready.
func warmUp(ctx context.Context, client actionsyncv1connect.SyncServiceClient, token, channel string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := client.Subscribe(ctx, withToken(&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: channel}}}, token))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		if stream.Msg().GetReady() != nil {
			return nil
		}
	}
	return fmt.Errorf("no ready: %w", stream.Err())
}

// settleStats polls the server's figures (after a GC) until want holds or within passes.
func settleStats(ctx context.Context, srv *proc, within time.Duration, want func(*actionsyncv1.ServerStats) bool) (*actionsyncv1.ServerStats, time.Duration, bool) {
	start := time.Now()
	var st *actionsyncv1.ServerStats
	for {
		var err error
		if st, err = srv.gcStats(ctx); err != nil {
			srv.t.Fatal(err)
		}
		if want(st) {
			return st, time.Since(start), true
		}
		if time.Since(start) > within {
			return st, time.Since(start), false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// randBytes returns n bytes from rng.
func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}
