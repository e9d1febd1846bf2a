package service

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/actionsync/actionsync/auth"
	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/presence"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// syncResultBuffer is how many dispatch answers may wait for a busy writer before the
// reader stops reading the stream.
const syncResultBuffer = 16

// Sync is Subscribe and Dispatch on one bidirectional stream. The handler goroutine is
// the stream's only writer; a reader goroutine applies subscribe and dispatch requests in
// order and hands the answers to the writer.
func (s *Service) Sync(ctx context.Context, stream *connect.BidiStream[actionsyncv1.SyncRequest, actionsyncv1.SyncResponse]) error {
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
	if err := s.enter(); err != nil { // the reader is a stream goroutine too
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // releases the reader
	newSub := make(chan broker.Subscription, 1)
	results := make(chan proto.Message, syncResultBuffer)
	errc := make(chan error, 1)
	inflight := new(atomic.Int32)
	watcher := s.presence.Watch() // empty until a subscribe asks for presence
	defer watcher.Close()
	go func() {
		defer s.streams.Done()
		s.syncRead(ctx, stream, syncOutputs{newSub: newSub, results: results, errc: errc, inflight: inflight, presence: watcher})
	}()
	w := s.newWriter(stream.Conn(), syncMessages)
	w.presence = watcher
	return w.run(ctx, syncInputs{newSub: newSub, results: results, errc: errc, inflight: inflight})
}

// syncOutputs are where a Sync reader hands its work to the stream's writer.
type syncOutputs struct {
	newSub   chan<- broker.Subscription
	results  chan<- proto.Message
	errc     chan<- error
	inflight *atomic.Int32
	presence *presence.Watcher
}

// syncRead reads a Sync stream until it fails or ctx ends. It owns the stream's
// subscription and closes it when it returns; a client that half-closes keeps receiving
// until it cancels. A dispatch without a client_id takes the one of the stream's first
// subscribe.
func (s *Service) syncRead(ctx context.Context, stream *connect.BidiStream[actionsyncv1.SyncRequest, actionsyncv1.SyncResponse], out syncOutputs) {
	var sub broker.Subscription
	var leaves []func() // presence of the stream's channels
	defer func() {
		for _, leave := range leaves {
			leave()
		}
		if sub != nil {
			sub.Close()
		}
	}()
	fail := func(err error) {
		select {
		case out.errc <- err:
		default:
		}
	}
	following, clientID := 0, ""
	for {
		req, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			<-ctx.Done()
			return
		}
		if err != nil {
			fail(err)
			return
		}
		switch r := req.GetRequest().(type) {
		case *actionsyncv1.SyncRequest_Subscribe:
			if sub == nil {
				id, err := ownClientID(ctx, r.Subscribe.GetClientId())
				if err != nil {
					fail(err)
					return
				}
				r.Subscribe.ClientId = id
			}
			if err := s.validate.subscribe(r.Subscribe, following); err != nil {
				fail(err)
				return
			}
			presenceID := clientID
			if sub == nil {
				presenceID = r.Subscribe.GetClientId()
			}
			if err := s.validate.presence(r.Subscribe, presenceID); err != nil {
				fail(err)
				return
			}
			// Every channel is checked before any is followed: a refused request gets
			// nothing of any of its channels.
			for _, p := range r.Subscribe.GetPositions() {
				if err := authorize(ctx, p.GetChannel(), auth.RightSubscribe); err != nil {
					fail(err)
					return
				}
			}
			if sub == nil {
				clientID = r.Subscribe.GetClientId()
				sub, err = s.broker.Subscribe(broker.SubscribeOptions{ClientID: clientID, ExcludeOwn: r.Subscribe.GetExcludeOwn()})
				if err != nil {
					fail(s.connectError(err))
					return
				}
				out.newSub <- sub // buffered for exactly this one send
			}
			for _, p := range r.Subscribe.GetPositions() {
				if err := sub.Add(ctx, p.GetChannel(), broker.Position{AfterSeq: p.GetAfterSeq(), Live: p.GetLive(), Epoch: p.GetEpoch(), Snapshots: r.Subscribe.GetSnapshots()}); err != nil {
					fail(s.connectError(err))
					return
				}
			}
			following += len(r.Subscribe.GetPositions())
			if r.Subscribe.GetPresence() != nil {
				leaves = append(leaves, s.joinPresence(ctx, out.presence, r.Subscribe, clientID))
			}
		case *actionsyncv1.SyncRequest_Dispatch:
			if r.Dispatch.GetClientId() == "" {
				r.Dispatch.ClientId = clientID
			}
			if !s.syncDispatch(ctx, r.Dispatch, out) {
				return
			}
		default:
			fail(invalid("request: set subscribe or dispatch"))
			return
		}
	}
}

// syncDispatch applies one dispatch of a Sync stream and queues its answer; it reports
// false if ctx ended first. Once the service is stopping it applies nothing and answers
// Unavailable: the writer waits only for dispatches counted in inflight before this check.
func (s *Service) syncDispatch(ctx context.Context, req *actionsyncv1.DispatchRequest, out syncOutputs) bool {
	out.inflight.Add(1)
	defer out.inflight.Add(-1)
	var msg proto.Message
	select {
	case <-s.stopping:
		msg = &actionsyncv1.SyncResponse{DispatchError: &actionsyncv1.DispatchError{
			Code: connect.CodeUnavailable.String(), Message: errShuttingDown.Error()}}
	default:
		if res, err := s.dispatch(ctx, req); err != nil {
			msg = &actionsyncv1.SyncResponse{DispatchError: &actionsyncv1.DispatchError{Code: err.Code().String(), Message: err.Message()}}
		} else {
			msg = &actionsyncv1.SyncResponse{Dispatched: res}
		}
	}
	select {
	case out.results <- msg:
		return true
	case <-ctx.Done():
		return false
	}
}
