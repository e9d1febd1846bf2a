package stress

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// This file holds the clients of the scenarios: connections that can be reset, a
// follower that checks every message it applies, a publisher that keeps its acks, and
// the checks of History against both.

// conns is an HTTP/2-without-TLS client (h2c) whose TCP connections can be reset.
type conns struct {
	hc *http.Client
	tr *http.Transport

	mu   sync.Mutex
	open []*net.TCPConn
}

// newConns returns a client with its own connections. window, if not 0, is the HTTP/2
// receive window of each stream: how much the server may send ahead of a reader that
// stops reading; readBuf, if not 0, the socket's receive buffer.
func newConns(t testing.TB, window, readBuf int) *conns {
	c := &conns{}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	c.tr = &http.Transport{Protocols: &p}
	if window > 0 {
		c.tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: window}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c.tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := conn.(*net.TCPConn)
		if readBuf > 0 {
			_ = tc.SetReadBuffer(readBuf)
		}
		c.mu.Lock()
		c.open = append(c.open, tc)
		c.mu.Unlock()
		return conn, nil
	}
	c.hc = &http.Client{Transport: c.tr}
	if t != nil {
		t.Cleanup(c.tr.CloseIdleConnections)
	}
	return c
}

// reset closes every connection the client dialed with a TCP RST (linger 0), as a
// network that drops the connection does: the server sees ECONNRESET, not a FIN.
func (c *conns) reset() int {
	c.mu.Lock()
	open := c.open
	c.open = nil
	c.mu.Unlock()
	for _, tc := range open {
		_ = tc.SetLinger(0)
		_ = tc.Close()
	}
	return len(open)
}

// close closes every connection the client dialed (a FIN, not a reset), busy or not.
func (c *conns) close() {
	c.mu.Lock()
	open := c.open
	c.open = nil
	c.mu.Unlock()
	for _, tc := range open {
		_ = tc.Close()
	}
	c.tr.CloseIdleConnections()
}

// sync returns a Connect client of the server at url over these connections.
func (c *conns) sync(url string, opts ...connect.ClientOption) actionsyncv1connect.SyncServiceClient {
	return actionsyncv1connect.NewSyncServiceClient(c.hc, url, opts...)
}

// hashSeed makes the hashes of sequences comparable within the process.
var hashSeed = maphash.MakeSeed()

// chain extends h, the hash of a sequence of actions, by one action id.
func chain(h uint64, id string) uint64 {
	h ^= maphash.String(hashSeed, id)
	h *= 0x9e3779b97f4a7c15
	return h ^ h>>29
}

// position is where a follower is on one channel: the last seq applied, the epoch of
// the last ready, and the hash of the ids applied from seq 1 to last.
type position struct {
	last  uint64
	epoch string
	hash  uint64
}

// faults counts what a follower found wrong; every field must stay 0.
type faults struct {
	gaps, duplicates, reorders, resets, strays, badReadies int
}

func (f faults) total() int {
	return f.gaps + f.duplicates + f.reorders + f.resets + f.strays + f.badReadies
}

// add counts o's faults in f.
func (f *faults) add(o faults) {
	f.gaps += o.gaps
	f.duplicates += o.duplicates
	f.reorders += o.reorders
	f.resets += o.resets
	f.strays += o.strays
	f.badReadies += o.badReadies
}

func (f faults) String() string {
	return fmt.Sprintf("%d gaps, %d duplicates, %d reorders, %d resets, %d actions of channels not followed, %d wrong readies",
		f.gaps, f.duplicates, f.reorders, f.resets, f.strays, f.badReadies)
}

// follower follows channels from seq 1 as a client does: it applies each channel's
// actions in order, remembers the last seq applied and the epoch of the last ready, and
// resumes from them. It counts every gap, duplicate, reorder and reset as a fault.
type follower struct {
	name     string
	channels []string

	mu       sync.Mutex
	pos      map[string]*position
	faults   faults
	first    []string // the first faults, described
	applied  int64    // actions applied
	readies  int
	sessions int // streams opened
}

func newFollower(name string, channels []string) *follower {
	f := &follower{name: name, channels: channels, pos: map[string]*position{}}
	for _, ch := range channels {
		f.pos[ch] = &position{}
	}
	return f
}

// request returns the Subscribe request that resumes the follower where it is.
func (f *follower) request() *actionsyncv1.SubscribeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions++
	req := &actionsyncv1.SubscribeRequest{ClientId: f.name}
	for _, ch := range f.channels {
		p := f.pos[ch]
		req.Positions = append(req.Positions, &actionsyncv1.Position{Channel: ch, AfterSeq: p.last, Epoch: p.epoch})
	}
	return req
}

// apply applies one message of a Subscribe stream.
func (f *follower) apply(m *actionsyncv1.SubscribeResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range m.GetActions() {
		p := f.pos[a.GetChannel()]
		switch seq := a.GetSeq(); {
		case p == nil:
			f.fault(&f.faults.strays, "action %s seq %d of %q, a channel it does not follow", a.GetId(), seq, a.GetChannel())
			continue
		case seq == p.last+1:
		case seq == p.last:
			f.fault(&f.faults.duplicates, "%q: seq %d (id %s) again", a.GetChannel(), seq, a.GetId())
			continue
		case seq < p.last:
			f.fault(&f.faults.reorders, "%q: seq %d (id %s) after seq %d", a.GetChannel(), seq, a.GetId(), p.last)
			continue
		default:
			f.fault(&f.faults.gaps, "%q: seq %d (id %s) after seq %d", a.GetChannel(), seq, a.GetId(), p.last)
		}
		p.last = a.GetSeq()
		p.hash = chain(p.hash, a.GetId())
		f.applied++
	}
	if r := m.GetReset_(); r != nil {
		f.fault(&f.faults.resets, "reset %v", r)
	}
	if r := m.GetReady(); r != nil {
		f.readies++
		p := f.pos[r.GetChannel()]
		switch {
		case p == nil:
			f.fault(&f.faults.strays, "ready %v of a channel it does not follow", r)
		case r.GetHeadSeq() != p.last || p.epoch != "" && r.GetEpoch() != p.epoch:
			f.fault(&f.faults.badReadies, "ready %v at seq %d in epoch %q", r, p.last, p.epoch)
		default:
			p.epoch = r.GetEpoch()
		}
	}
}

func (f *follower) fault(counter *int, format string, args ...any) {
	*counter++
	if len(f.first) < 5 {
		f.first = append(f.first, fmt.Sprintf(format, args...))
	}
}

// at returns the follower's position on channel.
func (f *follower) at(channel string) position {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.pos[channel]
}

// found returns the faults found so far and the first ones described.
func (f *follower) found() (faults, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.faults, slices.Clone(f.first)
}

// action builds an action of type ADD_TASK with id and a payload of about size bytes.
func action(id string, size int) *actionsyncv1.Action {
	pad := make([]byte, size)
	for i := range pad {
		pad[i] = 'a' + byte(i%26)
	}
	payload, _ := structpb.NewValue(map[string]any{"taskId": id, "pad": string(pad), "t": float64(time.Now().UnixNano())})
	return &actionsyncv1.Action{Type: "ADD_TASK", Id: id, Payload: payload}
}

// acked is one acknowledged action.
type acked struct {
	seq uint64
	id  string
}

// ledger is what publishers were told: every acknowledged action per channel.
type ledger struct {
	mu    sync.Mutex
	acks  map[string][]acked
	count int
}

func newLedger() *ledger { return &ledger{acks: map[string][]acked{}} }

func (l *ledger) add(channel string, acks []*actionsyncv1.Ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range acks {
		l.acks[channel] = append(l.acks[channel], acked{a.GetSeq(), a.GetId()})
	}
	l.count += len(acks)
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

// readHistory reads channel's whole history, page by page, and checks that its seqs are
// 1..head.
func readHistory(ctx context.Context, client actionsyncv1connect.SyncServiceClient, channel string) ([]*actionsyncv1.Action, error) {
	var all []*actionsyncv1.Action
	for {
		res, err := client.History(ctx, connect.NewRequest(&actionsyncv1.HistoryRequest{
			Channel: channel, AfterSeq: uint64(len(all)), // the default page: min(100, --max-history-limit)
		}))
		if err != nil {
			return nil, fmt.Errorf("History of %q after seq %d: %w", channel, len(all), err)
		}
		for _, a := range res.Msg.GetActions() {
			if want := uint64(len(all)) + 1; a.GetSeq() != want {
				return nil, fmt.Errorf("History of %q: seq %d (id %s), want %d", channel, a.GetSeq(), a.GetId(), want)
			}
			all = append(all, a)
		}
		head := res.Msg.GetHeadSeq()
		if uint64(len(all)) >= head {
			if uint64(len(all)) != head {
				return nil, fmt.Errorf("History of %q: %d actions, beyond head %d", channel, len(all), head)
			}
			return all, nil
		}
		if len(res.Msg.GetActions()) == 0 {
			return nil, fmt.Errorf("History of %q after seq %d: no actions, head %d", channel, len(all), head)
		}
	}
}

// history is one channel's history as the checks need it.
type history struct {
	ids    []string          // by seq - 1
	hashes []uint64          // hashes[n]: hash of the ids of seqs 1..n
	seqOf  map[string]uint64 // id -> seq
}

// readHistories reads the histories of channels and checks that no action id appears
// twice.
func readHistories(ctx context.Context, t *testing.T, client actionsyncv1connect.SyncServiceClient, channels []string) map[string]*history {
	t.Helper()
	out := map[string]*history{}
	for _, ch := range channels {
		all, err := readHistory(ctx, client, ch)
		if err != nil {
			t.Fatal(err)
		}
		h := &history{hashes: make([]uint64, 1, len(all)+1), seqOf: map[string]uint64{}}
		for _, a := range all {
			if prev, dup := h.seqOf[a.GetId()]; dup {
				t.Errorf("History of %q: id %s at seq %d and %d", ch, a.GetId(), prev, a.GetSeq())
			}
			h.seqOf[a.GetId()] = a.GetSeq()
			h.ids = append(h.ids, a.GetId())
			h.hashes = append(h.hashes, chain(h.hashes[len(h.hashes)-1], a.GetId()))
		}
		out[ch] = h
	}
	return out
}

// checkLedger checks that every acknowledged action is in history at its seq, exactly
// once, and (if complete) that history holds nothing else. It returns how many it checked.
func checkLedger(t *testing.T, l *ledger, hs map[string]*history, complete bool) int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for ch, acks := range l.acks {
		h := hs[ch]
		seen := map[string]bool{}
		for _, a := range acks {
			n++
			if seen[a.id] {
				continue // a re-sent id acked again as a duplicate: same seq, checked once
			}
			seen[a.id] = true
			if got, ok := h.seqOf[a.id]; !ok || got != a.seq {
				t.Errorf("%q: action %s acknowledged at seq %d, in History at seq %d (present %v)", ch, a.id, a.seq, got, ok)
			}
		}
		if complete && len(seen) != len(h.ids) {
			t.Errorf("%q: %d actions acknowledged, %d in History", ch, len(seen), len(h.ids))
		}
	}
	return n
}

// checkFollower checks that what the follower applied on each channel is History from
// seq 1 to its position, and (if complete) that it reached the head.
func checkFollower(t *testing.T, f *follower, hs map[string]*history, complete bool) {
	t.Helper()
	fs, first := f.found()
	if fs.total() > 0 {
		t.Errorf("%s: %v; first: %q", f.name, fs, first)
	}
	for _, ch := range f.channels {
		p, h := f.at(ch), hs[ch]
		switch {
		case p.last > uint64(len(h.ids)):
			t.Errorf("%s on %q: at seq %d, beyond the head %d", f.name, ch, p.last, len(h.ids))
		case p.hash != h.hashes[p.last]:
			t.Errorf("%s on %q: the %d actions applied differ from History's", f.name, ch, p.last)
		case complete && p.last != uint64(len(h.ids)):
			t.Errorf("%s on %q: at seq %d, want the head %d", f.name, ch, p.last, len(h.ids))
		}
	}
}

// canary is a follower that must never be disturbed: one stream for the whole scenario,
// every action in order. Its stream ending before stop is a fault.
type canary struct {
	f      *follower
	cancel context.CancelFunc
	ended  chan error
}

// startCanary starts following channels from seq 1 on a connection of its own, and
// waits for its first ready.
func startCanary(t *testing.T, url string, channels ...string) *canary {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	c := &canary{f: newFollower("canary", channels), cancel: cancel, ended: make(chan error, 1)}
	client := newConns(t, 0, 0).sync(url)
	ready := make(chan struct{})
	go func() {
		stream, err := client.Subscribe(ctx, connect.NewRequest(c.f.request()))
		if err != nil {
			close(ready)
			c.ended <- err
			return
		}
		defer stream.Close()
		once := sync.Once{}
		for stream.Receive() {
			c.f.apply(stream.Msg())
			if stream.Msg().GetReady() != nil {
				once.Do(func() { close(ready) })
			}
		}
		once.Do(func() { close(ready) })
		c.ended <- stream.Err()
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("canary: no ready after 10s")
	}
	t.Cleanup(cancel)
	return c
}

// stop ends the canary's stream and fails t if it had ended before.
func (c *canary) stop(t *testing.T) {
	t.Helper()
	select {
	case err := <-c.ended:
		t.Errorf("canary: stream ended during the scenario: %v", err)
		return
	default:
	}
	c.cancel()
	<-c.ended
}

// waitAt waits up to within until the follower has applied channel up to seq.
func (f *follower) waitAt(t *testing.T, channel string, seq uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for f.at(channel).last < seq {
		if time.Now().After(deadline) {
			t.Fatalf("%s: at seq %d of %q after %v, want %d", f.name, f.at(channel).last, channel, within, seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pacer dispatches to channel at rate actions per second, in batches of 1 to maxBatch,
// until stop; it records acks in l (nil: a new ledger) and the latency of each dispatch.
type pacer struct {
	l       *ledger
	stopped chan struct{}
	stopFn  context.CancelFunc

	mu        sync.Mutex
	latencies []time.Duration
	errs      int
	lastErr   error
}

func startPacer(t *testing.T, s *scenario, client actionsyncv1connect.SyncServiceClient, name, channel string, rate, maxBatch, payload int, l *ledger) *pacer {
	// Stopping ends the loop between dispatches, never one under way: a dispatch
	// cancelled in flight may still be applied, and its actions would be in History
	// without an ack.
	quit, cancel := context.WithCancel(t.Context())
	ctx := t.Context()
	if l == nil {
		l = newLedger()
	}
	p := &pacer{l: l, stopped: make(chan struct{}), stopFn: cancel}
	rng := s.rng()
	go func() {
		defer close(p.stopped)
		next := time.Now()
		for n := 0; quit.Err() == nil; {
			batch := make([]*actionsyncv1.Action, 1+rng.IntN(maxBatch))
			for i := range batch {
				batch[i] = action(fmt.Sprintf("%s-%d", name, n), payload)
				n++
			}
			start := time.Now()
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := client.Dispatch(dctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: channel, ClientId: name, Actions: batch}))
			dcancel()
			p.mu.Lock()
			if err != nil {
				if ctx.Err() == nil {
					p.errs++
					p.lastErr = err
				}
			} else {
				p.latencies = append(p.latencies, time.Since(start))
			}
			p.mu.Unlock()
			if err == nil {
				p.l.add(channel, res.Msg.GetAcks())
			}
			next = next.Add(time.Duration(len(batch)) * time.Second / time.Duration(rate))
			if d := time.Until(next); d > 0 {
				select {
				case <-time.After(d):
				case <-quit.Done():
				}
			} else if d < -time.Second {
				next = time.Now()
			}
		}
	}()
	return p
}

// stop stops the pacer and fails t if a dispatch failed.
func (p *pacer) stop(t *testing.T) {
	t.Helper()
	p.stopFn()
	<-p.stopped
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.errs > 0 {
		t.Errorf("pacer: %d dispatches failed, the last with %v", p.errs, p.lastErr)
	}
}

// percentile returns the q-quantile of ds (sorted in place).
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// historyOf builds channel's history from the acks of l, which must hold every action
// of the channel from seq 1: for channels whose History is trimmed by the end.
func historyOf(t *testing.T, l *ledger, channel string) map[string]*history {
	t.Helper()
	l.mu.Lock()
	acks := slices.Clone(l.acks[channel])
	l.mu.Unlock()
	slices.SortFunc(acks, func(a, b acked) int { return cmp.Compare(a.seq, b.seq) })
	h := &history{hashes: []uint64{0}, seqOf: map[string]uint64{}}
	for i, a := range acks {
		if a.seq != uint64(i)+1 {
			t.Fatalf("acks of %q: seq %d at %d: the acks are not contiguous from 1", channel, a.seq, i)
		}
		h.seqOf[a.id] = a.seq
		h.ids = append(h.ids, a.id)
		h.hashes = append(h.hashes, chain(h.hashes[i], a.id))
	}
	return map[string]*history{channel: h}
}
