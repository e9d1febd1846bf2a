// Package service implements actionsync.v1.SyncService over a broker.Broker: request
// validation, allow-lists, mapping the four RPCs onto the broker, batching streamed
// actions, and graceful shutdown of streams. It serves the Connect, gRPC and gRPC-Web
// protocols through connect-go.
package service

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"

	"github.com/actionsync/actionsync/auth"
	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/presence"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/metrics"
)

// Service is the SyncService handler. Create it with New; it is safe for concurrent use.
type Service struct {
	broker   broker.Broker
	opts     Options
	validate validator
	log      *slog.Logger
	activity activity // streams sending recently, for adaptive batching
	quotas   *quotas  // per-identity limits, with auth on
	// jsonCache holds the JSON of recent actions for JSON subscribers, bounded.
	jsonCache *broker.JSONCache
	// presence tracks who is on each channel; ownPresence: made by New, closed by
	// Shutdown.
	presence    *presence.Tracker
	ownPresence bool

	mu                sync.Mutex
	stopping          chan struct{} // closed by Shutdown
	stopped           bool
	streams           sync.WaitGroup // stream handlers and their reader goroutines
	dispatchesStopped bool           // set by StopDispatches
	dispatches        sync.WaitGroup // Dispatch and PutSnapshot calls under way
	openStreams       atomic.Int64   // Subscribe and Sync streams open, for GetStats
}

var _ actionsyncv1connect.SyncServiceHandler = (*Service)(nil)

// New returns the SyncService implementation over b. It fails if opts are invalid
// (e.g. a channel pattern that does not compile).
func New(b broker.Broker, opts Options) (*Service, error) {
	opts, channelRe, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Service{
		broker:    b,
		opts:      opts,
		validate:  validator{limits: opts.Limits, channelRe: channelRe, allow: opts.AllowList},
		log:       opts.Logger,
		quotas:    newQuotas(opts.Quotas),
		jsonCache: broker.NewJSONCache(opts.JSONCacheBytes),
		stopping:  make(chan struct{}),
	}
	if err := s.initPresence(); err != nil {
		return nil, err
	}
	return s, nil
}

// Handler returns the path prefix and handler for actionsync.v1.SyncService, with the
// service's codecs, read limit, compression threshold and request logging.
func (s *Service) Handler() (string, http.Handler) {
	interceptors := []connect.Interceptor{&logInterceptor{log: s.log}, metricsInterceptor{s.opts.Metrics}}
	if s.opts.Auth != nil {
		interceptors = append(interceptors, &authInterceptor{auth: s.opts.Auth, grace: s.opts.TokenGrace})
	}
	interceptors = append(interceptors, s.opts.Interceptors...)
	opts := append(codecOptions(s.jsonCache),
		connect.WithReadMaxBytes(s.opts.Limits.MaxReadBytes),
		gzipOption(s.opts.Limits.MaxReadBytes),
		connect.WithCompressMinBytes(s.opts.CompressMinBytes),
		connect.WithInterceptors(interceptors...),
	)
	return actionsyncv1connect.NewSyncServiceHandler(s, opts...)
}

// StopDispatches makes every Dispatch (also on Sync) and PutSnapshot from now on fail
// with CodeUnavailable, and returns when those under way have finished, or with ctx's
// error. A server stops dispatches before it ends streams, so that no action is
// acknowledged after its subscribers' streams ended.
func (s *Service) StopDispatches(ctx context.Context) error {
	s.mu.Lock()
	s.dispatchesStopped = true
	s.mu.Unlock()
	return waitCtx(ctx, &s.dispatches)
}

// beginWrite registers a Dispatch or PutSnapshot; it fails once StopDispatches was
// called. Call s.dispatches.Done when it returns.
func (s *Service) beginWrite() *connect.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dispatchesStopped {
		return connect.NewError(connect.CodeUnavailable, errShuttingDown)
	}
	s.dispatches.Add(1)
	return nil
}

// Shutdown ends every Subscribe and Sync stream with CodeUnavailable and refuses new
// ones; it returns when every stream handler has returned, or with ctx's error. Unary
// Dispatch and History calls are not interrupted (http.Server.Shutdown waits for them).
func (s *Service) Shutdown(ctx context.Context) error {
	if err := s.StopDispatches(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.stopping)
	}
	s.mu.Unlock()
	if err := waitCtx(ctx, &s.streams); err != nil {
		return err
	}
	if s.ownPresence {
		return s.presence.Close()
	}
	return nil
}

// waitCtx waits for wg, or returns ctx's error first. The waiting goroutine exits when wg
// is done (the work it counts always ends: streams are told to, dispatches finish).
func waitCtx(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// openStream counts a stream against its identity's quota (with auth on); call release
// when it ends.
func (s *Service) openStream(ctx context.Context) (release func(), err *connect.Error) {
	id := identityFrom(ctx)
	if id == nil {
		return func() {}, nil
	}
	release, err = s.quotas.openStream(id.Subject)
	if err != nil {
		s.opts.Metrics.RateLimited(metrics.LimitStreams)
	}
	return release, err
}

// enter registers a stream goroutine; it fails once Shutdown has begun.
func (s *Service) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return connect.NewError(connect.CodeUnavailable, errShuttingDown)
	}
	s.streams.Add(1)
	return nil
}

// Dispatch publishes a batch of actions to one channel, all or nothing.
func (s *Service) Dispatch(ctx context.Context, req *connect.Request[actionsyncv1.DispatchRequest]) (*connect.Response[actionsyncv1.DispatchResponse], error) {
	res, err := s.dispatch(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

// dispatch validates and publishes req; shared by Dispatch and Sync.
func (s *Service) dispatch(ctx context.Context, req *actionsyncv1.DispatchRequest) (*actionsyncv1.DispatchResponse, *connect.Error) {
	start := time.Now()
	res, err := s.applyDispatch(ctx, req)
	if m := s.opts.Metrics; m != nil {
		if err != nil {
			m.Dispatched(start, len(req.GetActions()), 0, 0, err)
		} else {
			dups := 0
			for _, a := range res.GetAcks() {
				if a.GetDuplicate() {
					dups++
				}
			}
			m.Dispatched(start, len(req.GetActions()), len(res.GetAcks())-dups, dups, nil)
		}
	}
	return res, err
}

// applyDispatch checks and publishes a dispatch request.
func (s *Service) applyDispatch(ctx context.Context, req *actionsyncv1.DispatchRequest) (*actionsyncv1.DispatchResponse, *connect.Error) {
	if err := s.beginWrite(); err != nil {
		return nil, err
	}
	defer s.dispatches.Done()
	if id := identityFrom(ctx); id != nil {
		if err := s.quotas.dispatch(id.Subject); err != nil {
			s.opts.Metrics.RateLimited(metrics.LimitDispatch)
			return nil, err
		}
	}
	clientID, cerr := ownClientID(ctx, req.GetClientId())
	if cerr != nil {
		return nil, cerr
	}
	req.ClientId = clientID
	if err := s.validate.dispatch(req); err != nil {
		return nil, err
	}
	if identityFrom(ctx) != nil {
		types := make([]string, len(req.GetActions()))
		for i, a := range req.GetActions() {
			types[i] = a.GetType()
		}
		if err := authorize(ctx, req.GetChannel(), auth.RightPublish, types...); err != nil {
			return nil, err
		}
	}
	actions := make([]*actionsyncv1.Action, len(req.GetActions()))
	for i, a := range req.GetActions() {
		id := a.GetId()
		if id == "" {
			id = ulid.Make().String()
		}
		actions[i] = &actionsyncv1.Action{Type: a.GetType(), Payload: a.GetPayload(), Id: id, ClientId: req.GetClientId(), Meta: a.GetMeta()}
		if raw := a.ProtoReflect().GetUnknown(); len(raw) > 0 {
			actions[i].ProtoReflect().SetUnknown(raw) // payload and meta, still encoded
		}
	}
	var opts []broker.PublishOption
	if req.GetSentEpoch() != "" {
		opts = append(opts, broker.SentAfter(req.GetSentAfterSeq(), req.GetSentEpoch()))
	}
	acks, err := s.broker.Publish(ctx, req.GetChannel(), actions, opts...)
	if err != nil {
		return nil, s.connectError(err)
	}
	res := &actionsyncv1.DispatchResponse{Acks: make([]*actionsyncv1.Ack, len(acks))}
	for i, a := range acks {
		res.Acks[i] = &actionsyncv1.Ack{Id: a.ID, Seq: a.Seq, Duplicate: a.Duplicate}
	}
	return res, nil
}

// History reads a range of a channel's history.
func (s *Service) History(ctx context.Context, req *connect.Request[actionsyncv1.HistoryRequest]) (*connect.Response[actionsyncv1.HistoryResponse], error) {
	limit, verr := s.validate.history(req.Msg)
	if verr != nil {
		return nil, verr
	}
	if err := authorize(ctx, req.Msg.GetChannel(), auth.RightHistory); err != nil {
		return nil, err
	}
	entries, head, err := s.broker.History(ctx, req.Msg.GetChannel(), req.Msg.GetAfterSeq(), limit)
	if err != nil {
		return nil, s.connectError(err)
	}
	// A page stops growing past MaxHistoryBytes (but holds at least one action): the
	// client reads on after the last action it got, as after a page cut by limit.
	size := 0
	for i, e := range entries {
		if size += len(e.Proto); size > s.opts.Limits.MaxHistoryBytes && i > 0 {
			entries = entries[:i]
			break
		}
	}
	res := &actionsyncv1.HistoryResponse{HeadSeq: head, Actions: make([]*actionsyncv1.Action, len(entries))}
	for i, e := range entries {
		if res.Actions[i], err = e.Decode(); err != nil {
			return nil, s.connectError(err)
		}
	}
	return connect.NewResponse(res), nil
}

// Subscribe follows the requested channels: replay, ready, then live actions in batches.
func (s *Service) Subscribe(ctx context.Context, req *connect.Request[actionsyncv1.SubscribeRequest], stream *connect.ServerStream[actionsyncv1.SubscribeResponse]) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.streams.Done()
	s.openStreams.Add(1)
	defer s.openStreams.Add(-1)
	release, cerr := s.openStream(ctx)
	if cerr != nil {
		return cerr
	}
	defer release()
	clientID, cerr := ownClientID(ctx, req.Msg.GetClientId())
	if cerr != nil {
		return cerr
	}
	req.Msg.ClientId = clientID
	if err := s.validate.subscribe(req.Msg, 0); err != nil {
		return err
	}
	if err := s.validate.presence(req.Msg, clientID); err != nil {
		return err
	}
	// Every channel is checked before any is followed: a refused request gets nothing.
	for _, p := range req.Msg.GetPositions() {
		if err := authorize(ctx, p.GetChannel(), auth.RightSubscribe); err != nil {
			return err
		}
	}
	sub, err := s.broker.Subscribe(broker.SubscribeOptions{ClientID: req.Msg.GetClientId(), ExcludeOwn: req.Msg.GetExcludeOwn()})
	if err != nil {
		return s.connectError(err)
	}
	defer sub.Close()
	for _, p := range req.Msg.GetPositions() {
		if err := sub.Add(ctx, p.GetChannel(), broker.Position{AfterSeq: p.GetAfterSeq(), Live: p.GetLive(), Epoch: p.GetEpoch(), Snapshots: req.Msg.GetSnapshots()}); err != nil {
			return s.connectError(err)
		}
	}
	w := s.newWriter(stream.Conn(), subscribeMessages)
	w.sub = sub
	if req.Msg.GetPresence() != nil {
		w.presence = s.presence.Watch()
		defer w.presence.Close()
		defer s.joinPresence(ctx, w.presence, req.Msg, clientID)()
	}
	return w.run(ctx, syncInputs{})
}
