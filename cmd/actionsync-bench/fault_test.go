package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// faultyServer relays dispatched actions to its subscribers like actionsync, except that
// it delivers seq dupSeq twice and never delivers seq skipSeq (0: none).
type faultyServer struct {
	actionsyncv1connect.UnimplementedSyncServiceHandler
	dupSeq, skipSeq uint64

	mu   sync.Mutex
	seq  uint64
	subs []chan *actionsyncv1.Action
}

func (f *faultyServer) Dispatch(_ context.Context, req *connect.Request[actionsyncv1.DispatchRequest]) (*connect.Response[actionsyncv1.DispatchResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := &actionsyncv1.DispatchResponse{}
	for _, a := range req.Msg.GetActions() {
		f.seq++
		a.Seq = f.seq
		for _, s := range f.subs {
			select {
			case s <- a:
			default:
				return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("slow test subscriber"))
			}
		}
		res.Acks = append(res.Acks, &actionsyncv1.Ack{Id: a.GetId(), Seq: a.Seq})
	}
	return connect.NewResponse(res), nil
}

func (f *faultyServer) Subscribe(ctx context.Context, req *connect.Request[actionsyncv1.SubscribeRequest], stream *connect.ServerStream[actionsyncv1.SubscribeResponse]) error {
	ch := make(chan *actionsyncv1.Action, 1<<14)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	head := f.seq
	f.mu.Unlock()
	channel := req.Msg.GetPositions()[0].GetChannel()
	if err := stream.Send(&actionsyncv1.SubscribeResponse{Ready: &actionsyncv1.Ready{Channel: channel, HeadSeq: head}}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case a := <-ch:
			n := 1
			switch a.GetSeq() {
			case f.skipSeq:
				n = 0
			case f.dupSeq:
				n = 2
			}
			for range n {
				if err := stream.Send(&actionsyncv1.SubscribeResponse{Actions: []*actionsyncv1.Action{a}}); err != nil {
					return err
				}
			}
		}
	}
}

func TestRun_catchesFaultyDelivery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		dupSeq, skipSeq uint64
		mode            string
		want            string
	}{
		{"duplicate_lat", 3, 0, "lat", `"dups":2`},
		{"gap_lat", 0, 3, "lat", `"gaps":2`},
		{"duplicate_tput", 3, 0, "tput", `"dups":2`},
		{"gap_tput", 0, 3, "tput", `"gaps":2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mux := http.NewServeMux()
			mux.Handle(actionsyncv1connect.NewSyncServiceHandler(&faultyServer{dupSeq: tt.dupSeq, skipSeq: tt.skipSeq}))
			srv := httptest.NewUnstartedServer(mux)
			var p http.Protocols
			p.SetHTTP1(true)
			p.SetUnencryptedHTTP2(true)
			srv.Config.Protocols = &p
			srv.Start()
			t.Cleanup(srv.Close)

			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{"--url", srv.URL, "--mode", tt.mode, "--n", "2", "--duration", "200ms", "--warmup", "50ms"}, &stdout, &stderr)
			if !errors.Is(err, errViolation) {
				t.Fatalf("got %v, want a delivery check failure\nstderr:\n%s", err, stderr.String())
			}
			if code := exitCode(err, &bytes.Buffer{}); code != 1 {
				t.Errorf("exit code: got %d, want 1", code)
			}
			if line := stdout.String(); !strings.Contains(line, tt.want) || strings.Contains(line, `"violations":0`) {
				t.Errorf("got %s, want the result line with %s and violations", line, tt.want)
			}
		})
	}
}
