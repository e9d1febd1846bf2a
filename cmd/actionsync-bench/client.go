package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// Bounds of every wait, so that a dead or stuck server ends a phase instead of hanging it.
const (
	dialTimeout     = 10 * time.Second
	connectDeadline = 180 * time.Second // all subscribers of a phase connected and ready
	dispatchTimeout = 30 * time.Second
	drainTimeout    = 5 * time.Second
	closeTimeout    = 10 * time.Second
	maxErrorsLogged = 3
)

// bench runs one phase against the server at cfg.url (the publisher) and cfg.subURLs
// (the subscribers, round-robin).
type bench struct {
	cfg      config
	stderr   io.Writer
	payloads payloads
	channel  string

	mu         sync.Mutex
	transports []*http.Transport // closed when the phase ends
}

func newBench(cfg config, stderr io.Writer) *bench {
	ch := cfg.channel
	if ch == "" {
		ch = fmt.Sprintf("bench.%s.%d.%d", cfg.mode, cfg.n, time.Now().UnixNano())
	}
	return &bench{cfg: cfg, stderr: stderr, payloads: newPayloads(cfg.payloadBytes), channel: ch}
}

func (b *bench) logf(format string, a ...any) { logf(b.stderr, b.cfg.mode, format, a...) }

// newHTTPClient returns a client with its own Transport, hence its own connections:
// HTTP/1.1 for connect-h1, else HTTP/2 over cleartext (prior knowledge).
func (b *bench) newHTTPClient(maxIdle int) *http.Client {
	t := &http.Transport{
		DialContext: (&net.Dialer{Timeout: dialTimeout}).DialContext,
		// Connect negotiates compression itself (--gzip); net/http must not add its own
		// Accept-Encoding to unary requests.
		DisableCompression:  true,
		MaxIdleConnsPerHost: maxIdle,
	}
	var p http.Protocols
	if b.cfg.protocol == protoConnectH1 {
		p.SetHTTP1(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	t.Protocols = &p
	b.mu.Lock()
	b.transports = append(b.transports, t)
	b.mu.Unlock()
	return &http.Client{Transport: t}
}

// clientOptions are the Connect options of every client: the protocol, gzip offered
// only with --gzip (connect-go clients offer it by default), and codec if not nil.
func (b *bench) clientOptions(codec connect.Codec, clientID string) []connect.ClientOption {
	var opts []connect.ClientOption
	if b.cfg.tokenSecret != nil {
		opts = append(opts, connect.WithInterceptors(bearer(b.mintToken(clientID))))
	}
	if codec != nil {
		opts = append(opts, connect.WithCodec(codec))
	}
	if !b.cfg.gzip {
		opts = append(opts, connect.WithAcceptCompression("gzip", nil, nil))
	}
	if b.cfg.protocol == protoGRPCH2 {
		opts = append(opts, connect.WithGRPC())
	}
	return opts
}

// newPublisher returns the client that dispatches, on connections of its own.
func (b *bench) newPublisher() actionsyncv1connect.SyncServiceClient {
	return actionsyncv1connect.NewSyncServiceClient(b.newHTTPClient(max(b.cfg.window, b.cfg.maxInflight)), b.cfg.url, b.clientOptions(nil, "bench-pub")...)
}

// dispatch publishes the i-th action, stamped with the current time, and returns its
// seq and send time.
func (b *bench) dispatch(ctx context.Context, pub actionsyncv1connect.SyncServiceClient, i int64) (uint64, time.Time, error) {
	seqs, sentAt, err := b.dispatchBatch(ctx, pub, i, 1)
	if err != nil {
		return 0, sentAt, err
	}
	return seqs[0], sentAt, nil
}

// dispatchBatch publishes actions first..first+k-1 in one Dispatch and returns their seqs.
func (b *bench) dispatchBatch(ctx context.Context, pub actionsyncv1connect.SyncServiceClient, first int64, k int) ([]uint64, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	defer cancel()
	sentAt := time.Now()
	res, err := pub.Dispatch(ctx, connect.NewRequest(b.dispatchRequest(first, k, sentAt)))
	if err != nil {
		return nil, sentAt, fmt.Errorf("dispatch %d..%d: %w", first, first+int64(k)-1, err)
	}
	seqs, err := ackSeqs(res.Msg.GetAcks(), k)
	if err != nil {
		return nil, sentAt, fmt.Errorf("dispatch %d: %w", first, err)
	}
	return seqs, sentAt, nil
}

// dispatchRequest holds actions first..first+k-1.
func (b *bench) dispatchRequest(first int64, k int, sentAt time.Time) *actionsyncv1.DispatchRequest {
	req := &actionsyncv1.DispatchRequest{Channel: b.channelOf(b.boardOfAction(first)), ClientId: "bench-pub", Actions: make([]*actionsyncv1.Action, k)}
	for j := range k {
		req.Actions[j] = b.payloads.action(first+int64(j), sentAt)
	}
	return req
}

// channelOf returns board's channel: the phase's one channel without --boards.
func (b *bench) channelOf(board int) string {
	if b.cfg.boards == 0 {
		return b.channel
	}
	return fmt.Sprintf("%s.b%d", b.channel, board)
}

// boardOfSub is the board subscriber id follows: --n/--boards subscribers each.
func (b *bench) boardOfSub(id int) int { return id % max(b.cfg.boards, 1) }

// boardOfAction is the board action i goes to: spread as if at random (a fixed hash
// of i, so that a run can be repeated), as actions land on the boards of a real app.
func (b *bench) boardOfAction(i int64) int {
	if b.cfg.boards == 0 {
		return 0
	}
	h := uint64(i) * 0x9E3779B97F4A7C15
	return int((h >> 32) % uint64(b.cfg.boards))
}

// ackSeqs checks that acks answer k fresh actions and returns their seqs.
func ackSeqs(acks []*actionsyncv1.Ack, k int) ([]uint64, error) {
	if len(acks) != k {
		return nil, fmt.Errorf("got %d acks, want %d", len(acks), k)
	}
	seqs := make([]uint64, k)
	for j, a := range acks {
		if a.GetDuplicate() {
			return nil, fmt.Errorf("ack %d is a duplicate: %v", j, a)
		}
		seqs[j] = a.GetSeq()
	}
	return seqs, nil
}

// closeTransports closes the idle connections of every client the phase made.
func (b *bench) closeTransports() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.transports {
		t.CloseIdleConnections()
	}
	b.transports = nil
}

// sink says what subscribers do with each new delivery.
type sink struct {
	// deliver is called with each action's seq the first time it is received (tput).
	deliver func(seq uint64)
	// samples keeps every delivery's send time and latency (lat).
	samples bool
}

// sample is one delivery's send time and send->receive latency, in ns.
type sample struct{ sentAt, lat int64 }

// subscriber is one Subscribe stream and what it received.
type subscriber struct {
	id      int
	channel string
	stream  *connect.ServerStreamForClient[actionsyncv1.SubscribeResponse]
	codec   *subCodec
	head    uint64 // from ready: the seq before the first live one
	ctx     context.Context
	cancel  context.CancelFunc

	delivered  atomic.Int64  // new actions received
	msgs       atomic.Int64  // responses that carried actions
	heartbeats atomic.Int64  // heartbeat responses
	last       atomic.Uint64 // highest seq received

	// Owned by the stream's goroutine until done is closed.
	check       seqChecker
	samples     []sample
	notes       []string // unexpected messages, the first few
	unexpectedN uint64   // unexpected messages
	err         error    // how the stream ended
	early       bool     // it ended before the phase closed it
	done        chan struct{}
}

// loop receives until the stream ends.
func (s *subscriber) loop(sk sink) {
	defer close(s.done)
	for s.stream.Receive() {
		msg := s.stream.Msg()
		switch {
		case len(msg.Actions) > 0:
			now := time.Now().UnixNano()
			n := int64(0)
			for i, a := range msg.Actions {
				seq := a.GetSeq()
				if !s.check.observe(seq) {
					continue
				}
				n++
				if sk.deliver != nil {
					sk.deliver(seq)
				}
				if sk.samples && i < len(s.codec.sentAt) {
					at := s.codec.sentAt[i]
					s.samples = append(s.samples, sample{sentAt: at, lat: now - at})
				}
			}
			s.last.Store(s.check.last())
			s.msgs.Add(1)
			s.delivered.Add(n)
		case msg.GetHeartbeat() != nil:
			s.heartbeats.Add(1)
		case msg.GetReset_() != nil:
			s.unexpected("reset %v on a live subscription", msg.GetReset_())
		case msg.GetReady() != nil:
			s.unexpected("a second ready %v", msg.GetReady())
		default:
			s.unexpected("an empty response")
		}
	}
	s.err = s.stream.Err()
	s.early = s.ctx.Err() == nil
}

func (s *subscriber) unexpected(format string, a ...any) {
	s.unexpectedN++
	if len(s.notes) < maxNotes {
		s.notes = append(s.notes, fmt.Sprintf(format, a...))
	}
}

// subscribers are a phase's subscribers and the context their streams run in.
type subscribers struct {
	list   []*subscriber
	ctx    context.Context // the streams'
	cancel context.CancelFunc
	// shared holds the --conns clients, nil if every subscriber has its own.
	shared []*http.Client
}

// connectSubs opens count more subscribers to b.channel (live) into subs, cfg.concurrency
// at a time, each ready (its ready message received) when this returns. Subscriber i
// talks to --sub-urls[i % len] and uses its own connection, or shared client i % --conns
// (which opens one connection per node it is used for).
func (b *bench) connectSubs(ctx context.Context, subs *subscribers, count int, sk sink) error {
	if subs.ctx == nil {
		return fmt.Errorf("connect subscribers: no stream context")
	}
	ctx, cancel := context.WithTimeout(ctx, connectDeadline)
	defer cancel()
	first := len(subs.list)
	newSubs := make([]*subscriber, count)
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	for range min(b.cfg.concurrency, count) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= count || ctx.Err() != nil {
					return
				}
				s, err := b.subscribe(ctx, subs.ctx, subs.client(b, first+i), b.cfg.subURL(first+i), first+i, sk)
				if err != nil {
					select {
					case errc <- err:
					default:
					}
					cancel()
					return
				}
				newSubs[i] = s
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		for _, s := range newSubs {
			if s != nil {
				subs.list = append(subs.list, s)
			}
		}
		return err
	default:
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connect %d subscribers: %w", count, err)
	}
	subs.list = append(subs.list, newSubs...)
	return nil
}

// subscribe opens one stream to the server at baseURL with streamCtx and waits (within
// ctx) for its ready message.
func (b *bench) subscribe(ctx, streamCtx context.Context, hc *http.Client, baseURL string, id int, sk sink) (*subscriber, error) {
	codec := &subCodec{lite: b.cfg.decode == "lite"}
	client := actionsyncv1connect.NewSyncServiceClient(hc, baseURL, b.clientOptions(codec, fmt.Sprintf("sub-%d", id))...)
	// Each stream has its own context, so that a failed start ends only its own.
	streamCtx, cancel := context.WithCancel(streamCtx)
	channel := b.channelOf(b.boardOfSub(id))
	stream, err := client.Subscribe(streamCtx, connect.NewRequest(&actionsyncv1.SubscribeRequest{
		Positions: []*actionsyncv1.Position{{Channel: channel, Live: true}},
		ClientId:  fmt.Sprintf("sub-%d", id),
	}))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscriber %d: subscribe: %w", id, err)
	}
	// The first response must be ready; Receive blocks, so bound it with ctx.
	got := make(chan bool, 1)
	go func() { got <- stream.Receive() }()
	select {
	case ok := <-got:
		if !ok {
			cancel()
			return nil, fmt.Errorf("subscriber %d: stream ended before ready: %w", id, stream.Err())
		}
	case <-ctx.Done():
		cancel()
		<-got
		return nil, fmt.Errorf("subscriber %d: no ready: %w", id, ctx.Err())
	}
	ready := stream.Msg().GetReady()
	if ready == nil || ready.GetChannel() != channel {
		cancel()
		return nil, fmt.Errorf("subscriber %d: first response: got %v, want ready for %s", id, stream.Msg(), channel)
	}
	s := &subscriber{id: id, channel: channel, stream: stream, codec: codec, head: ready.GetHeadSeq(), ctx: streamCtx, cancel: cancel, done: make(chan struct{})}
	s.check.start(s.head)
	s.last.Store(s.head)
	go s.loop(sk)
	return s, nil
}

// client returns subscriber i's HTTP client.
func (s *subscribers) client(b *bench, i int) *http.Client {
	if len(s.shared) > 0 {
		return s.shared[i%len(s.shared)]
	}
	return b.newHTTPClient(1)
}

// newSubscribers returns an empty set whose streams run under ctx until close.
func (b *bench) newSubscribers(ctx context.Context) *subscribers {
	ctx, cancel := context.WithCancel(ctx)
	s := &subscribers{ctx: ctx, cancel: cancel}
	for range b.cfg.conns {
		s.shared = append(s.shared, b.newHTTPClient(1))
	}
	return s
}

// close ends every stream and waits (bounded) for their goroutines.
func (s *subscribers) close() error {
	s.cancel()
	deadline := time.After(closeTimeout)
	for i, sub := range s.list {
		select {
		case <-sub.done:
		case <-deadline:
			return fmt.Errorf("close subscribers: %d of %d streams did not end within %v", len(s.list)-i, len(s.list), closeTimeout)
		}
	}
	for _, sub := range s.list {
		sub.cancel()
		_ = sub.stream.Close()
	}
	return nil
}

// sum adds up a counter over every subscriber.
func (s *subscribers) sum(f func(*subscriber) int64) int64 {
	var t int64
	for _, sub := range s.list {
		t += f(sub)
	}
	return t
}

// waitDelivered waits (bounded) until every subscriber has received up to the highest
// acked seq of its channel. It returns early if a stream ended.
func (s *subscribers) waitDelivered(ctx context.Context, maxSeq func(channel string) uint64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for _, sub := range s.list {
			select {
			case <-sub.done:
				return false
			default:
			}
			if sub.last.Load() < maxSeq(sub.channel) {
				all = false
				break
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// verdict is the outcome of the exactly-once, in-order check over all subscribers.
type verdict struct {
	gaps, dups, reorders, unexpected, lost, extra, ended uint64
	notes                                                []string
}

func (v verdict) violations() uint64 {
	return v.gaps + v.dups + v.reorders + v.unexpected + v.lost + v.extra + v.ended
}

// set writes the verdict's counts into r.
func (v verdict) set(r *result) {
	r.set("lost", v.lost)
	r.set("gaps", v.gaps)
	r.set("dups", v.dups)
	r.set("reorders", v.reorders)
	r.set("unexpected", v.unexpected+v.extra)
	r.set("streams_ended", v.ended)
	r.set("violations", v.violations())
}

// errViolation marks a failed exactly-once, in-order check.
var errViolation = fmt.Errorf("delivery check failed")

// err describes the violations, or returns nil.
func (v verdict) err() error {
	if v.violations() == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d violations (lost %d, gaps %d, dups %d, reorders %d, unexpected %d, ended %d): %s",
		errViolation, v.violations(), v.lost, v.gaps, v.dups, v.reorders, v.unexpected+v.extra, v.ended, strings.Join(v.notes, "; "))
}

// judge checks every subscriber after close: each must have received head+1..the
// highest acked seq of its channel exactly once, in order, and its stream must not have
// ended before close.
func (s *subscribers) judge(maxSeqOf func(channel string) uint64) verdict {
	var v verdict
	for _, sub := range s.list {
		maxSeq := maxSeqOf(sub.channel)
		lost, extra := sub.check.lost(sub.head, maxSeq)
		v.lost += lost
		v.extra += extra
		v.gaps += sub.check.gaps
		v.dups += sub.check.dups
		v.reorders += sub.check.reorders
		v.unexpected += sub.unexpectedN
		if sub.early || (sub.err != nil && connect.CodeOf(sub.err) != connect.CodeCanceled) {
			v.ended++
			v.notes = appendNote(v.notes, fmt.Sprintf("subscriber %d: stream ended before the phase did: %v", sub.id, sub.err))
		}
		if lost > 0 {
			v.notes = appendNote(v.notes, fmt.Sprintf("subscriber %d: %d of seqs %d..%d not received (last %d)", sub.id, lost, sub.head+1, maxSeq, sub.check.last()))
		}
		for _, n := range append(sub.check.notes, sub.notes...) {
			v.notes = appendNote(v.notes, fmt.Sprintf("subscriber %d: %s", sub.id, n))
		}
	}
	return v
}

func appendNote(notes []string, n string) []string {
	if len(notes) < 10 {
		return append(notes, n)
	}
	return notes
}
