package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// RSS stability: sample every rssEvery; stable once the last rssStableN samples lie
// within max(rssStableKiB, rssStablePct of the value); give up after --rss-timeout.
const (
	rssEvery     = 200 * time.Millisecond
	rssStableN   = 5
	rssStableKiB = 256
	rssStablePct = 0.5
	rssSettle    = time.Second // after the last subscriber connected
)

// runIdle connects idle subscribers, --k at a time (ascending), and reads the server's
// RSS with none and after each K. Go has no way to ask the server for a GC (the peer
// sends SIGUSR2 to node), so each reading waits for the RSS to stop moving instead.
func (b *bench) runIdle(ctx context.Context) (*result, error) {
	cfg := b.cfg
	subs := b.newSubscribers(ctx)
	defer b.closeTransports()
	shared := cfg.conns > 0
	per := "kib_per_idle_conn_"
	if shared {
		per = "kib_per_idle_stream_"
	}
	r := newResult().set("mode", "idle").set("protocol", cfg.protocol).set("conns", cfg.conns)
	sleepCtx(ctx, 500*time.Millisecond)
	rss0, err := b.stableRSS(ctx)
	if err != nil {
		return nil, errors.Join(err, subs.close())
	}
	b.logf("server RSS with 0 subscribers: %d KiB", rss0)
	r.set("server_rss_kib_0", rss0)
	var last string
	for _, k := range cfg.ks {
		t0 := time.Now()
		if err := b.connectSubs(ctx, subs, k-len(subs.list), sink{}); err != nil {
			return r, errors.Join(err, subs.close())
		}
		connectMs := time.Since(t0).Milliseconds()
		sleepCtx(ctx, rssSettle)
		rss, err := b.stableRSS(ctx)
		if err != nil {
			return r, errors.Join(err, subs.close())
		}
		kib := round3(float64(rss-rss0) / float64(k))
		b.logf("K=%d (conns %s): server RSS %d KiB, %.2f KiB per subscriber (connect %d ms)", k, connsText(cfg.conns), rss, kib, connectMs)
		r.set(fmt.Sprint("server_rss_kib_", k), rss)
		last = fmt.Sprint(per, k)
		r.set(last, kib)
		r.set(fmt.Sprint("connect_ms_", k), connectMs)
	}
	r.set("client_rss_kib", selfRSS())
	r.set(per[:len(per)-1], r.get(last))
	heartbeats := subs.sum(func(s *subscriber) int64 { return s.heartbeats.Load() })
	closeErr := subs.close()
	v := subs.judge(func(string) uint64 { return 0 })
	r.set("heartbeats", heartbeats)
	v.set(r)
	return r, b.phaseErr(ctx, &publisher{}, v, closeErr, 0)
}

// stableRSS waits until the server's VmRSS stops moving and returns the median of the
// last three samples; after --rss-timeout it returns that median anyway, with a warning.
func (b *bench) stableRSS(ctx context.Context) (int64, error) {
	if err := b.forceServerGC(ctx); err != nil {
		return 0, err
	}
	var xs []int64
	deadline := time.Now().Add(b.cfg.rssTimeout)
	for {
		rss, err := serverRSS(b.cfg.serverPIDs)
		if err != nil {
			return 0, err
		}
		xs = append(xs, rss)
		if len(xs) >= rssStableN {
			tail := xs[len(xs)-rssStableN:]
			lo, hi := slices.Min(tail), slices.Max(tail)
			if float64(hi-lo) <= max(rssStableKiB, rssStablePct/100*float64(hi)) {
				return median3(xs), nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.logf("warning: server RSS still moving after %v: %v", b.cfg.rssTimeout, xs[max(0, len(xs)-rssStableN):])
			return median3(xs), ctx.Err()
		}
		sleepCtx(ctx, rssEvery)
	}
}

// serverRSS is the VmRSS of the server processes, summed, in KiB.
func serverRSS(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		rss, err := procRSSKiB(pid)
		if err != nil {
			return 0, fmt.Errorf("server RSS: %w", err)
		}
		sum += rss
	}
	return sum, nil
}

// median3 is the median of the last three of xs (or of all, if fewer).
func median3(xs []int64) int64 {
	t := slices.Clone(xs[max(0, len(xs)-3):])
	slices.Sort(t)
	return t[len(t)/2]
}

// forceServerGC asks the server to collect garbage before a reading, as the peer's run
// does for Node (SIGUSR2 with --expose-gc): with --debug-url, GET /debug/pprof/heap?gc=1
// on the server's --debug-addr, twice (a collection shrinks idle goroutine stacks by half).
func (b *bench) forceServerGC(ctx context.Context) error {
	if b.cfg.debugURL == "" {
		return nil
	}
	for range 2 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(b.cfg.debugURL, "/")+"/debug/pprof/heap?gc=1", nil)
		if err != nil {
			return fmt.Errorf("--debug-url: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("force a GC on the server: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("force a GC on the server: %s", resp.Status)
		}
	}
	return nil
}
