package stress

import (
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
			Channel: channel, AfterSeq: uint64(len(all)), Limit: 1000,
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
