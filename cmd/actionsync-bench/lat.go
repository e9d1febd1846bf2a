package main

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// lateAfter is how far behind its schedule a dispatch may start before it counts as late.
const lateAfter = time.Millisecond

// runLat dispatches --rate actions/s on an absolute schedule and measures the
// send->receive latency of every delivery of the actions sent in the measured interval.
//
// Each action is stamped when its Dispatch starts (as the peer stamps sentAt when it
// emits). Dispatches run concurrently, up to --max-inflight, so that a slow Dispatch
// does not hold the schedule back; if they all are busy the schedule waits, and the
// achieved rate shows it.
func (b *bench) runLat(ctx context.Context) (*result, error) {
	cfg := b.cfg
	subs := b.newSubscribers(ctx)
	defer b.closeTransports()
	tc := time.Now()
	if err := b.connectSubs(ctx, subs, cfg.n, sink{samples: true}); err != nil {
		return nil, errors.Join(err, subs.close())
	}
	connectMs := time.Since(tc).Milliseconds()
	b.logf("connected %d subscribers (%s, conns %s) in %d ms; rate=%g/s", cfg.n, cfg.protocol, connsText(cfg.conns), connectMs, cfg.rate)

	pub := b.newPublisher()
	var p publisher
	start := time.Now().Add(20 * time.Millisecond)
	t0 := start.Add(cfg.warmup)
	t1 := t0.Add(cfg.duration)
	// The window is compared with the send times as subscribers read them (a float64 of
	// Unix ns), so that both sides count the same actions.
	w0, w1 := int64(float64(t0.UnixNano())), int64(float64(t1.UnixNano()))
	inWindow := func(sentAt time.Time) bool {
		at := int64(float64(sentAt.UnixNano()))
		return at >= w0 && at < w1
	}

	snaps := make(chan [2]cpuSnap, 1)
	go func() {
		sleepCtx(ctx, time.Until(t0))
		c0 := takeCPUSnap(cfg.serverPIDs)
		sleepCtx(ctx, time.Until(t1))
		snaps <- [2]cpuSnap{c0, takeCPUSnap(cfg.serverPIDs)}
	}()

	type job struct {
		i   int64
		due time.Time
	}
	var (
		jobs                    = make(chan job)
		workers                 sync.WaitGroup
		nWorkers                int
		measured, ackedMeasured atomic.Int64
		late, maxLate           atomic.Int64
		ackMu                   sync.Mutex
		ackLats                 []int64 // Dispatch round trips of measured actions, ns
	)
	worker := func() {
		var mine []int64
		for j := range jobs {
			if l := time.Since(j.due); l > lateAfter {
				late.Add(1)
				for m := maxLate.Load(); int64(l) > m && !maxLate.CompareAndSwap(m, int64(l)); m = maxLate.Load() {
				}
			}
			seq, sentAt, err := b.dispatch(ctx, pub, j.i)
			in := inWindow(sentAt)
			if in {
				measured.Add(1)
			}
			if err != nil {
				p.fail(err)
				continue
			}
			if cfg.boards > 0 {
				p.ackOn(b.channelOf(b.boardOfAction(j.i)), seq)
			} else {
				p.ack(seq)
			}
			if in {
				ackedMeasured.Add(1)
				mine = append(mine, int64(time.Since(sentAt)))
			}
		}
		ackMu.Lock()
		ackLats = append(ackLats, mine...)
		ackMu.Unlock()
	}
	period := float64(time.Second) / cfg.rate
	for i := int64(0); ctx.Err() == nil && p.errs.Load() < maxDispatchErrors; i++ {
		due := start.Add(time.Duration(float64(i) * period))
		if !due.Before(t1) {
			break
		}
		if d := time.Until(due); d > 0 {
			sleepCtx(ctx, d)
		}
		j := job{i: i + 1, due: due}
		select {
		case jobs <- j:
			continue
		default:
		}
		if nWorkers < cfg.maxInflight {
			nWorkers++
			workers.Go(worker)
		}
		select {
		case jobs <- j:
		case <-ctx.Done():
		}
	}
	close(jobs)
	workers.Wait()
	var c [2]cpuSnap
	select {
	case c = <-snaps:
	case <-ctx.Done():
		c = [2]cpuSnap{takeCPUSnap(cfg.serverPIDs), takeCPUSnap(cfg.serverPIDs)}
	}

	maxSeq := p.maxSeqOf()
	subs.waitDelivered(ctx, maxSeq, drainTimeout)
	closeErr := subs.close()
	v := subs.judge(maxSeq)

	var lats []int64
	var deliveries int64
	for _, s := range subs.list {
		for _, x := range s.samples {
			if x.sentAt >= w0 && x.sentAt < w1 {
				lats = append(lats, x.lat)
			}
		}
		deliveries += s.delivered.Load()
	}
	slices.Sort(lats)
	slices.Sort(ackLats)
	wall := t1.Sub(t0).Seconds()
	// Each action reaches the subscribers of its board: all n, or n/boards.
	windowLost := measured.Load()*int64(cfg.n/max(cfg.boards, 1)) - int64(len(lats))
	if windowLost > 0 && uint64(windowLost) > v.lost {
		v.lost = uint64(windowLost)
	}
	achieved := float64(ackedMeasured.Load()) / wall

	r := newResult().
		set("mode", "lat").
		set("n", cfg.n).
		set("rate", cfg.rate).
		set("boards", cfg.boards).
		set("payload_bytes", cfg.payloadBytes).
		set("duration_s", round3(wall)).
		set("actions_measured", measured.Load()).
		set("samples", len(lats))
	v.set(r)
	r.set("p50_ms", ms(percentile(lats, 50))).
		set("p90_ms", ms(percentile(lats, 90))).
		set("p99_ms", ms(percentile(lats, 99))).
		set("p999_ms", ms(percentile(lats, 99.9))).
		set("max_ms", ms(percentile(lats, 100))).
		set("mean_ms", ms(mean(lats))).
		set("connect_ms", connectMs)
	cpuFigures(r, c[0], c[1], cfg.serverCPU, cfg.clientCPU)
	// Deliveries of the actions sent in the window over the server's CPU in the window:
	// at a fixed rate, what one delivery costs the server (as the peer's boards mode).
	var perCPU any
	if c[0].srv >= 0 && c[1].srv > c[0].srv {
		perCPU = math.Round(float64(len(lats)) / (float64(c[1].srv-c[0].srv) / clkTck))
	}
	r.set("srv_deliv_per_cpu_s", perCPU)
	// Server CPU per action sent in the window: with --n 0, what one Dispatch costs.
	var perAction any
	if c[0].srv >= 0 && c[1].srv > c[0].srv && measured.Load() > 0 {
		perAction = round1(float64(c[1].srv-c[0].srv) / clkTck * 1e6 / float64(measured.Load()))
	}
	r.set("srv_cpu_us_per_action", perAction)
	r.set("offered_rate", cfg.rate).
		set("achieved_rate", round1(achieved)).
		set("rate_kept_pct", round1(100*achieved/cfg.rate)).
		set("dispatch_p50_ms", ms(percentile(ackLats, 50))).
		set("dispatch_p99_ms", ms(percentile(ackLats, 99))).
		set("dispatch_workers", nWorkers).
		set("late_dispatches", late.Load()).
		set("max_late_ms", ms(float64(maxLate.Load()))).
		set("deliveries_total", deliveries).
		set("actions", p.acked.Load()).
		set("client_rss_kib", selfRSS()).
		set("server_rss_kib", nilIfNeg(c[1].srvRSS)).
		set("protocol", cfg.protocol).set("conns", cfg.conns).set("gzip", cfg.gzip).set("decode", cfg.decode).
		set("errors", p.errs.Load())
	b.logf("p50 %v ms, p99 %v ms, max %v ms over %d deliveries; achieved %v of %g actions/s",
		r.get("p50_ms"), r.get("p99_ms"), r.get("max_ms"), len(lats), r.get("achieved_rate"), cfg.rate)
	return r, b.phaseErr(ctx, &p, v, closeErr, 0)
}

// percentile is the peer's: the value at rank ceil(p% of n) of sorted xs; NaN if empty.
func percentile[T int64 | float64](sorted []T, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return float64(sorted[min(len(sorted)-1, max(0, i))])
}

func mean(xs []int64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += float64(x)
	}
	return s / float64(len(xs))
}

// ms converts ns to ms, rounded to 3 decimals.
func ms(ns float64) float64 { return round3(ns / 1e6) }
