package service

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/actionsync/actionsync/broker"
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
	if err := s.enter(); err != nil { // the reader is a stream goroutine too
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // releases the reader
	newSub := make(chan broker.Subscription, 1)
	results := make(chan proto.Message, syncResultBuffer)
	errc := make(chan error, 1)
	go func() {
		defer s.streams.Done()
		s.syncRead(ctx, stream, newSub, results, errc)
	}()
	w := s.newWriter(stream.Conn(), syncMessages)
	return w.run(ctx, syncInputs{newSub: newSub, results: results, errc: errc})
}

// syncRead reads a Sync stream until it fails or ctx ends. It owns the stream's
// subscription and closes it when it returns; a client that half-closes keeps receiving
// until it cancels.
func (s *Service) syncRead(ctx context.Context, stream *connect.BidiStream[actionsyncv1.SyncRequest, actionsyncv1.SyncResponse],
	newSub chan<- broker.Subscription, results chan<- proto.Message, errc chan<- error,
) {
	var sub broker.Subscription
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	following := 0
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
			if err := s.validate.subscribe(r.Subscribe, following); err != nil {
				fail(err)
				return
			}
			if sub == nil {
				sub, err = s.broker.Subscribe(broker.SubscribeOptions{ClientID: r.Subscribe.GetClientId(), ExcludeOwn: r.Subscribe.GetExcludeOwn()})
				if err != nil {
					fail(s.connectError(err))
					return
				}
				newSub <- sub // buffered for exactly this one send
			}
			for _, p := range r.Subscribe.GetPositions() {
				if err := sub.Add(ctx, p.GetChannel(), broker.Position{AfterSeq: p.GetAfterSeq(), Live: p.GetLive()}); err != nil {
					fail(s.connectError(err))
					return
				}
			}
			following += len(r.Subscribe.GetPositions())
		case *actionsyncv1.SyncRequest_Dispatch:
			var msg proto.Message
			if res, err := s.dispatch(ctx, r.Dispatch); err != nil {
				msg = &actionsyncv1.SyncResponse{DispatchError: &actionsyncv1.DispatchError{Code: err.Code().String(), Message: err.Message()}}
			} else {
				msg = &actionsyncv1.SyncResponse{Dispatched: res}
			}
			select {
			case results <- msg:
			case <-ctx.Done():
				return
			}
		default:
			fail(invalid("request: set subscribe or dispatch"))
			return
		}
	}
}
