package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// maxDispatchErrors stops a publisher whose server keeps refusing.
const maxDispatchErrors = 100

// completion tracks which actions every subscriber has received, to keep at most
// window actions in flight. Subscribers receive a channel in seq order, so the actions
// not yet received by all are a run of at most window consecutive seqs: a ring of
// 2*window counters indexed by seq never has two live actions in one slot.
type completion struct {
	n      int32
	mask   uint64
	slots  []atomic.Int32
	tokens chan struct{} // one per action that may be sent
	extra  atomic.Int64  // completions beyond what was sent (a bug, or a foreign publisher)
}

func newCompletion(n, window int) *completion {
	size := 1
	for size < 2*window {
		size <<= 1
	}
	c := &completion{n: int32(n), mask: uint64(size - 1), slots: make([]atomic.Int32, size), tokens: make(chan struct{}, window)}
	for range window {
		c.tokens <- struct{}{}
	}
	return c
}

// deliver counts one subscriber's first receipt of seq; the last one frees a token.
func (c *completion) deliver(seq uint64) {
	s := &c.slots[seq&c.mask]
	if s.Add(1) != c.n {
		return
	}
	// Reset before the token goes back: the slot's next action (seq + ring size) can
	// only be sent after that.
	s.Store(0)
	select {
	case c.tokens <- struct{}{}:
	default:
		c.extra.Add(1)
	}
}

// giveBack returns the token of an action that will never be delivered.
func (c *completion) giveBack() {
	select {
	case c.tokens <- struct{}{}:
	default: // full only after extra completions, which already fail the phase
	}
}

// takeMore takes up to n more tokens that are free now, without waiting.
func (c *completion) takeMore(n int) int {
	for got := 0; ; got++ {
		if got == n {
			return got
		}
		select {
		case <-c.tokens:
		default:
			return got
		}
	}
}

// giveBackN returns k tokens.
func (c *completion) giveBackN(k int) {
	for range k {
		c.giveBack()
	}
}

// publisher dispatches actions and counts what came back.
type publisher struct {
	next, acked, errs atomic.Int64
	maxSeq            atomic.Uint64
	mu                sync.Mutex
	firstErrs         []string
	boardMax          map[string]uint64 // with --boards: the highest seq acked per channel; guarded by mu
}

func (p *publisher) ack(seq uint64) {
	p.acked.Add(1)
	for {
		m := p.maxSeq.Load()
		if seq <= m || p.maxSeq.CompareAndSwap(m, seq) {
			return
		}
	}
}

// ackOn records seq acked on channel (--boards).
func (p *publisher) ackOn(channel string, seq uint64) {
	p.ack(seq)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.boardMax == nil {
		p.boardMax = map[string]uint64{}
	}
	p.boardMax[channel] = max(p.boardMax[channel], seq)
}

// maxSeqOf returns the function that gives a channel's highest acked seq: the one
// channel's, or each board's.
func (p *publisher) maxSeqOf() func(channel string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.boardMax == nil {
		m := p.maxSeq.Load()
		return func(string) uint64 { return m }
	}
	boards := maps.Clone(p.boardMax)
	return func(ch string) uint64 { return boards[ch] }
}

func (p *publisher) fail(err error) {
	if p.errs.Add(1) <= maxErrorsLogged {
		p.mu.Lock()
		p.firstErrs = append(p.firstErrs, err.Error())
		p.mu.Unlock()
	}
}

// runTput measures deliveries per second with at most --window actions in flight.
func (b *bench) runTput(ctx context.Context) (*result, error) {
	cfg := b.cfg
	comp := newCompletion(cfg.n, cfg.window)
	subs := b.newSubscribers(ctx)
	defer b.closeTransports()
	t0 := time.Now()
	if err := b.connectSubs(ctx, subs, cfg.n, sink{deliver: comp.deliver}); err != nil {
		return nil, errors.Join(err, subs.close())
	}
	connectMs := time.Since(t0).Milliseconds()
	b.logf("connected %d subscribers (%s, conns %s) in %d ms; window=%d", cfg.n, cfg.protocol, connsText(cfg.conns), connectMs, cfg.window)

	pub := b.newPublisher()
	var p publisher
	stop := make(chan struct{})
	var workers sync.WaitGroup
	if cfg.publish == "sync" {
		workers.Go(func() { b.publishOnSync(ctx, pub, comp, &p, stop) })
	}
	for range cfg.window * boolInt(cfg.publish == "dispatch") {
		workers.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case <-comp.tokens:
				}
				k := 1 + comp.takeMore(cfg.batch-1)
				if p.errs.Load() >= maxDispatchErrors {
					comp.giveBackN(k)
					return
				}
				seqs, _, err := b.dispatchBatch(ctx, pub, p.next.Add(int64(k))-int64(k)+1, k)
				if err != nil {
					p.fail(err)
					comp.giveBackN(k) // they will never be delivered
					continue
				}
				for _, seq := range seqs {
					p.ack(seq)
				}
			}
		})
	}

	sleepCtx(ctx, cfg.warmup)
	c0, d0, m0, a0 := takeCPUSnap(cfg.serverPIDs), subs.sum(delivered), subs.sum(msgs), p.acked.Load()
	sleepCtx(ctx, cfg.duration)
	c1, d1, m1, a1 := takeCPUSnap(cfg.serverPIDs), subs.sum(delivered), subs.sum(msgs), p.acked.Load()
	close(stop)
	workers.Wait()

	// Drain: every action sent must reach every subscriber.
	deadline := time.Now().Add(drainTimeout)
	for len(comp.tokens) < cfg.window && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	undrained := cfg.window - len(comp.tokens)
	maxSeq := p.maxSeqOf()
	subs.waitDelivered(ctx, maxSeq, drainTimeout)
	total := subs.sum(delivered)
	heartbeats := subs.sum(func(s *subscriber) int64 { return s.heartbeats.Load() })
	closeErr := subs.close()
	v := subs.judge(maxSeq)
	v.extra += uint64(comp.extra.Load())

	wall := c1.t.Sub(c0.t).Seconds()
	deliveries := d1 - d0
	r := newResult().
		set("mode", "tput").
		set("n", cfg.n).
		set("window", cfg.window).
		set("publish", cfg.publish).
		set("payload_bytes", cfg.payloadBytes).
		set("duration_s", round3(wall)).
		set("actions_sent", a1-a0).
		set("deliveries", deliveries).
		set("deliveries_per_s", roundInt(float64(deliveries)/wall)).
		set("actions_per_s", roundInt(float64(deliveries)/float64(cfg.n)/wall)).
		set("undrained_actions", undrained).
		set("connect_ms", connectMs)
	cpuFigures(r, c0, c1, cfg.serverCPU, cfg.clientCPU)
	r.set("client_rss_kib", selfRSS())
	r.set("srv_deliv_per_cpu_s", delivPerCPU(float64(deliveries)/wall, r.get("server_cpu_pct")))
	r.set("actions_per_msg", ratio(float64(deliveries), float64(m1-m0)))
	r.set("server_rss_kib", nilIfNeg(c1.srvRSS))
	r.set("protocol", cfg.protocol).set("conns", cfg.conns).set("gzip", cfg.gzip).set("decode", cfg.decode)
	r.set("actions", p.acked.Load())
	r.set("deliveries_total", total)
	r.set("heartbeats", heartbeats)
	r.set("errors", p.errs.Load())
	v.set(r)
	b.logf("%d deliveries/s, server %v%% CPU, %v deliveries per server CPU-second, %v actions per response",
		r.get("deliveries_per_s"), r.get("server_cpu_pct"), r.get("srv_deliv_per_cpu_s"), r.get("actions_per_msg"))
	return r, b.phaseErr(ctx, &p, v, closeErr, undrained)
}

// phaseErr is the error a finished phase returns: dispatch errors, violations, or the
// phase's time limit.
func (b *bench) phaseErr(ctx context.Context, p *publisher, v verdict, closeErr error, undrained int) error {
	var errs []error
	if err := ctx.Err(); err != nil {
		errs = append(errs, fmt.Errorf("phase cut short: %w", err))
	}
	if n := p.errs.Load(); n > 0 {
		errs = append(errs, fmt.Errorf("%d dispatches failed, first: %v", n, p.firstErrs))
	}
	if err := v.err(); err != nil {
		errs = append(errs, err)
	}
	if undrained > 0 {
		errs = append(errs, fmt.Errorf("%d actions not received by every subscriber within %v", undrained, drainTimeout))
	}
	if closeErr != nil {
		errs = append(errs, closeErr)
	}
	for _, e := range errs {
		b.logf("FAIL: %v", e)
	}
	return errors.Join(errs...)
}

func delivered(s *subscriber) int64 { return s.delivered.Load() }
func msgs(s *subscriber) int64      { return s.msgs.Load() }

// delivPerCPU is deliveries per server CPU-second, or nil without a server CPU figure.
func delivPerCPU(perSecond float64, serverPct any) any {
	pct, ok := serverPct.(float64)
	if !ok || pct <= 0 {
		return nil
	}
	return roundInt(perSecond / (pct / 100))
}

// ratio is num/den rounded to 3 decimals, or nil if den is 0.
func ratio(num, den float64) any {
	if den == 0 {
		return nil
	}
	return round3(num / den)
}

func roundInt(x float64) int64 { return int64(x + 0.5) }

func nilIfNeg(x int64) any {
	if x < 0 {
		return nil
	}
	return x
}

func connsText(conns int) string {
	if conns == 0 {
		return "one each"
	}
	return fmt.Sprint(conns, " shared")
}

// selfRSS is this process's VmRSS in KiB, or nil.
func selfRSS() any {
	r, err := procRSSKiB(os.Getpid())
	if err != nil {
		return nil
	}
	return r
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// publishOnSync publishes every action as its own dispatch message on one Sync stream
// (what a native client or a socket-style publisher does) until stop: one goroutine
// sends as tokens allow, another reads the answers, which come in request order.
func (b *bench) publishOnSync(ctx context.Context, pub actionsyncv1connect.SyncServiceClient, comp *completion, p *publisher, stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := pub.Sync(ctx)
	// sizes carries each dispatch's action count to the reader, in request order; the
	// window bounds how many can be outstanding.
	sizes := make(chan int, b.cfg.window)
	answers := make(chan struct{})
	go func() { // exits when the stream ends: cancel() below ends it
		defer close(answers)
		for {
			res, err := stream.Receive()
			if err != nil {
				if ctx.Err() == nil {
					p.fail(fmt.Errorf("sync publisher: %w", err))
				}
				return
			}
			switch {
			case res.GetDispatched() != nil:
				k := <-sizes
				for _, a := range res.GetDispatched().GetAcks() {
					if a.GetDuplicate() {
						p.fail(fmt.Errorf("sync dispatch: got duplicate ack %v", a))
						comp.giveBack()
						continue
					}
					p.ack(a.GetSeq())
				}
				if n := len(res.GetDispatched().GetAcks()); n != k {
					p.fail(fmt.Errorf("sync dispatch: got %d acks, want %d", n, k))
				}
			case res.GetDispatchError() != nil:
				k := <-sizes
				p.fail(fmt.Errorf("sync dispatch: %s: %s", res.GetDispatchError().GetCode(), res.GetDispatchError().GetMessage()))
				comp.giveBackN(k)
			}
		}
	}()
	defer func() {
		_ = stream.CloseRequest()
		cancel()
		<-answers
		_ = stream.CloseResponse()
	}()
	for {
		select {
		case <-stop:
			// Let the answers of what was sent arrive before the stream goes.
			deadline := time.Now().Add(drainTimeout)
			for p.acked.Load()+p.errs.Load() < p.next.Load() && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			return
		case <-ctx.Done():
			return
		case <-comp.tokens:
		}
		k := 1 + comp.takeMore(b.cfg.batch-1)
		if p.errs.Load() >= maxDispatchErrors {
			comp.giveBackN(k)
			return
		}
		first := p.next.Add(int64(k)) - int64(k) + 1
		req := &actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Dispatch{Dispatch: b.dispatchRequest(first, k, time.Now())}}
		sizes <- k
		if err := stream.Send(req); err != nil {
			p.fail(fmt.Errorf("sync publisher send: %w", err))
			comp.giveBackN(k)
			return
		}
	}
}
