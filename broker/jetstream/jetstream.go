// Package jetstream is the broker backend on NATS JetStream: history that survives
// restarts, and any number of stateless actionsync nodes sharing one order per channel.
//
// Storage. One stream holds every channel, one subject per channel (subject.go), each
// message one accepted action in protobuf encoding with its channel, seq, client id and
// time set. The stream keeps HistorySize messages per subject (MaxMsgsPerSubject,
// discard old). Seqs are per channel and contiguous from 1, like the in-memory broker's:
// a publisher assigns head+1.. and publishes with Nats-Expected-Last-Subject-Sequence set
// to the stream sequence of the channel's head, so two nodes racing on one channel
// cannot both succeed; the loser reloads the head and retries. A dispatch of several
// actions is one JetStream atomic batch: all of it is stored or none.
//
// Each node keeps a cache of the channels it serves (a history.Log per channel, the
// same structure the in-memory broker uses), loaded from the stream on first use and
// kept up to date by one ordered consumer per node over the whole stream (the feed).
// Dedupe, History and replays read the cache; the feed hands each channel's new
// entries to its hub.Topic, so a node reads each live action from NATS once, however
// many subscribers it has. Channels nobody on the node uses are evicted after
// CacheIdle.
//
// The epoch of every channel is the stream's creation time: a stream that is deleted
// and recreated (or lost) starts a new epoch, and resuming clients get a reset.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/hub"
)

// Defaults for Options.
const (
	DefaultStream         = "ACTIONSYNC"
	DefaultSubjectPrefix  = "actionsync.ch"
	DefaultHistorySize    = 10_000
	DefaultMaxAge         = 24 * time.Hour
	DefaultMaxChannels    = 100_000
	DefaultPublishTimeout = 5 * time.Second
	DefaultCacheIdle      = time.Minute
	// DefaultMaxChannelHistoryBytes bounds a node's cache of one channel's history.
	DefaultMaxChannelHistoryBytes = 64 << 20
)

// Options configures a Broker. The zero value of each field means its default.
type Options struct {
	// Stream is the JetStream stream's name (default "ACTIONSYNC"). New creates it, or
	// updates its limits to these options.
	Stream string
	// SubjectPrefix is the subjects' prefix (default "actionsync.ch"): channel c is
	// subject SubjectPrefix.<c encoded>.
	SubjectPrefix string
	// Replicas is the stream's replica count (default 1; 3 in a NATS cluster).
	Replicas int
	// HistorySize is the most actions kept per channel (default 10,000): the stream's
	// MaxMsgsPerSubject. It is also the dedupe window.
	HistorySize int
	// MaxAge drops actions older than this from history (default 24h; negative: no age
	// limit). It is applied by every node with its clock; the stream itself keeps each
	// channel's last HistorySize messages, so a channel's head survives.
	MaxAge time.Duration
	// QueueSize is the most actions queued for one subscriber (default 1,024).
	QueueSize int
	// MaxChannels is the most channels this node caches at once (default 100,000);
	// using one more, when none is idle enough to evict, fails with
	// broker.ErrTooManyChannels.
	MaxChannels int
	// CacheIdle is how long a channel nobody uses on this node stays cached (default 1m).
	CacheIdle time.Duration
	// PublishTimeout bounds one publish to JetStream (default 5s).
	PublishTimeout time.Duration
	// MaxChannelHistoryBytes bounds a node's cache of one channel's history in bytes
	// (default 64 MiB; negative: no bound): past it the cache drops the channel's
	// oldest actions (clients resuming behind them get a reset or the snapshot).
	MaxChannelHistoryBytes int
	// MaxSnapshotBytes is the most bytes of state a channel's snapshot may hold
	// (default broker.DefaultMaxSnapshotBytes, 1 MiB), capped at what the NATS
	// connection's max payload leaves room for.
	MaxSnapshotBytes int
	// OnStatus, if set, is called with false when the connection to NATS is lost and
	// with true when it is back (health checks follow it).
	OnStatus func(available bool)
	// Logger receives the broker's warnings (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = DefaultSubjectPrefix
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.HistorySize <= 0 {
		o.HistorySize = DefaultHistorySize
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxChannels <= 0 {
		o.MaxChannels = DefaultMaxChannels
	}
	if o.CacheIdle <= 0 {
		o.CacheIdle = DefaultCacheIdle
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.MaxChannelHistoryBytes == 0 {
		o.MaxChannelHistoryBytes = DefaultMaxChannelHistoryBytes
	}
	if o.MaxChannelHistoryBytes < 0 {
		o.MaxChannelHistoryBytes = 0 // history.Log: no byte bound
	}
	if o.MaxSnapshotBytes <= 0 {
		o.MaxSnapshotBytes = broker.DefaultMaxSnapshotBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Broker is the JetStream broker.Broker. It does not own the NATS connection: close
// the broker before the connection.
type Broker struct {
	opts   Options
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	// snapshots is the snapshot stream (snapshot.go).
	snapshots jetstream.Stream
	epoch     atomic.Pointer[string]
	hub       *hub.Hub
	log       *slog.Logger

	feed jetstream.ConsumeContext // owned by watchStream after New
	// The feed goroutine's own state: channels with entries to deliver, and how many
	// messages it applied since it last delivered.
	feedDirty []*channel
	feedHeld  int
	recheck   chan struct{} // asks watchStream to check the stream (capacity 1)
	statusCh  chan nats.Status
	done      chan struct{} // closed by Close: stops the sweeper and the watchers
	ctx       context.Context
	cancel    context.CancelFunc // cancels ctx in Close: the stream watcher's requests
	wg        sync.WaitGroup

	available atomic.Bool

	// conn is done when the connection it was made for is lost: publishes under way
	// wait on it, since their answers cannot come on a new connection.
	connMu     sync.Mutex
	conn       context.Context
	connCancel context.CancelFunc

	// closeMu: Publish and History hold it for reading; Close takes it for writing,
	// so Close waits for the calls under way.
	closeMu sync.RWMutex
	closed  bool

	mu        sync.RWMutex
	channels  map[string]*channel     // by channel name
	bySubject map[string]*channel     // the same, by subject
	topics    map[*hub.Topic]*channel // the channel each open topic uses

	// beforeCommit, if set, runs before a batch's commit message is sent (tests).
	beforeCommit func()
}

var (
	_ broker.Broker = (*Broker)(nil)
	_ hub.Source    = source{}
)

// New creates or updates the stream and starts following it. nc must stay open until
// Close returns; for a fast failure while NATS is unreachable, connect with
// nats.ReconnectBufSize(-1) (see Connect).
func New(ctx context.Context, nc *nats.Conn, opts Options) (*Broker, error) {
	opts = opts.withDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	stream, err := js.CreateOrUpdateStream(ctx, streamConfig(opts))
	if err != nil {
		return nil, fmt.Errorf("create stream %q: %w", opts.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %q info: %w", opts.Stream, err)
	}
	snapshots, err := js.CreateOrUpdateStream(ctx, snapshotStreamConfig(opts))
	if err != nil {
		return nil, fmt.Errorf("create stream %q: %w", snapshotStreamConfig(opts).Name, err)
	}
	b := &Broker{
		snapshots: snapshots,
		opts:      opts,
		nc:        nc,
		js:        js,
		stream:    stream,
		log:       opts.Logger.With(slog.String("stream", opts.Stream)),
		done:      make(chan struct{}),
		recheck:   make(chan struct{}, 1),
		channels:  make(map[string]*channel),
		bySubject: make(map[string]*channel),
		topics:    make(map[*hub.Topic]*channel),
	}
	b.setEpoch(info)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.conn, b.connCancel = context.WithCancel(b.ctx)
	b.hub = hub.New(source{b}, hub.Options{QueueSize: opts.QueueSize})
	b.available.Store(nc.IsConnected())

	if b.feed, err = b.startFeed(ctx, info); err != nil {
		b.cancel()
		return nil, err
	}

	b.statusCh = nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	b.wg.Add(3)
	go b.watchStatus()
	go b.watchStream()
	go b.sweep()
	return b, nil
}

// streamConfig is the stream the options describe.
func streamConfig(opts Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               opts.Stream,
		Description:        "actionsync channels: one subject per channel, one message per action",
		Subjects:           []string{opts.SubjectPrefix + ".>"},
		Storage:            jetstream.FileStorage,
		Replicas:           opts.Replicas,
		MaxMsgsPerSubject:  int64(opts.HistorySize),
		Discard:            jetstream.DiscardOld,
		AllowAtomicPublish: true,
		AllowDirect:        true,
	}
}

// streamRecreateDelay is how long a node waits, after finding its stream gone, before
// it creates it again.
const streamRecreateDelay = time.Second

// feedStopWait bounds the wait for the feed to stop: without a connection to NATS,
// nats.go may take seconds to finish an ordered consumer, and Close must not.
const feedStopWait = time.Second

// stopFeed stops the feed and waits (a bounded time) until no message is being
// applied. It runs on watchStream's goroutine, which owns the feed.
func (b *Broker) stopFeed() {
	b.feed.Stop()
	select {
	case <-b.feed.Closed():
	case <-time.After(feedStopWait):
		b.log.Warn("feed did not stop within " + feedStopWait.String() + "; going on")
	}
}

// stoppedFeed is a feed that has ended: what watchStream holds when restarting the feed
// failed, until it succeeds.
type stoppedFeed struct{}

// Stop does nothing: the feed has ended.
func (stoppedFeed) Stop() {}

// Drain does nothing: the feed has ended.
func (stoppedFeed) Drain() {}

// Closed returns a closed channel: the feed has ended.
func (stoppedFeed) Closed() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// startFeed starts the feed after the last message stored now: no channel is cached
// yet, and a channel loaded later reads what came before from the stream.
func (b *Broker) startFeed(ctx context.Context, info *jetstream.StreamInfo) (jetstream.ConsumeContext, error) {
	cons, err := b.js.OrderedConsumer(ctx, b.opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{b.opts.SubjectPrefix + ".>"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    info.State.LastSeq + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("stream %q: feed consumer: %w", b.opts.Stream, err)
	}
	cc, err := cons.Consume(b.onFeed, jetstream.ConsumeErrHandler(b.onFeedError))
	if err != nil {
		return nil, fmt.Errorf("stream %q: feed: %w", b.opts.Stream, err)
	}
	return cc, nil
}

// setEpoch sets the epoch from the stream's creation time.
func (b *Broker) setEpoch(info *jetstream.StreamInfo) {
	e := strconv.FormatInt(info.Created.UnixNano(), 36)
	b.epoch.Store(&e)
}

// Epoch returns the epoch of every channel: it changes when the stream is recreated.
func (b *Broker) Epoch() string { return *b.epoch.Load() }

// checkStream asks watchStream to check that the stream is still the one the caches
// were loaded from.
func (b *Broker) checkStream() {
	select {
	case b.recheck <- struct{}{}:
	default:
	}
}

// watchStream checks the stream when the feed or a publish suggests it is gone: a
// stream deleted (and perhaps recreated by another node) has lost every channel's
// history. The node then creates it again if needed, takes the new epoch, drops its
// caches, ends every subscription (clients resume and get a reset) and restarts the feed.
func (b *Broker) watchStream() {
	defer b.wg.Done()
	defer b.stopFeed()
	for {
		select {
		case <-b.done:
			return
		case <-b.recheck:
		}
		for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
			err := b.renewIfLost()
			if err == nil {
				break
			}
			b.log.Warn("stream check failed; trying again", slog.Any("err", err), slog.Duration("in", delay))
			select {
			case <-b.done:
				return
			case <-time.After(delay):
			}
		}
	}
}

// renewIfLost recreates the node's view of the stream if the stream is not the one it
// knows. It runs on watchStream's goroutine, which owns the feed.
func (b *Broker) renewIfLost() error {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.PublishTimeout)
	defer cancel()
	info, err := b.stream.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Give the server time to finish tearing the old stream down: a stream created
		// again while that is under way has been seen to accept no publish (nats-server
		// 2.15.2, on a loaded machine).
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(streamRecreateDelay):
		}
		// The stream handle addresses the stream by name: it serves the new one too.
		// The snapshot stream may have gone with it (a lost JetStream store).
		if _, err = b.js.CreateOrUpdateStream(ctx, streamConfig(b.opts)); err == nil {
			if _, err = b.js.CreateOrUpdateStream(ctx, snapshotStreamConfig(b.opts)); err == nil {
				info, err = b.stream.Info(ctx)
			}
		}
	}
	if err != nil {
		return err
	}
	old := b.Epoch()
	if strconv.FormatInt(info.Created.UnixNano(), 36) == old {
		return nil
	}
	b.log.Error("the stream was lost and created again: every channel's history is gone; clients get a reset")
	b.stopFeed()
	b.feedDirty, b.feedHeld = nil, 0 // the feed's goroutine has ended
	lost := fmt.Errorf("stream %q lost: %w", b.opts.Stream, broker.ErrUnavailable)
	b.mu.Lock()
	b.setEpoch(info)
	var topics []*hub.Topic
	for _, ch := range b.channels {
		ch.mu.Lock()
		ch.stale = true
		if ch.topic != nil {
			topics = append(topics, ch.topic)
		}
		ch.mu.Unlock()
	}
	clear(b.channels)
	clear(b.bySubject)
	b.mu.Unlock()
	for _, t := range topics {
		t.Cut(lost) // later subscriptions open new topics on fresh caches
	}
	b.hub.EndAll(lost)
	feed, err := b.startFeed(ctx, info)
	if err != nil {
		// Put a stopped feed back so that the deferred Stop in watchStream works.
		b.feed = stoppedFeed{}
		return err
	}
	b.feed = feed
	return nil
}

// Available reports whether the broker can reach NATS now.
func (b *Broker) Available() bool { return b.available.Load() }

// watchStatus follows the connection: while it is down, publishing fails fast and
// every subscription ends with ErrUnavailable, so that clients resume elsewhere or later.
func (b *Broker) watchStatus() {
	defer b.wg.Done()
	for {
		select {
		case <-b.done:
			return
		case st, ok := <-b.statusCh:
			if !ok {
				return
			}
			up := st == nats.CONNECTED
			if b.available.Swap(up) == up {
				continue
			}
			b.connMu.Lock()
			if up {
				b.conn, b.connCancel = context.WithCancel(b.ctx)
			} else {
				b.connCancel() // fail the publishes under way at once
			}
			b.connMu.Unlock()
			if up {
				b.log.Info("NATS connection back")
			} else {
				b.log.Warn("NATS connection lost: dispatches fail and streams end until it is back", slog.String("status", st.String()))
				b.hub.EndAll(fmt.Errorf("NATS connection %s: %w", st, broker.ErrUnavailable))
			}
			if b.opts.OnStatus != nil {
				b.opts.OnStatus(up)
			}
		}
	}
}

// connContext returns the context of the current connection: done when it is lost.
func (b *Broker) connContext() context.Context {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	return b.conn
}

// checkOpen fails when the broker is closed or NATS is unreachable. Callers hold
// closeMu for reading.
func (b *Broker) checkOpen() error {
	if b.closed {
		return broker.ErrClosed
	}
	if !b.available.Load() {
		return fmt.Errorf("no connection to NATS: %w", broker.ErrUnavailable)
	}
	return nil
}

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(opts broker.SubscribeOptions) (broker.Subscription, error) {
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed {
		return nil, broker.ErrClosed
	}
	return b.hub.Subscribe(opts)
}

// Close implements broker.Broker: it waits for the Publish calls under way, stops the
// feed and ends every subscription. It does not close the NATS connection.
func (b *Broker) Close() error {
	b.closeMu.Lock()
	if b.closed {
		b.closeMu.Unlock()
		return nil
	}
	b.closed = true
	b.closeMu.Unlock()
	b.cancel()
	close(b.done) // watchStream stops the feed

	b.wg.Wait()
	b.nc.RemoveStatusListener(b.statusCh)
	b.hub.Close()
	return nil
}

// isWrongLastSeq reports whether err is JetStream's answer to a publish whose expected
// last subject sequence was not the subject's last: another node published first.
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// ConnectOptions are the NATS connection options the broker expects, to add to the
// caller's own (credentials, TLS): reconnect forever, and fail publishes at once while
// disconnected instead of buffering them (a buffered publish that times out for the
// client could still be stored later).
func ConnectOptions() []nats.Option {
	return []nats.Option{
		nats.Name("actionsync"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(-1),
	}
}

// Stats implements broker.StatsReporter; Channels counts the channels this node caches.
func (b *Broker) Stats() broker.Stats {
	subs, _, replayed := b.hub.Stats()
	b.mu.RLock()
	channels := len(b.channels)
	b.mu.RUnlock()
	return broker.Stats{Channels: channels, Subscriptions: subs, Replayed: replayed}
}

// ListChannels implements broker.ChannelLister: the channels this node caches.
func (b *Broker) ListChannels(prefix string, limit int) ([]broker.ChannelStats, int) {
	b.mu.RLock()
	chans := make([]*channel, 0, len(b.channels))
	for name, ch := range b.channels {
		if strings.HasPrefix(name, prefix) {
			chans = append(chans, ch)
		}
	}
	b.mu.RUnlock()
	list := make([]broker.ChannelStats, 0, len(chans))
	for _, ch := range chans {
		ch.mu.Lock()
		st := broker.ChannelStats{Channel: ch.name, Subscribers: ch.topic.Subscribers(), Epoch: ch.epoch, SnapshotSeq: ch.snap.GetSeq()}
		if ch.log != nil {
			st.HeadSeq, st.FirstSeq, st.Actions, st.HistoryBytes = ch.log.Head(), ch.log.First(), ch.log.Len(), ch.log.Bytes()
		}
		ch.mu.Unlock()
		list = append(list, st)
	}
	return broker.TopChannels(list, limit), len(list)
}
