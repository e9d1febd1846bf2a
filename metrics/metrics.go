// Package metrics holds actionsync's Prometheus metrics. Labels have few values only
// (procedures, protocols, error codes, kinds): never a channel name, client id or
// identity. Recording does not allocate, so that the fan-out path stays allocation-free.
// A nil *Metrics records nothing: every method may be called on it.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/actionsync/actionsync/broker"
)

const namespace = "actionsync"

// codes are the values of the code label: "ok" and every Connect code, in code order.
var codes = func() []string {
	out := []string{"ok"}
	for c := connect.CodeCanceled; c <= connect.CodeUnauthenticated; c++ {
		out = append(out, c.String())
	}
	return out
}()

// codeIndex is the index in codes of err's code ("ok" for nil).
func codeIndex(err error) int {
	if err == nil {
		return 0
	}
	c := int(connect.CodeOf(err))
	if c < 1 || c >= len(codes) {
		return int(connect.CodeUnknown)
	}
	return c
}

// Metrics is the server's metrics and the registry that serves them.
type Metrics struct {
	reg *prometheus.Registry

	rpcs        *prometheus.CounterVec // procedure, protocol, code
	rpcSeconds  *prometheus.HistogramVec
	streams     *prometheus.GaugeVec
	rpcChildren sync.Map // rpcKey -> *rpcChildren

	dispatches      [17]prometheus.Counter // by code index
	actionsAccepted prometheus.Counter
	actionsDup      prometheus.Counter
	actionsRefused  [17]prometheus.Counter
	dispatchSeconds prometheus.Histogram

	deliveries     prometheus.Counter
	deliveredBytes prometheus.Counter
	batchActions   prometheus.Histogram
	pollEvents     prometheus.Histogram
	fanoutSeconds  prometheus.Histogram
	resets         prometheus.Counter
	snapshotStarts prometheus.Counter
	slowConsumers  prometheus.Counter

	brokerErrors [17]prometheus.Counter
	rateLimited  map[string]prometheus.Counter
	authRefused  [17]prometheus.Counter
}

type rpcKey struct{ procedure, protocol string }

type rpcChildren struct {
	codes   [17]prometheus.Counter
	seconds prometheus.Observer
	streams prometheus.Gauge
}

// Rate-limit kinds, the values of actionsync_rate_limited_total's kind label.
const (
	LimitDispatch = "dispatch" // --dispatch-rate
	LimitStreams  = "streams"  // --max-streams-per-identity
)

// New returns the metrics, registered with Go runtime and process collectors; b's
// Stats are read at each scrape when b reports them.
func New(b broker.Broker) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{reg}
	m := &Metrics{reg: reg}
	m.rpcs = f.counterVec("rpcs_total", "RPCs finished, by procedure, protocol (connect, grpc, grpcweb) and code (ok or the Connect error code).", "procedure", "protocol", "code")
	m.rpcSeconds = f.histogramVec("unary_rpc_duration_seconds", "Duration of unary RPCs, receive to answer.", latencyBuckets, "procedure")
	m.streams = f.gaugeVec("streams_active", "Streams (Subscribe and Sync) open now, by procedure and protocol.", "procedure", "protocol")
	dispatches := f.counterVec("dispatches_total", "Dispatch requests (unary or on a Sync stream), by code.", "code")
	refused := f.counterVec("actions_refused_total", "Actions in refused dispatch requests, by code (a request is applied whole or not at all).", "code")
	brokerErrs := f.counterVec("broker_errors_total", "Broker operations that failed, by the code returned to the client.", "code")
	auth := f.counterVec("auth_refusals_total", "Requests refused by authentication or authorization, by code.", "code")
	for i, c := range codes {
		m.dispatches[i] = dispatches.WithLabelValues(c)
		m.actionsRefused[i] = refused.WithLabelValues(c)
		m.brokerErrors[i] = brokerErrs.WithLabelValues(c)
		m.authRefused[i] = auth.WithLabelValues(c)
	}
	m.actionsAccepted = f.counter("actions_accepted_total", "Actions accepted and published (duplicates excluded).")
	m.actionsDup = f.counter("actions_duplicate_total", "Actions acknowledged as duplicates of an id already published.")
	m.dispatchSeconds = f.histogram("dispatch_duration_seconds", "Dispatch latency, request received to acknowledged (unary and Sync).", latencyBuckets)
	m.deliveries = f.counter("deliveries_total", "Actions written to streams (one per subscriber reached).")
	m.deliveredBytes = f.counter("delivered_bytes_total", "Bytes of actions written to streams (their protobuf encoding; JSON streams send more).")
	m.batchActions = f.histogram("stream_batch_actions", "Actions per streamed response.", countBuckets)
	m.pollEvents = f.histogram("stream_poll_events", "Events a stream found queued when it polled (at most --max-batch-actions actions).", countBuckets)
	m.fanoutSeconds = f.histogram("fanout_delay_seconds", "Time from an action's acceptance to its write to a stream (the oldest action of each response).", latencyBuckets)
	m.resets = f.counter("resets_total", "Resets sent: a stream's position could not be resumed, it starts over at the head.")
	m.snapshotStarts = f.counter("snapshot_starts_total", "Streams that started a channel from its snapshot.")
	m.slowConsumers = f.counter("slow_consumer_cutoffs_total", "Streams ended because their subscriber fell too far behind (RESOURCE_EXHAUSTED).")
	limited := f.counterVec("rate_limited_total", "Requests refused by a per-identity limit, by kind (dispatch: --dispatch-rate, streams: --max-streams-per-identity).", "kind")
	m.rateLimited = map[string]prometheus.Counter{LimitDispatch: limited.WithLabelValues(LimitDispatch), LimitStreams: limited.WithLabelValues(LimitStreams)}
	if sr, ok := b.(broker.StatsReporter); ok {
		reg.MustRegister(brokerStats{sr})
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is the registry the metrics are in, for tests and embedding.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) rpc(procedure, protocol string) *rpcChildren {
	k := rpcKey{procedure, protocol}
	if c, ok := m.rpcChildren.Load(k); ok {
		return c.(*rpcChildren)
	}
	c := &rpcChildren{seconds: m.rpcSeconds.WithLabelValues(procedure), streams: m.streams.WithLabelValues(procedure, protocol)}
	for i, code := range codes {
		c.codes[i] = m.rpcs.WithLabelValues(procedure, protocol, code)
	}
	got, _ := m.rpcChildren.LoadOrStore(k, c)
	return got.(*rpcChildren)
}

// UnaryDone records a finished unary RPC.
func (m *Metrics) UnaryDone(procedure, protocol string, start time.Time, err error) {
	if m == nil {
		return
	}
	c := m.rpc(procedure, protocol)
	c.codes[codeIndex(err)].Inc()
	c.seconds.Observe(time.Since(start).Seconds())
}

// StreamStarted records a stream that opened; call StreamDone when it ends.
func (m *Metrics) StreamStarted(procedure, protocol string) {
	if m == nil {
		return
	}
	m.rpc(procedure, protocol).streams.Inc()
}

// StreamDone records a stream that ended.
func (m *Metrics) StreamDone(procedure, protocol string, err error) {
	if m == nil {
		return
	}
	c := m.rpc(procedure, protocol)
	c.streams.Dec()
	c.codes[codeIndex(err)].Inc()
}

// Dispatched records a dispatch request: accepted and duplicate actions, or, when err is
// set, its actions refused with err's code.
func (m *Metrics) Dispatched(start time.Time, actions, accepted, duplicates int, err error) {
	if m == nil {
		return
	}
	i := codeIndex(err)
	m.dispatches[i].Inc()
	if err != nil {
		m.actionsRefused[i].Add(float64(actions))
		return
	}
	m.actionsAccepted.Add(float64(accepted))
	m.actionsDup.Add(float64(duplicates))
	m.dispatchSeconds.Observe(time.Since(start).Seconds())
}

// Sent records a streamed response of actions: how many, their bytes, and when the
// oldest of them was accepted.
func (m *Metrics) Sent(actions, bytes int, oldest time.Time) {
	if m == nil {
		return
	}
	m.deliveries.Add(float64(actions))
	m.deliveredBytes.Add(float64(bytes))
	m.batchActions.Observe(float64(actions))
	m.fanoutSeconds.Observe(time.Since(oldest).Seconds())
}

// Polled records how many events a stream found queued when it polled.
func (m *Metrics) Polled(events int) {
	if m == nil {
		return
	}
	m.pollEvents.Observe(float64(events))
}

// Reset records a reset sent; Snapshot records a channel started from its snapshot.
func (m *Metrics) Reset() {
	if m != nil {
		m.resets.Inc()
	}
}

// SnapshotStart records a stream that started a channel from its snapshot.
func (m *Metrics) SnapshotStart() {
	if m != nil {
		m.snapshotStarts.Inc()
	}
}

// SlowConsumer records a stream cut off for falling behind.
func (m *Metrics) SlowConsumer() {
	if m != nil {
		m.slowConsumers.Inc()
	}
}

// BrokerError records a broker operation that failed with err (a *connect.Error).
func (m *Metrics) BrokerError(err error) {
	if m != nil {
		m.brokerErrors[codeIndex(err)].Inc()
	}
}

// RateLimited records a request refused by a per-identity limit (LimitDispatch or
// LimitStreams).
func (m *Metrics) RateLimited(kind string) {
	if m != nil {
		if c, ok := m.rateLimited[kind]; ok {
			c.Inc()
		}
	}
}

// AuthRefused records a request refused by authentication or authorization.
func (m *Metrics) AuthRefused(err error) {
	if m != nil {
		m.authRefused[codeIndex(err)].Inc()
	}
}

// latencyBuckets span 100 µs to 10 s.
var latencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// countBuckets span 1 to 1,024 (the default --max-batch-actions).
var countBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}

// brokerStats reads the broker's Stats at each scrape.
type brokerStats struct{ b broker.StatsReporter }

var (
	channelsDesc      = prometheus.NewDesc(namespace+"_channels", "Channels the broker holds in memory (JetStream: in this node's cache).", nil, nil)
	subscriptionsDesc = prometheus.NewDesc(namespace+"_subscriptions", "Broker subscriptions open (one per stream that subscribed).", nil, nil)
	replayedDesc      = prometheus.NewDesc(namespace+"_replayed_actions_total", "Actions replayed from history to streams catching up.", nil, nil)
)

func (brokerStats) Describe(ch chan<- *prometheus.Desc) {
	ch <- channelsDesc
	ch <- subscriptionsDesc
	ch <- replayedDesc
}

func (c brokerStats) Collect(ch chan<- prometheus.Metric) {
	s := c.b.Stats()
	ch <- prometheus.MustNewConstMetric(channelsDesc, prometheus.GaugeValue, float64(s.Channels))
	ch <- prometheus.MustNewConstMetric(subscriptionsDesc, prometheus.GaugeValue, float64(s.Subscriptions))
	ch <- prometheus.MustNewConstMetric(replayedDesc, prometheus.CounterValue, float64(s.Replayed))
}

// factory makes collectors in actionsync's namespace and registers them.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
