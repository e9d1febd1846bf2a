package service_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/auth"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// bearer is a client interceptor that sends token on every call.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if b != "" {
			req.Header().Set("Authorization", "Bearer "+string(b))
		}
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if b != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		}
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// authEnv returns an environment whose service authenticates with testSecret.
func authEnv(t *testing.T, grace time.Duration) *testEnv {
	t.Helper()
	return authEnvWith(t, service.Options{TokenGrace: grace})
}

// authEnvWith is authEnv with more service options.
func authEnvWith(t *testing.T, opts service.Options) *testEnv {
	t.Helper()
	v, err := auth.NewVerifier(auth.Config{HS256Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	opts.Auth = v
	return newEnv(t, envConfig{svc: opts})
}

// token mints a token for sub valid for ttl with grants.
func token(t *testing.T, sub string, ttl time.Duration, grants ...auth.Grant) string {
	t.Helper()
	tok, err := auth.Mint(auth.Claims{Subject: sub, Expires: time.Now().Add(ttl), Rights: grants}, testSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// as returns a client of e over p that sends tok.
func (e *testEnv) as(p protocol, tok string) actionsyncv1connect.SyncServiceClient {
	opts := append([]connect.ClientOption{connect.WithInterceptors(bearer(tok))}, p.opts...)
	return actionsyncv1connect.NewSyncServiceClient(e.h2c, e.srv.URL, opts...)
}

var (
	readWrite = auth.Grant{Channels: []string{"board:*"}, Allow: []auth.Right{auth.RightSubscribe, auth.RightPublish, auth.RightHistory}}
	readOnly  = auth.Grant{Channels: []string{"board:*"}, Allow: []auth.Right{auth.RightSubscribe, auth.RightHistory}}
)

func TestService_Auth_unauthenticated(t *testing.T) {
	t.Parallel()
	e := authEnv(t, 0)
	expired := token(t, "alice", -time.Minute, readWrite)
	for _, p := range protocols {
		for name, tok := range map[string]string{"missing": "", "garbage": "x.y.z", "expired": expired} {
			c := e.as(p, tok)
			_, err := c.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", Actions: acts(1, "a")}))
			checkErr(t, err, connect.CodeUnauthenticated, map[string]string{"missing": "missing bearer token", "garbage": "malformed", "expired": "token expired at"}[name])
			if msg := connectMessage(err); strings.HasSuffix(msg, "unauthenticated") {
				t.Errorf("%s %s: message %q says the code again", p.name, name, msg)
			}
			_, err = c.History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: "board:1"}))
			checkErr(t, err, connect.CodeUnauthenticated, "")
			_, err = c.GetSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetSnapshotRequest{Channel: "board:1"}))
			checkErr(t, err, connect.CodeUnauthenticated, "")
			s, err := c.Subscribe(rpcCtx(t), connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1"}}}))
			if err == nil {
				for s.Receive() {
					t.Errorf("%s %s: Subscribe sent %v", p.name, name, s.Msg())
				}
				err = s.Err()
			}
			checkErr(t, err, connect.CodeUnauthenticated, "")
		}
	}
	if n := e.broker.Channels(); n != 0 {
		t.Errorf("unauthenticated requests created %d channels", n)
	}
}

func TestService_Auth_rights(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
		e := authEnv(t, 0)
		writer := e.as(c.proto, token(t, "alice", time.Hour, readWrite))
		reader := e.as(c.proto, token(t, "bob", time.Hour, readOnly))
		typed := e.as(c.proto, token(t, "carol", time.Hour, auth.Grant{Channels: []string{"board:1"}, Allow: []auth.Right{auth.RightPublish}, Types: []string{"ADD_TASK"}}))

		if _, err := writer.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", Actions: acts(1, "w")})); err != nil {
			t.Fatalf("writer: %v", err)
		}
		_, err := reader.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", Actions: acts(1, "r")}))
		checkErr(t, err, connect.CodePermissionDenied, `channel "board:1": the token of "bob" does not allow publish there`)
		if msg := connectMessage(err); msg != `channel "board:1": the token of "bob" does not allow publish there` {
			t.Errorf("refused dispatch: message %q; want the reason alone (the code says %q)", msg, "permission denied")
		}
		_, err = reader.PutSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.PutSnapshotRequest{Channel: "board:1", Seq: 1, Epoch: "e"}))
		checkErr(t, err, connect.CodePermissionDenied, "does not allow publish")
		_, err = writer.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "room:1", Actions: acts(1, "x")}))
		checkErr(t, err, connect.CodePermissionDenied, `channel "room:1": the token of "alice" grants no right on it`)
		_, err = typed.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", Actions: []*actionsyncv1.Action{act("ADD_TASK", "t1", nil), act("DELETE_BOARD", "t2", nil)}}))
		checkErr(t, err, connect.CodePermissionDenied, `type "DELETE_BOARD"`)
		if _, err := typed.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", Actions: []*actionsyncv1.Action{act("ADD_TASK", "t1", nil)}})); err != nil {
			t.Errorf("typed publisher, allowed type: %v", err)
		}
		_, err = typed.History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: "board:1"}))
		checkErr(t, err, connect.CodePermissionDenied, "does not allow history")
		if h, err := reader.History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: "board:1"})); err != nil || len(h.Msg.GetActions()) != 2 {
			t.Errorf("reader History: %v, %v", h, err)
		}
		// The refused requests created no channel, and applied nothing.
		if n := e.broker.Channels(); n != 1 {
			t.Errorf("channels held: %d, want 1 (board:1)", n)
		}
	})
}

// TestService_Auth_clientID: the token binds the client id that actions are stamped
// with; naming another client's id is refused.
func TestService_Auth_clientID(t *testing.T) {
	t.Parallel()
	e := authEnv(t, 0)
	alice := e.as(protocols[0], token(t, "alice", time.Hour, readWrite))
	for _, tc := range []struct{ requested, stamped string }{{"", "alice"}, {"alice", "alice"}, {"alice:phone", "alice:phone"}} {
		res, err := alice.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", ClientId: tc.requested, Actions: acts(1, "c"+tc.requested)}))
		if err != nil {
			t.Fatalf("client_id %q: %v", tc.requested, err)
		}
		h, err := alice.History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: "board:1", AfterSeq: res.Msg.GetAcks()[0].GetSeq() - 1}))
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Msg.GetActions()[0].GetClientId(); got != tc.stamped {
			t.Errorf("client_id %q: stamped %q, want %q", tc.requested, got, tc.stamped)
		}
	}
	_, err := alice.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", ClientId: "bob", Actions: acts(1, "b")}))
	checkErr(t, err, connect.CodePermissionDenied, `client_id "bob" is not the token's`)
	s, err := alice.Subscribe(rpcCtx(t), connect.NewRequest(&actionsyncv1.SubscribeRequest{ClientId: "bob", ExcludeOwn: true, Positions: []*actionsyncv1.Position{{Channel: "board:1"}}}))
	if err == nil {
		for s.Receive() {
		}
		err = s.Err()
	}
	checkErr(t, err, connect.CodePermissionDenied, `client_id "bob" is not the token's`)
}

// TestService_Auth_syncForbiddenChannel: a Sync stream that asks for a channel its
// token has no right on ends with PERMISSION_DENIED, and no byte of that channel (or of
// the others of the same request) reached it.
func TestService_Auth_syncForbiddenChannel(t *testing.T) {
	t.Parallel()
	e := authEnv(t, 0)
	admin := e.as(protocols[0], token(t, "admin", time.Hour, auth.Grant{Channels: []string{"*"}, Allow: []auth.Right{auth.RightPublish}}))
	for _, ch := range []string{"board:1", "secret:1"} {
		if _, err := admin.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: ch, Actions: []*actionsyncv1.Action{act("T", "in-"+ch, ch+" payload")}})); err != nil {
			t.Fatal(err)
		}
	}
	bob := e.as(protocols[0], token(t, "bob", time.Hour, readOnly))
	s := openSync(t, bob)
	s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1"}}})
	evs := s.take(t, 2)
	if evs[0].Action.GetId() != "in-board:1" || evs[1].Ready == nil {
		t.Fatalf("board:1: got %+v, want its action and ready", evs)
	}
	s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:2"}, {Channel: "secret:1"}}})
	rest, err := s.end(t)
	checkErr(t, err, connect.CodePermissionDenied, `channel "secret:1": the token of "bob" grants no right on it`)
	for _, ev := range rest {
		if !ev.Heartbeat {
			t.Errorf("after the forbidden subscribe: got %+v, want nothing", ev)
		}
	}
}

// TestService_Auth_streamExpiry: a stream ends with UNAUTHENTICATED once its token has
// expired (plus the grace), and the client resumes with a fresh token with no gap.
func TestService_Auth_streamExpiry(t *testing.T) {
	t.Parallel()
	const grace = 50 * time.Millisecond
	e := authEnv(t, grace)
	writer := e.as(protocols[0], token(t, "alice", time.Hour, readWrite))
	e2 := func(id string) {
		if _, err := writer.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", Actions: acts(1, id)})); err != nil {
			t.Fatal(err)
		}
	}
	e2("before")
	// exp has second precision: a token valid for 1-2 s.
	short := e.as(protocols[0], token(t, "bob", 1500*time.Millisecond, readOnly))
	start := time.Now()
	r := subscribe(t, short, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1"}}})
	evs := r.take(t, 2)
	if evs[0].Action.GetSeq() != 1 || evs[1].Ready == nil {
		t.Fatalf("got %+v, want seq 1 and ready", evs)
	}
	rest, err := r.end(t)
	checkErr(t, err, connect.CodeUnauthenticated, "token expired at")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stream outlived its token by too much: ended after %v", d)
	}
	last := uint64(1)
	for _, ev := range rest {
		if ev.Action != nil {
			last = ev.Action.GetSeq()
		}
	}
	e2("during")
	fresh := e.as(protocols[0], token(t, "bob", time.Hour, readOnly))
	r2 := subscribe(t, fresh, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1", AfterSeq: last}}})
	if ev := r2.nextNonBeat(t); ev.Action.GetSeq() != last+1 {
		t.Errorf("resume after %d: got %+v, want seq %d", last, ev, last+1)
	}
}

// TestService_Quotas: an identity past its dispatch rate gets RESOURCE_EXHAUSTED with a
// retry hint while another identity is served as usual; an identity at its stream limit
// cannot open one more until it closes one.
func TestService_Quotas(t *testing.T) {
	t.Parallel()
	e := authEnvWith(t, service.Options{Quotas: service.Quotas{DispatchRate: 1, DispatchBurst: 3, MaxStreams: 2}})
	alice := e.as(protocols[0], token(t, "alice", time.Hour, readWrite))
	bob := e.as(protocols[0], token(t, "bob", time.Hour, readWrite))
	dispatch := func(c actionsyncv1connect.SyncServiceClient, id string) error {
		_, err := c.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", Actions: acts(1, id)}))
		return err
	}
	for i := range 3 {
		if err := dispatch(alice, fmt.Sprint("a", i)); err != nil {
			t.Fatalf("dispatch %d of a burst of 3: %v", i+1, err)
		}
	}
	err := dispatch(alice, "a3")
	checkErr(t, err, connect.CodeResourceExhausted, `dispatch rate of "alice" above 1 per second (burst 3): retry in`)
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Meta().Get("Retry-After") == "" {
		t.Errorf("no Retry-After in %v", err)
	} else if s, _ := strconv.ParseFloat(ce.Meta().Get("Retry-After"), 64); s < 0.001 || s > 1 {
		t.Errorf("Retry-After %q, want 0.001..1 seconds", ce.Meta().Get("Retry-After"))
	}
	if err := dispatch(bob, "b0"); err != nil {
		t.Errorf("bob while alice is limited: %v", err)
	}

	r1 := subscribe(t, alice, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1", Live: true}}})
	r1.nextNonBeat(t)
	r2 := subscribe(t, alice, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1", Live: true}}})
	r2.nextNonBeat(t)
	r3 := subscribe(t, alice, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1", Live: true}}})
	r3.wantEnd(t, connect.CodeResourceExhausted, `"alice" has 2 streams open, limit 2`)
	s := openSync(t, alice)
	s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1", Live: true}}})
	s.wantEnd(t, connect.CodeResourceExhausted, "limit 2")
	r1.cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r4 := subscribe(t, alice, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1", Live: true}}})
		evs, err := r4.s.recv(t)
		if err == nil && len(evs) > 0 && evs[0].Ready != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stream after closing one: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connectMessage returns the message of a Connect error without its code.
func connectMessage(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	return ce.Message()
}
