package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// loadConfig describes one load phase against a running floor server.
type loadConfig struct {
	url       string        // the server's base URL, http://host:port
	protocol  string        // "h1" or "h2c"
	boards    int           // boards with subscribers; 0: unary only
	perBoard  int           // subscribers per board, each on its own connection; 0: unary only
	rate      float64       // publish requests per second, in total
	duration  time.Duration // the measured window
	warmup    time.Duration // sending before the window, not measured
	serverPID int           // the server's pid, for its CPU time; 0: no CPU figures
	serverCPU int           // the core the server is pinned to, for its busy share; -1: none
	inflight  int           // the most publish requests in flight at once
	msgBytes  int           // the size of a message
	seed      uint64        // seeds the choice of boards
	drain     time.Duration // how long to wait for the last deliveries after the last send
	label     string        // copied to the result
}

// unaryOnly reports whether the phase has no subscriber: it measures the publish requests.
func (c loadConfig) unaryOnly() bool { return c.boards == 0 || c.perBoard == 0 }

func (c loadConfig) validate() error {
	switch {
	case c.protocol != "h1" && c.protocol != "h2c":
		return fmt.Errorf("protocol: got %q, want h1 or h2c", c.protocol)
	case c.boards < 0 || c.perBoard < 0:
		return fmt.Errorf("boards, per-board: got %d, %d, want >= 0", c.boards, c.perBoard)
	case !(c.rate > 0):
		return fmt.Errorf("rate: got %g, want > 0", c.rate)
	case c.duration <= 0 || c.warmup < 0:
		return fmt.Errorf("duration, warmup: got %v, %v, want > 0, >= 0", c.duration, c.warmup)
	case c.inflight < 1:
		return fmt.Errorf("inflight: got %d, want >= 1", c.inflight)
	case c.msgBytes < headerLen || c.msgBytes > maxMessageLen:
		return fmt.Errorf("msg-bytes: got %d, want %d to %d", c.msgBytes, headerLen, maxMessageLen)
	}
	return nil
}

// result is the JSON line of one load phase. CPU figures are null without a server pid.
// Requests and deliveries count those of the messages sent in the measured window.
type result struct {
	Label        string  `json:"label,omitempty"`
	Protocol     string  `json:"protocol"`
	Boards       int     `json:"boards"`
	PerBoard     int     `json:"per_board"`
	Rate         float64 `json:"rate"`
	AchievedRate float64 `json:"achieved_rate"`
	Requests     int     `json:"requests"`
	Deliveries   int     `json:"deliveries"`
	// ServerCPUSeconds is the server's CPU time over the window, all of it: the publish
	// requests' and the deliveries'.
	ServerCPUSeconds *float64 `json:"server_cpu_s"`
	ServerCPUPct     *float64 `json:"server_cpu_pct"`
	// SrvCoreBusyPct is how busy the server's core was over the window, whoever used it:
	// well above ServerCPUPct, another process shared the core.
	SrvCoreBusyPct *float64 `json:"srv_core_busy_pct"`
	// SrvCPUUsPerDelivery is ServerCPUSeconds over Deliveries, in µs;
	// SrvDelivPerCPUSecond its inverse, as actionsync-bench's srv_deliv_per_cpu_s.
	SrvCPUUsPerDelivery  *float64 `json:"srv_cpu_us_per_delivery"`
	SrvDelivPerCPUSecond *float64 `json:"srv_deliv_per_cpu_s"`
	// SrvCPUUsPerRequest is ServerCPUSeconds over Requests, in µs: with no subscriber,
	// what one publish request costs the server.
	SrvCPUUsPerRequest *float64 `json:"srv_cpu_us_per_request"`
	P50Ms              *float64 `json:"p50_ms"`
	P99Ms              *float64 `json:"p99_ms"`
	MaxMs              *float64 `json:"max_ms"`
	ClientCPUPct       float64  `json:"client_cpu_pct"`
	Workers            int      `json:"workers"`
	LateSends          int64    `json:"late_sends"` // sends that started over 1 ms behind schedule
	PublishErrors      int64    `json:"publish_errors"`
	violations
	OK bool `json:"ok"`
}

// errViolation marks a phase that lost, duplicated or reordered a delivery, or failed a
// publish request.
var errViolation = errors.New("delivery check failed")

// runLoad connects the subscribers, publishes cfg.rate messages/s to random boards on an
// absolute schedule, waits for the last deliveries and checks them. It returns the result
// and, if any delivery or publish went wrong, an error wrapping errViolation.
func runLoad(ctx context.Context, cfg loadConfig, logf func(format string, args ...any)) (result, error) {
	if err := cfg.validate(); err != nil {
		return result{}, err
	}
	subsCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	subs, subTransports, err := connectSubscribers(subsCtx, cfg)
	defer func() {
		for _, tr := range subTransports {
			tr.CloseIdleConnections()
		}
	}()
	if err != nil {
		return result{}, err
	}
	logf("connected %d subscribers over %s", len(subs), cfg.protocol)

	pub := newPublisher(cfg)
	defer pub.transport.CloseIdleConnections()
	start := time.Now().Add(20 * time.Millisecond)
	t0 := start.Add(cfg.warmup)
	t1 := t0.Add(cfg.duration)
	w0, w1 := t0.UnixNano(), t1.UnixNano()
	inWindow := func(sentAt int64) bool { return sentAt >= w0 && sentAt < w1 }

	// The CPU readings are taken at the window's edges, on their own schedule.
	readings := make(chan [2]cpuReading, 1)
	go func() {
		sleepUntil(ctx, t0)
		a := readCPU(cfg.serverPID, cfg.serverCPU)
		sleepUntil(ctx, t1)
		readings <- [2]cpuReading{a, readCPU(cfg.serverPID, cfg.serverCPU)}
	}()

	sent := pub.run(ctx, start, t1, inWindow)
	cpu := <-readings
	if ctx.Err() != nil {
		return result{}, ctx.Err()
	}

	// Wait for every subscriber to have its board's last message, then end the streams.
	want := pub.ackedByBoard()
	waitDelivered(subs, want, cfg.drain)
	var v violations
	for _, s := range subs {
		select {
		case <-s.done:
			v.EndedEarly++
			logf("subscriber of board %d: stream ended early: %v", s.board, s.err)
		default:
		}
	}
	stopSubs()
	var lats []int64
	deliveries := 0
	for _, s := range subs {
		<-s.done
		v.check(s.seqs, want[s.board])
		v.Unexpected += s.wrongBoard
		for _, x := range s.samples {
			if inWindow(x.sentAt) {
				lats = append(lats, x.latency)
				deliveries++
			}
		}
	}
	slices.Sort(lats)

	wall := t1.Sub(t0).Seconds()
	r := result{
		Label: cfg.label, Protocol: cfg.protocol, Boards: cfg.boards, PerBoard: cfg.perBoard,
		Rate: cfg.rate, AchievedRate: round1(float64(sent.inWindow) / wall),
		Requests: sent.inWindow, Deliveries: deliveries,
		ClientCPUPct: round1(100 * (cpu[1].self - cpu[0].self).Seconds() / wall),
		Workers:      sent.workers, LateSends: sent.late, PublishErrors: pub.errs.Load(),
		violations: v,
	}
	if cfg.unaryOnly() {
		r.Boards, r.PerBoard = 0, 0
	}
	if a, b := cpu[0], cpu[1]; a.coreOK && b.coreOK && b.coreTotal > a.coreTotal {
		r.SrvCoreBusyPct = ptr(round1(100 * float64(b.coreBusy-a.coreBusy) / float64(b.coreTotal-a.coreTotal)))
	}
	if cfg.serverPID > 0 {
		if err := errors.Join(cpu[0].serverErr, cpu[1].serverErr); err != nil {
			return r, fmt.Errorf("read server cpu: %w", err)
		}
		s := (cpu[1].server - cpu[0].server).Seconds()
		r.ServerCPUSeconds = ptr(round3(s))
		r.ServerCPUPct = ptr(round1(100 * s / wall))
		if deliveries > 0 && s > 0 {
			r.SrvCPUUsPerDelivery = ptr(round3(s * 1e6 / float64(deliveries)))
			r.SrvDelivPerCPUSecond = ptr(math.Round(float64(deliveries) / s))
		}
		if sent.inWindow > 0 {
			r.SrvCPUUsPerRequest = ptr(round1(s * 1e6 / float64(sent.inWindow)))
		}
	}
	if len(lats) > 0 {
		r.P50Ms = ptr(ms(percentile(lats, 50)))
		r.P99Ms = ptr(ms(percentile(lats, 99)))
		r.MaxMs = ptr(ms(lats[len(lats)-1]))
	}
	r.OK = v == violations{} && r.PublishErrors == 0
	if !r.OK {
		return r, fmt.Errorf("%w: %+v, %d publish errors (first: %v)", errViolation, v, r.PublishErrors, pub.firstErr())
	}
	return r, nil
}

// newTransport returns a transport speaking only protocol, that keeps up to conns
// connections to the server idle.
func newTransport(protocol string, conns int) *http.Transport {
	var p http.Protocols
	if protocol == "h2c" {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return &http.Transport{Protocols: &p, DisableCompression: true, MaxIdleConnsPerHost: conns}
}

// publisher sends the publish requests over one shared transport (a pool of connections
// over HTTP/1.1, one connection over h2c) and keeps the seq the server gave each.
type publisher struct {
	cfg       loadConfig
	transport *http.Transport
	client    *http.Client
	errs      atomic.Int64

	mu    sync.Mutex
	acked map[uint32][]uint64 // per board, the seqs of the acknowledged messages
	first error
}

func newPublisher(cfg loadConfig) *publisher {
	tr := newTransport(cfg.protocol, cfg.inflight)
	return &publisher{cfg: cfg, transport: tr, client: &http.Client{Transport: tr}, acked: map[uint32][]uint64{}}
}

// sendStats describes the sending of one phase.
type sendStats struct {
	inWindow int   // acknowledged sends stamped in the window
	workers  int   // the most sends that were in flight at once, at most cfg.inflight
	late     int64 // sends that started more than a millisecond behind their schedule
}

// run sends message i at start + i/rate until end, each to a board picked by a generator
// seeded with cfg.seed. Sends run concurrently, up to cfg.inflight, so that a slow one
// does not hold the schedule back; when all are busy the schedule waits, and the
// achieved rate shows it.
func (p *publisher) run(ctx context.Context, start, end time.Time, inWindow func(int64) bool) sendStats {
	type job struct {
		board uint32
		due   time.Time
	}
	var (
		jobs     = make(chan job)
		workers  sync.WaitGroup
		nWorkers int
		counted  atomic.Int64
		late     atomic.Int64
	)
	worker := func() {
		for j := range jobs {
			if time.Since(j.due) > time.Millisecond {
				late.Add(1)
			}
			sentAt, err := p.send(ctx, j.board)
			if err == nil && inWindow(sentAt) {
				counted.Add(1)
			}
		}
	}
	rng := rand.New(rand.NewPCG(p.cfg.seed, 0))
	boards := max(p.cfg.boards, 1)
	period := float64(time.Second) / p.cfg.rate
	for i := 0; ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(float64(i) * period))
		if !due.Before(end) {
			break
		}
		sleepUntil(ctx, due)
		j := job{board: uint32(rng.IntN(boards)), due: due}
		select {
		case jobs <- j:
			continue
		default:
		}
		if nWorkers < p.cfg.inflight {
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
	return sendStats{inWindow: int(counted.Load()), workers: nWorkers, late: late.Load()}
}

// send publishes one message to board and records the seq the server gave it. It returns
// the message's send time (Unix ns).
func (p *publisher) send(ctx context.Context, board uint32) (int64, error) {
	sentAt := time.Now().UnixNano()
	body := newMessage(p.cfg.msgBytes, board, sentAt)
	seq, err := p.post(ctx, body)
	if err != nil {
		p.errs.Add(1)
		p.mu.Lock()
		if p.first == nil {
			p.first = err
		}
		p.mu.Unlock()
		return sentAt, err
	}
	p.mu.Lock()
	p.acked[board] = append(p.acked[board], seq)
	p.mu.Unlock()
	return sentAt, nil
}

func (p *publisher) post(ctx context.Context, body []byte) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.url+"/publish", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return 0, fmt.Errorf("publish: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK || len(out) != 8 {
		return 0, fmt.Errorf("publish: got status %d and %q, want 200 and 8 bytes", resp.StatusCode, out)
	}
	return binary.LittleEndian.Uint64(out), nil
}

// ackedByBoard returns each board's acknowledged seqs, in ascending order.
func (p *publisher) ackedByBoard() map[uint32][]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[uint32][]uint64, len(p.acked))
	for b, seqs := range p.acked {
		out[b] = slices.Sorted(slices.Values(seqs))
	}
	return out
}

func (p *publisher) firstErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first
}

// subClient is one subscriber: a subscribe stream on its own connection and what it read.
type subClient struct {
	board    uint32
	received atomic.Int64 // how many messages were read so far
	done     chan struct{}
	// Written by the reading goroutine; read after done is closed.
	seqs       []uint64
	samples    []sample
	wrongBoard int
	err        error
}

// sample is one delivery's send time (Unix ns) and latency (ns).
type sample struct{ sentAt, latency int64 }

// connectSubscribers opens cfg.boards*cfg.perBoard subscribe streams, each with its own
// transport (so its own connection), and starts reading them. It returns once every
// stream has its response headers, that is once every subscriber is on its board. The
// streams end with ctx.
func connectSubscribers(ctx context.Context, cfg loadConfig) ([]*subClient, []*http.Transport, error) {
	if cfg.unaryOnly() {
		return nil, nil, nil
	}
	n := cfg.boards * cfg.perBoard
	subs := make([]*subClient, n)
	transports := make([]*http.Transport, n)
	// A bounded number of connects at once, so as not to overflow the listen backlog;
	// after the first failure, no new one starts.
	sem := make(chan struct{}, 64)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return first != nil }
	for i := range n {
		subs[i] = &subClient{board: uint32(i / cfg.perBoard), done: make(chan struct{})}
		transports[i] = newTransport(cfg.protocol, 1)
		sem <- struct{}{}
		if failed() {
			close(subs[i].done)
			<-sem
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := subs[i].connect(ctx, transports[i], cfg.url); err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return subs, transports, first
}

func (s *subClient) connect(ctx context.Context, tr *http.Transport, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/subscribe?board="+strconv.FormatUint(uint64(s.board), 10), nil)
	if err != nil {
		close(s.done)
		return err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		close(s.done)
		return fmt.Errorf("subscribe to board %d: %w", s.board, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		close(s.done)
		return fmt.Errorf("subscribe to board %d: got status %d, want 200", s.board, resp.StatusCode)
	}
	go s.read(resp.Body)
	return nil
}

// read reads envelopes until the stream ends, recording each message's seq and latency.
func (s *subClient) read(body io.ReadCloser) {
	defer close(s.done)
	defer body.Close()
	var hdr [envelopeLen]byte
	buf := make([]byte, maxMessageLen)
	for {
		if _, err := io.ReadFull(body, hdr[:]); err != nil {
			s.err = err
			return
		}
		n := envelopeMessageLen(hdr[:])
		if n < headerLen || n > maxMessageLen {
			s.err = fmt.Errorf("read envelope: got a %d-byte message, want %d to %d", n, headerLen, maxMessageLen)
			return
		}
		msg := buf[:n]
		if _, err := io.ReadFull(body, msg); err != nil {
			s.err = err
			return
		}
		now := time.Now().UnixNano()
		if messageBoard(msg) != s.board {
			s.wrongBoard++
			continue
		}
		sentAt := messageSentAt(msg)
		s.seqs = append(s.seqs, messageSeq(msg))
		s.samples = append(s.samples, sample{sentAt: sentAt, latency: now - sentAt})
		s.received.Add(1)
	}
}

// waitDelivered waits up to timeout for every subscriber to have read as many messages as
// its board was sent, or for its stream to end.
func waitDelivered(subs []*subClient, want map[uint32][]uint64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, s := range subs {
		s.waitFor(int64(len(want[s.board])), deadline)
	}
}

// waitFor waits until s has read n messages, its stream ended or deadline passed.
func (s *subClient) waitFor(n int64, deadline time.Time) {
	for s.received.Load() < n && time.Now().Before(deadline) {
		select {
		case <-s.done:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// sleepUntil sleeps until t or until ctx is done.
func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// percentile returns the p-th percentile (nearest rank) of sorted, which is not empty.
func percentile(sorted []int64, p float64) int64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(ns int64) float64      { return round3(float64(ns) / 1e6) }
func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
func ptr[T any](v T) *T        { return &v }
