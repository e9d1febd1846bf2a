package service_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

// answersAndActions splits Sync events into dispatch answers and actions, each in
// stream order; other events fail the test.
func answersAndActions(t *testing.T, evs []event) (answers, actions []event) {
	t.Helper()
	for _, ev := range evs {
		switch {
		case ev.Dispatched != nil || ev.DispatchError != nil:
			answers = append(answers, ev)
		case ev.Action != nil:
			actions = append(actions, ev)
		default:
			t.Fatalf("unexpected event %+v", ev)
		}
	}
	return answers, actions
}

func TestService_Sync(t *testing.T) {
	t.Parallel()
	allow := mustAllowList(t, service.AllowRule{Channel: "locked", Types: []string{}})
	forEachSyncClient(t, envConfig{svc: service.Options{AllowList: allow}}, func(t *testing.T, e *testEnv, open func(*testing.T) *syncer) {
		e.dispatch(t, "b", "other", acts(2, "b")...)
		s := open(t)

		s.subscribe(t, &actionsyncv1.SubscribeRequest{ClientId: "mobile", Positions: []*actionsyncv1.Position{{Channel: "a"}}})
		if diff := diffEvents([]event{readyEv("a", 0)}, s.take(t, 1)); diff != "" {
			t.Fatalf("subscribe (-want +got):\n%s", diff)
		}

		// Two dispatches: answers in request order, the sender's actions echoed.
		s.dispatch(t, &actionsyncv1.DispatchRequest{Channel: "a", ClientId: "mobile", Actions: []*actionsyncv1.Action{act("X", "x-1", 1.0), act("Y", "", 2.0)}})
		s.dispatch(t, &actionsyncv1.DispatchRequest{Channel: "a", ClientId: "mobile", Actions: []*actionsyncv1.Action{act("Z", "z-1", nil)}})
		answers, actions := answersAndActions(t, s.take(t, 5))
		h := e.history(t, "a")
		wantAnswers := []event{
			{Dispatched: &actionsyncv1.DispatchResponse{Acks: []*actionsyncv1.Ack{{Id: "x-1", Seq: 1}, {Id: h[1].GetId(), Seq: 2}}}},
			{Dispatched: &actionsyncv1.DispatchResponse{Acks: []*actionsyncv1.Ack{{Id: "z-1", Seq: 3}}}},
		}
		if diff := diffEvents(wantAnswers, answers); diff != "" {
			t.Errorf("dispatch answers (-want +got):\n%s", diff)
		}
		if diff := diffEvents(actionEvents(h...), actions); diff != "" {
			t.Errorf("echoed actions (-want +got):\n%s", diff)
		}
		for i, ev := range actions {
			checkServerFields(t, ev.Action, "a", uint64(i+1), "mobile")
		}

		// A second subscribe adds a channel, with its replay.
		s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "b"}}})
		if diff := diffEvents(append(actionEvents(e.history(t, "b")...), readyEv("b", 2)), s.take(t, 3)); diff != "" {
			t.Fatalf("second subscribe (-want +got):\n%s", diff)
		}

		// A refused dispatch is answered in order and the stream goes on.
		s.dispatch(t, &actionsyncv1.DispatchRequest{Channel: "locked", Actions: []*actionsyncv1.Action{act("ANY", "", nil)}})
		s.dispatch(t, &actionsyncv1.DispatchRequest{Channel: "b", Actions: []*actionsyncv1.Action{act("", "", nil)}})
		s.dispatch(t, &actionsyncv1.DispatchRequest{Channel: "b", ClientId: "mobile", Actions: []*actionsyncv1.Action{act("W", "w-1", nil)}})
		answers, actions = answersAndActions(t, s.take(t, 4))
		if len(answers) != 3 {
			t.Fatalf("got %d answers, want 3: %+v", len(answers), answers)
		}
		for i, want := range []struct{ code, frag string }{
			{"permission_denied", `actions[0].type: "ANY" is not allowed on channel "locked"`},
			{"invalid_argument", "actions[0].type: required"},
		} {
			de := answers[i].DispatchError
			if de.GetCode() != want.code || !strings.Contains(de.GetMessage(), want.frag) {
				t.Errorf("answer %d: got %+v, want dispatch_error %s %q", i, answers[i], want.code, want.frag)
			}
		}
		if diff := diffEvents([]event{{Dispatched: &actionsyncv1.DispatchResponse{Acks: []*actionsyncv1.Ack{{Id: "w-1", Seq: 3}}}}}, answers[2:]); diff != "" {
			t.Errorf("answer after the refusals (-want +got):\n%s", diff)
		}
		if diff := diffEvents(actionEvents(e.historyAfter(t, "b", 2)...), actions); diff != "" {
			t.Errorf("actions after the refusals (-want +got):\n%s", diff)
		}
		checkAppliedNothing(t, e, "locked", 0)

		// A bad subscribe ends the stream.
		s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "bad channel"}}})
		s.wantEnd(t, connect.CodeInvalidArgument, "positions[0].channel")
		e.checkServes(t)
	})
}

func TestService_Sync_badRequest(t *testing.T) {
	t.Parallel()
	forEachSyncClient(t, envConfig{}, func(t *testing.T, e *testEnv, open func(*testing.T) *syncer) {
		t.Run("first_subscribe", func(t *testing.T) {
			s := open(t)
			s.subscribe(t, &actionsyncv1.SubscribeRequest{ExcludeOwn: true, Positions: []*actionsyncv1.Position{{Channel: "a"}}})
			s.wantEnd(t, connect.CodeInvalidArgument, "exclude_own: requires client_id")
		})
		t.Run("empty_request", func(t *testing.T) {
			s := open(t)
			s.send(t, &actionsyncv1.SyncRequest{})
			s.wantEnd(t, connect.CodeInvalidArgument, "request: set subscribe or dispatch")
		})
		// The stream already follows "a" when the second subscribe repeats it: the broker
		// refuses it, and the stream must end with that error, not another. Repeated
		// because the two goroutines of a Sync stream race.
		t.Run("channel_already_followed", func(t *testing.T) {
			for range 20 {
				s := open(t)
				s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "a"}}})
				s.take(t, 1) // ready
				s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "new"}, {Channel: "a"}}})
				evs, err := s.end(t)
				checkErr(t, err, connect.CodeInvalidArgument, "already subscribed")
				for _, ev := range evs {
					if ev.Ready.GetChannel() != "new" {
						t.Fatalf("unexpected event %+v", ev)
					}
				}
			}
		})
		e.checkServes(t)
	})
}

func TestService_Sync_dispatchOnly(t *testing.T) {
	t.Parallel()
	forEachSyncClient(t, envConfig{}, func(t *testing.T, e *testEnv, open func(*testing.T) *syncer) {
		s := open(t)
		s.dispatch(t, &actionsyncv1.DispatchRequest{Channel: "a", Actions: acts(2, "d")})
		want := []event{{Dispatched: &actionsyncv1.DispatchResponse{Acks: []*actionsyncv1.Ack{{Id: "d-0", Seq: 1}, {Id: "d-1", Seq: 2}}}}}
		if diff := diffEvents(want, s.take(t, 1)); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
		if got := e.head(t, "a"); got != 2 {
			t.Fatalf("head %d, want 2", got)
		}
	})
}

// A client that half-closes its side of Sync keeps receiving live actions.
func TestService_Sync_halfClose(t *testing.T) {
	t.Parallel()
	forEachSyncClient(t, envConfig{}, func(t *testing.T, e *testEnv, open func(*testing.T) *syncer) {
		s := open(t)
		s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "a"}}})
		s.take(t, 1) // ready
		if err := s.s.closeSend(); err != nil {
			t.Fatalf("close send: %v", err)
		}
		e.dispatch(t, "a", "w", acts(1, "late")...)
		if diff := diffEvents(actionEvents(e.history(t, "a")...), s.take(t, 1)); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
}

// Unary calls from grpc-go, with the protoc-gen-go messages and no generated gRPC stubs.
func TestService_grpcGoUnary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	conn := e.grpcConn(t)
	res := new(actionsyncv1.DispatchResponse)
	req := &actionsyncv1.DispatchRequest{Channel: "a", ClientId: "phone", Actions: acts(2, "g")}
	if err := conn.Invoke(rpcCtx(t), "/actionsync.v1.SyncService/Dispatch", req, res); err != nil {
		t.Fatalf("Invoke Dispatch: %v", err)
	}
	want := &actionsyncv1.DispatchResponse{Acks: []*actionsyncv1.Ack{{Id: "g-0", Seq: 1}, {Id: "g-1", Seq: 2}}}
	if diff := cmp.Diff(want, res, protocmp.Transform()); diff != "" {
		t.Errorf("Dispatch (-want +got):\n%s", diff)
	}

	hist := new(actionsyncv1.HistoryResponse)
	if err := conn.Invoke(rpcCtx(t), "/actionsync.v1.SyncService/History", &actionsyncv1.HistoryRequest{Channel: "a", AfterSeq: 1}, hist); err != nil {
		t.Fatalf("Invoke History: %v", err)
	}
	if diff := cmp.Diff(e.historyAfter(t, "a", 1), hist.GetActions(), protocmp.Transform()); diff != "" {
		t.Errorf("History (-want +got):\n%s", diff)
	}
	checkServerFields(t, hist.GetActions()[0], "a", 2, "phone")

	err := conn.Invoke(rpcCtx(t), "/actionsync.v1.SyncService/Dispatch", &actionsyncv1.DispatchRequest{Channel: "a"}, res)
	if got := status.Code(err); got != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "actions: at least 1 action required") {
		t.Errorf("empty Dispatch: got %v, want InvalidArgument naming actions", err)
	}
	checkAppliedNothing(t, e, "a", 2)
}

// Sync needs HTTP/2: over HTTP/1.1 it is refused before any message.
func TestService_Sync_http1(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	for _, p := range protocols {
		s := openSync(t, e.client(p, false))
		_ = s.s.send(&actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Subscribe{Subscribe: &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "a"}}}}})
		_, err := s.end(t)
		if err == nil || !strings.Contains(err.Error(), "505") && !strings.Contains(err.Error(), "HTTP/2") {
			t.Errorf("%s: Sync over HTTP/1.1: got %v, want a 505 HTTP Version Not Supported", p.name, err)
		}
	}
	e.checkServes(t)
}

// A dispatch on Sync without a client_id is stamped with the stream's client id (from its
// first subscribe), so exclude_own filters it like any other own action.
func TestService_Sync_dispatchTakesStreamClientID(t *testing.T) {
	t.Parallel()
	forEachSyncClient(t, envConfig{}, func(t *testing.T, e *testEnv, open func(*testing.T) *syncer) {
		s := open(t)
		s.subscribe(t, &actionsyncv1.SubscribeRequest{ClientId: "phone", ExcludeOwn: true, Positions: []*actionsyncv1.Position{{Channel: "a"}}})
		s.take(t, 1) // ready
		s.dispatch(t, &actionsyncv1.DispatchRequest{Channel: "a", Actions: acts(1, "own")})
		s.dispatch(t, &actionsyncv1.DispatchRequest{Channel: "a", ClientId: "tablet", Actions: acts(1, "other")})
		answers, actions := answersAndActions(t, s.take(t, 3))
		if len(answers) != 2 {
			t.Fatalf("got %d answers, want 2", len(answers))
		}
		h := e.history(t, "a")
		if got := h[0].GetClientId(); got != "phone" {
			t.Errorf("dispatch without client_id stamped %q, want the stream's %q", got, "phone")
		}
		if diff := diffEvents(actionEvents(h[1]), actions); diff != "" {
			t.Errorf("exclude_own (-want +got):\n%s", diff)
		}
	})
}

// twoRequestsCodec is connect's binary codec, except that it appends a dispatch to
// every SyncRequest it marshals: a request with both oneof members set, as a buggy or
// hostile client can send.
type twoRequestsCodec struct{}

func (twoRequestsCodec) Name() string { return "proto" }

func (twoRequestsCodec) Marshal(m any) ([]byte, error) {
	b, err := proto.Marshal(m.(proto.Message))
	if err != nil {
		return nil, err
	}
	if _, ok := m.(*actionsyncv1.SyncRequest); ok {
		extra, err := proto.Marshal(&actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Dispatch{Dispatch: &actionsyncv1.DispatchRequest{
			Channel: "a", Actions: []*actionsyncv1.Action{{Type: "SNEAKED_IN"}}}}})
		if err != nil {
			return nil, err
		}
		b = append(b, extra...)
	}
	return b, nil
}

func (twoRequestsCodec) Unmarshal(b []byte, m any) error {
	return proto.Unmarshal(b, m.(proto.Message))
}

// TestService_Sync_bothRequests: a binary Sync request with both subscribe and dispatch
// set is refused with INVALID_ARGUMENT, and its dispatch is not applied.
func TestService_Sync_bothRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	for _, p := range []protocol{protocols[0], protocols[2]} { // Connect and gRPC, binary
		c := actionsyncv1connect.NewSyncServiceClient(e.h2c, e.srv.URL, append([]connect.ClientOption{connect.WithCodec(twoRequestsCodec{})}, p.opts...)...)
		s := openSync(t, c)
		s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "a"}}})
		s.wantEnd(t, connect.CodeInvalidArgument, "set exactly one of subscribe and dispatch")
	}
	if h := e.history(t, "a"); len(h) != 0 {
		t.Errorf("the sneaked-in dispatch was applied: %v", h)
	}
}
