package service

import (
	"fmt"
	"log/slog"

	"github.com/actionsync/actionsync/broker/presence"
	"math"
	"regexp"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/metrics"
)

// Defaults for Limits and Options.
const (
	DefaultMaxTypeBytes        = 128
	DefaultMaxPayloadBytes     = 64 << 10
	DefaultMaxDispatchActions  = 100
	DefaultMaxPositions        = 64
	DefaultHistoryLimit        = 100
	DefaultMaxHistoryLimit     = 1_000
	DefaultMaxReadBytes        = 8 << 20
	DefaultMaxHistoryBytes     = 4 << 20
	DefaultChannelPattern      = `^[A-Za-z0-9_.:-]{1,128}$`
	DefaultHeartbeat           = 15 * time.Second
	DefaultMaxBatchActions     = 1_024
	DefaultMaxBatchBytes       = 1 << 20
	DefaultBatchDelayPerStream = 30 * time.Microsecond
	DefaultMaxBatchDelay       = 50 * time.Millisecond
	DefaultTokenGrace          = 10 * time.Second
	maxIDBytes                 = 64
	maxClientIDBytes           = 64
	maxEpochBytes              = 64
	idPatternText              = `^[A-Za-z0-9_.:-]{1,64}$`
	defaultDispatchQueueOnSync = 16
)

// Limits bounds what one request may carry. The zero value of a field means its default.
type Limits struct {
	// MaxTypeBytes is the longest action type in bytes (default 128).
	MaxTypeBytes int
	// MaxPayloadBytes bounds an action's payload and meta together, in their protobuf
	// encoding (default 65,536), whatever protocol the request came in.
	MaxPayloadBytes int
	// MaxDispatchActions is the most actions in one dispatch (default 100).
	MaxDispatchActions int
	// MaxPositions is the most channels one subscription follows (default 64).
	MaxPositions int
	// MaxHistoryLimit is the largest History limit (default 1,000).
	MaxHistoryLimit int
	// MaxHistoryBytes stops a History page growing past this many bytes of actions
	// (default 4 MiB; the first action is always returned): a small request cannot ask
	// for a huge response.
	MaxHistoryBytes int
	// MaxReadBytes is the largest request message the server reads (default 8 MiB);
	// larger ones fail with RESOURCE_EXHAUSTED before they are decoded.
	MaxReadBytes int
	// ChannelPattern is the regular expression a channel name must match in full
	// (default `^[A-Za-z0-9_.:-]{1,128}$`).
	ChannelPattern string
	// MaxPresenceInfoBytes bounds a subscriber's presence info in its protobuf encoding
	// (default 256), whatever protocol the request came in.
	MaxPresenceInfoBytes int
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxTypeBytes, DefaultMaxTypeBytes)
	def(&l.MaxPayloadBytes, DefaultMaxPayloadBytes)
	def(&l.MaxDispatchActions, DefaultMaxDispatchActions)
	def(&l.MaxPositions, DefaultMaxPositions)
	def(&l.MaxHistoryLimit, DefaultMaxHistoryLimit)
	def(&l.MaxReadBytes, DefaultMaxReadBytes)
	def(&l.MaxHistoryBytes, DefaultMaxHistoryBytes)
	def(&l.MaxPresenceInfoBytes, DefaultMaxPresenceInfoBytes)
	if l.ChannelPattern == "" {
		l.ChannelPattern = DefaultChannelPattern
	}
	return l
}

// Options configures a Service. The zero value of a field means its default.
type Options struct {
	// Limits bounds requests.
	Limits Limits
	// AllowList restricts action types per channel (default nil: every type allowed).
	AllowList *AllowList
	// Heartbeat is how long a stream may stay idle before the server sends a heartbeat
	// (default 15s; negative: never).
	Heartbeat time.Duration
	// MaxBatchActions is the most actions in one streamed response (default 1,024).
	MaxBatchActions int
	// MaxBatchBytes stops a streamed response growing once it passes this many bytes
	// (default 1 MiB).
	MaxBatchBytes int
	// CompressMinBytes: responses at least this large are gzip-compressed when the client
	// accepts gzip. 0 (default): never compress responses. Streamed batches of small
	// actions compress well but cost several times more CPU than they save on a LAN, and
	// connect-go clients accept gzip by default, so compression is opt-in.
	CompressMinBytes int
	// BatchDelayPerStream and MaxBatchDelay shape adaptive batching: a stream that has
	// sent within the last min(MaxBatchDelay, active streams × BatchDelayPerStream) waits
	// for the rest of that interval before sending again, so that its next response
	// carries everything queued meanwhile. Under light load streams send at once; under
	// heavy fan-out each stream sends about once per fan-out round instead of once per
	// action. Defaults 30µs (about one write(2) of a response on loopback) and 50ms; a negative BatchDelayPerStream turns it off.
	BatchDelayPerStream time.Duration
	MaxBatchDelay       time.Duration
	// Logger receives one line per finished RPC (default slog.Default()).
	Logger *slog.Logger
	// Auth, if set, authenticates every RPC from its "Authorization: Bearer <token>"
	// header (UNAUTHENTICATED otherwise), binds client ids to the token and checks its
	// rights on every channel a request touches (PERMISSION_DENIED). nil: anyone may do
	// anything (the server allows that only on loopback addresses unless told otherwise).
	Auth Authenticator
	// TokenGrace is how long a stream may outlive its token before it ends with
	// UNAUTHENTICATED (default 10s: clock skew, and time for the client to reconnect
	// with a fresh token first).
	TokenGrace time.Duration
	// JSONCacheBytes bounds the JSON encodings of recent actions that JSON subscribers
	// share (default broker.DefaultJSONCacheBytes, 64 MiB).
	JSONCacheBytes int
	// Quotas bound each authenticated identity's dispatch rate and open streams.
	Quotas Quotas
	// Interceptors run around every RPC of the SyncService, after logging and
	// authentication (so they see the identity), in order.
	Interceptors []connect.Interceptor
	// Metrics records what the service does (metrics.New); nil records nothing.
	Metrics *metrics.Metrics
	// Presence tracks who is on each channel (default: a single-node tracker made with
	// PresenceOptions, which the service closes in Shutdown). A tracker passed in (one
	// shared with other nodes) is the caller's to close, after Shutdown.
	Presence *presence.Tracker
	// PresenceOptions configure the tracker the service makes when Presence is nil.
	PresenceOptions presence.Options
}

func (o Options) withDefaults() (Options, *regexp.Regexp, error) {
	o.Limits = o.Limits.withDefaults()
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.MaxBatchActions <= 0 {
		o.MaxBatchActions = DefaultMaxBatchActions
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if o.CompressMinBytes <= 0 {
		o.CompressMinBytes = math.MaxInt
	}
	if o.BatchDelayPerStream == 0 {
		o.BatchDelayPerStream = DefaultBatchDelayPerStream
	}
	if o.MaxBatchDelay <= 0 {
		o.MaxBatchDelay = DefaultMaxBatchDelay
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Quotas = o.Quotas.withDefaults()
	if o.TokenGrace <= 0 {
		o.TokenGrace = DefaultTokenGrace
	}
	re, err := regexp.Compile(o.Limits.ChannelPattern)
	if err != nil {
		return o, nil, fmt.Errorf("channel pattern %q: %w", o.Limits.ChannelPattern, err)
	}
	return o, re, nil
}
