package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

// rpcTimeout bounds every RPC and every stream of the tests, so a missing message fails
// the test instead of hanging it.
const rpcTimeout = 10 * time.Second

// syncMethod is the full gRPC method name of the bidi Sync RPC.
const syncMethod = "/" + actionsyncv1connect.SyncServiceName + "/Sync"

// envConfig configures a testEnv; zero values mean the defaults.
type envConfig struct {
	svc service.Options
	mem memory.Options
}

// testEnv is one service over one in-memory broker, served by an httptest server that
// speaks HTTP/1.1 and h2c, with an h2c and an HTTP/1.1 client.
type testEnv struct {
	svc    *service.Service
	broker *memory.Broker
	srv    *httptest.Server
	h2c    *http.Client
	h1     *http.Client
}

func newEnv(t testing.TB, cfg envConfig) *testEnv {
	t.Helper()
	b := memory.New(cfg.mem)
	if cfg.svc.Logger == nil {
		cfg.svc.Logger = slog.New(slog.DiscardHandler)
	}
	svc, err := service.New(b, cfg.svc)
	if err != nil {
		t.Fatalf("service.New: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle(svc.Handler())
	mux.Handle(svc.Admin(service.AdminConfig{Version: "test", Broker: "memory"}).Handler()) // the server serves it on its own listener
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	e := &testEnv{svc: svc, broker: b, srv: srv, h2c: newH2CClient(nil), h1: newH1Client()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("cleanup: Shutdown: %v", err)
		}
		srv.Close()
		e.h2c.CloseIdleConnections()
		e.h1.CloseIdleConnections()
		_ = b.Close()
	})
	return e
}

// newH2CClient returns an http.Client that speaks HTTP/2 without TLS (prior knowledge).
func newH2CClient(h2 *http.HTTP2Config) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p, HTTP2: h2}}
}

// newH1Client returns an http.Client that speaks HTTP/1.1 only.
func newH1Client() *http.Client {
	var p http.Protocols
	p.SetHTTP1(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// protocol is one wire protocol a connect-go client can speak.
type protocol struct {
	name   string
	opts   []connect.ClientOption
	binary bool // protobuf binary encoding (JSON cannot carry NaN, for example)
}

var protocols = []protocol{
	{name: "connect_proto", binary: true},
	{name: "connect_json", opts: []connect.ClientOption{connect.WithProtoJSON()}},
	{name: "grpc", opts: []connect.ClientOption{connect.WithGRPC()}, binary: true},
	{name: "grpc_web", opts: []connect.ClientOption{connect.WithGRPCWeb()}, binary: true},
}

// clientCase is a fresh environment and a client of it over one protocol and transport.
type clientCase struct {
	env    *testEnv
	client actionsyncv1connect.SyncServiceClient
	proto  protocol
	h2     bool
}

func (e *testEnv) client(p protocol, h2 bool) actionsyncv1connect.SyncServiceClient {
	hc := e.h1
	if h2 {
		hc = e.h2c
	}
	return actionsyncv1connect.NewSyncServiceClient(hc, e.srv.URL, p.opts...)
}

// forEachClient runs fn as a parallel subtest for every protocol over h2c and over
// HTTP/1.1, each with its own environment. For unary and server-streaming RPCs.
func forEachClient(t *testing.T, cfg envConfig, fn func(t *testing.T, c clientCase)) {
	t.Helper()
	for _, h2 := range []bool{true, false} {
		for _, p := range protocols {
			name := p.name + "_h2c"
			if !h2 {
				name = p.name + "_http1"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, cfg)
				fn(t, clientCase{env: e, client: e.client(p, h2), proto: p, h2: h2})
			})
		}
	}
}

// forEachH2Client is forEachClient over h2c only.
func forEachH2Client(t *testing.T, cfg envConfig, fn func(t *testing.T, c clientCase)) {
	t.Helper()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, cfg)
			fn(t, clientCase{env: e, client: e.client(p, true), proto: p, h2: true})
		})
	}
}

// rpcCtx returns a context for one RPC or stream, bounded by rpcTimeout.
func rpcCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
	t.Cleanup(cancel)
	return ctx
}

// act builds a client-side action with a JSON payload (anything structpb.NewValue takes).
func act(typ, id string, payload any) *actionsyncv1.Action {
	v, err := structpb.NewValue(payload)
	if err != nil {
		panic(fmt.Sprintf("act: payload %v: %v", payload, err))
	}
	return &actionsyncv1.Action{Type: typ, Id: id, Payload: v}
}

// acts builds n actions "T<i>" with payload {"i": i} and ids prefix-i ("" prefix: no id).
func acts(n int, prefix string) []*actionsyncv1.Action {
	out := make([]*actionsyncv1.Action, n)
	for i := range n {
		id := ""
		if prefix != "" {
			id = fmt.Sprintf("%s-%d", prefix, i)
		}
		out[i] = act(fmt.Sprintf("T%d", i), id, map[string]any{"i": i})
	}
	return out
}

// aliveN numbers the channels that checkServes creates.
var aliveN atomic.Int64

// fresh returns a connect client over a brand-new h2c connection, closed at cleanup.
func (e *testEnv) fresh(t *testing.T) actionsyncv1connect.SyncServiceClient {
	t.Helper()
	hc := newH2CClient(nil)
	t.Cleanup(hc.CloseIdleConnections)
	return actionsyncv1connect.NewSyncServiceClient(hc, e.srv.URL)
}

// dispatch publishes actions over the Connect protocol and fails the test on error.
func (e *testEnv) dispatch(t *testing.T, channel, clientID string, actions ...*actionsyncv1.Action) []*actionsyncv1.Ack {
	t.Helper()
	res, err := e.client(protocols[0], true).Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: channel, ClientId: clientID, Actions: actions}))
	if err != nil {
		t.Fatalf("Dispatch(%q): %v", channel, err)
	}
	if got, want := len(res.Msg.GetAcks()), len(actions); got != want {
		t.Fatalf("Dispatch(%q): got %d acks, want %d", channel, got, want)
	}
	return res.Msg.GetAcks()
}

// head returns the channel's head seq, read with History.
func (e *testEnv) head(t *testing.T, channel string) uint64 {
	t.Helper()
	res, err := e.client(protocols[0], true).History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: channel, Limit: 1}))
	if err != nil {
		t.Fatalf("History(%q): %v", channel, err)
	}
	return res.Msg.GetHeadSeq()
}

// history returns the channel's whole history, paging with after_seq.
func (e *testEnv) history(t *testing.T, channel string) []*actionsyncv1.Action {
	t.Helper()
	return e.historyAfter(t, channel, 0)
}

// historyAfter returns the channel's history after a seq, paging with after_seq.
func (e *testEnv) historyAfter(t *testing.T, channel string, after uint64) []*actionsyncv1.Action {
	t.Helper()
	c := e.client(protocols[0], true)
	var out []*actionsyncv1.Action
	for {
		res, err := c.History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: channel, AfterSeq: after, Limit: 1000}))
		if err != nil {
			t.Fatalf("History(%q, after %d): %v", channel, after, err)
		}
		out = append(out, res.Msg.GetActions()...)
		if len(res.Msg.GetActions()) == 0 || out[len(out)-1].GetSeq() >= res.Msg.GetHeadSeq() {
			return out
		}
		after = out[len(out)-1].GetSeq()
	}
}

// checkServes proves the server still works for a new client: a dispatch on a new
// channel is acknowledged and readable.
func (e *testEnv) checkServes(t *testing.T) {
	t.Helper()
	c := e.fresh(t)
	ch := fmt.Sprintf("alive-%d", aliveN.Add(1))
	res, err := c.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: ch, Actions: []*actionsyncv1.Action{act("PING", "", nil)}}))
	if err != nil {
		t.Fatalf("another client: Dispatch: %v", err)
	}
	if got := res.Msg.GetAcks()[0].GetSeq(); got != 1 {
		t.Fatalf("another client: got seq %d, want 1", got)
	}
	h, err := c.History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: ch}))
	if err != nil {
		t.Fatalf("another client: History: %v", err)
	}
	if got := len(h.Msg.GetActions()); got != 1 {
		t.Fatalf("another client: History has %d actions, want 1", got)
	}
}

// event is one item of a subscription or Sync stream: a response flattened so that
// batching does not matter. Exactly one field is set.
type event struct {
	Action        *actionsyncv1.Action
	Reset         *actionsyncv1.Reset
	Ready         *actionsyncv1.Ready
	Snapshot      *actionsyncv1.Snapshot
	Heartbeat     bool
	Dispatched    *actionsyncv1.DispatchResponse
	DispatchError *actionsyncv1.DispatchError
	Presence      *actionsyncv1.PresenceEvent
}

func actionEvents(as ...*actionsyncv1.Action) []event {
	out := make([]event, len(as))
	for i, a := range as {
		out[i] = event{Action: a}
	}
	return out
}

func readyEv(channel string, head uint64) event {
	return event{Ready: &actionsyncv1.Ready{Channel: channel, HeadSeq: head}}
}

func resetEv(channel string, head uint64) event {
	return event{Reset: &actionsyncv1.Reset{Channel: channel, HeadSeq: head}}
}

// flatten turns one streamed response into events, checking that exactly one of its
// fields is set.
func flatten(t *testing.T, actions []*actionsyncv1.Action, reset *actionsyncv1.Reset, ready *actionsyncv1.Ready, hb *actionsyncv1.Heartbeat,
	dispatched *actionsyncv1.DispatchResponse, dispatchErr *actionsyncv1.DispatchError, snap *actionsyncv1.Snapshot, pres *actionsyncv1.PresenceEvent,
) []event {
	t.Helper()
	set := 0
	var out []event
	if len(actions) > 0 {
		set++
		out = actionEvents(actions...)
	}
	for _, ev := range []event{{Reset: reset}, {Ready: ready}, {Heartbeat: hb != nil}, {Dispatched: dispatched}, {DispatchError: dispatchErr}, {Snapshot: snap}, {Presence: pres}} {
		if ev.Reset != nil || ev.Ready != nil || ev.Heartbeat || ev.Dispatched != nil || ev.DispatchError != nil || ev.Snapshot != nil || ev.Presence != nil {
			set++
			out = append(out, ev)
		}
	}
	if set != 1 {
		t.Errorf("response sets %d fields, want exactly 1: %+v", set, out)
	}
	return out
}

// stream is the receiving side of a Subscribe or Sync stream.
type stream interface {
	// recv returns the events of the next response, or the stream's end: io.EOF or the error.
	recv(t *testing.T) ([]event, error)
}

// subscribeStream reads events from a Subscribe stream.
type subscribeStream struct {
	s *connect.ServerStreamForClient[actionsyncv1.SubscribeResponse]
}

func (s subscribeStream) recv(t *testing.T) ([]event, error) {
	t.Helper()
	if !s.s.Receive() {
		if err := s.s.Err(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	m := s.s.Msg()
	return flatten(t, m.GetActions(), m.GetReset_(), m.GetReady(), m.GetHeartbeat(), nil, nil, m.GetSnapshot(), m.GetPresence()), nil
}

// subscribe opens a Subscribe stream bounded by rpcTimeout.
func subscribe(t *testing.T, c actionsyncv1connect.SyncServiceClient, req *actionsyncv1.SubscribeRequest) *reader {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
	s, err := c.Subscribe(ctx, connect.NewRequest(req))
	if err != nil {
		cancel()
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = s.Close()
	})
	return &reader{s: subscribeStream{s}, cancel: cancel}
}

// syncStream is a bidi Sync stream, from a connect-go or a grpc-go client.
type syncStream interface {
	send(*actionsyncv1.SyncRequest) error
	receive() (*actionsyncv1.SyncResponse, error)
	closeSend() error
}

// connectSync is a Sync stream of a connect-go client.
type connectSync struct {
	s *connect.BidiStreamForClient[actionsyncv1.SyncRequest, actionsyncv1.SyncResponse]
}

func (c connectSync) send(r *actionsyncv1.SyncRequest) error       { return c.s.Send(r) }
func (c connectSync) receive() (*actionsyncv1.SyncResponse, error) { return c.s.Receive() }
func (c connectSync) closeSend() error                             { return c.s.CloseRequest() }

// grpcSync is a Sync stream of a grpc-go client.
type grpcSync struct{ s grpc.ClientStream }

func (g grpcSync) send(r *actionsyncv1.SyncRequest) error { return g.s.SendMsg(r) }
func (g grpcSync) closeSend() error                       { return g.s.CloseSend() }
func (g grpcSync) receive() (*actionsyncv1.SyncResponse, error) {
	m := new(actionsyncv1.SyncResponse)
	if err := g.s.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}

// syncEvents reads events from a Sync stream.
type syncEvents struct{ s syncStream }

func (s syncEvents) recv(t *testing.T) ([]event, error) {
	t.Helper()
	m, err := s.s.receive()
	if err != nil {
		return nil, err
	}
	return flatten(t, m.GetActions(), m.GetReset_(), m.GetReady(), m.GetHeartbeat(), m.GetDispatched(), m.GetDispatchError(), m.GetSnapshot(), m.GetPresence()), nil
}

// syncer is a Sync stream under test: send requests, read events.
type syncer struct {
	*reader
	s syncStream
}

func (s *syncer) send(t *testing.T, r *actionsyncv1.SyncRequest) {
	t.Helper()
	// io.EOF means the server has already ended the stream (connect-go's contract):
	// the reason comes from the next receive.
	if err := s.s.send(r); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("Sync send: %v", err)
	}
}

func (s *syncer) subscribe(t *testing.T, r *actionsyncv1.SubscribeRequest) {
	t.Helper()
	s.send(t, &actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Subscribe{Subscribe: r}})
}

func (s *syncer) dispatch(t *testing.T, r *actionsyncv1.DispatchRequest) {
	t.Helper()
	s.send(t, &actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Dispatch{Dispatch: r}})
}

// openSync opens a Sync stream with a connect-go client, bounded by rpcTimeout.
func openSync(t *testing.T, c actionsyncv1connect.SyncServiceClient) *syncer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
	s := c.Sync(ctx)
	t.Cleanup(func() {
		cancel()
		_ = s.CloseRequest()
		_ = s.CloseResponse()
	})
	cs := connectSync{s}
	return &syncer{reader: &reader{s: syncEvents{cs}, cancel: cancel}, s: cs}
}

// grpcConn dials the test server with grpc-go over h2c, as a mobile client would.
func (e *testEnv) grpcConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(e.srv.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// openGRPCSync opens a Sync stream with grpc-go and a hand-written stream descriptor.
func openGRPCSync(t *testing.T, conn *grpc.ClientConn) *syncer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
	t.Cleanup(cancel)
	desc := &grpc.StreamDesc{StreamName: "Sync", ServerStreams: true, ClientStreams: true}
	cs, err := conn.NewStream(ctx, desc, syncMethod)
	if err != nil {
		t.Fatalf("grpc NewStream: %v", err)
	}
	gs := grpcSync{cs}
	return &syncer{reader: &reader{s: syncEvents{gs}, cancel: cancel}, s: gs}
}

// syncClient is how a Sync test opens streams: a connect-go protocol or grpc-go.
type syncClient struct {
	name string
	open func(t *testing.T, e *testEnv) *syncer
}

var syncClients = func() []syncClient {
	var out []syncClient
	for _, p := range protocols {
		out = append(out, syncClient{name: p.name, open: func(t *testing.T, e *testEnv) *syncer {
			return openSync(t, e.client(p, true))
		}})
	}
	return append(out, syncClient{name: "grpc_go", open: func(t *testing.T, e *testEnv) *syncer {
		return openGRPCSync(t, e.grpcConn(t))
	}})
}()

// forEachSyncClient runs fn as a parallel subtest per Sync client, each with its own env.
func forEachSyncClient(t *testing.T, cfg envConfig, fn func(t *testing.T, e *testEnv, open func(t *testing.T) *syncer)) {
	t.Helper()
	for _, sc := range syncClients {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, cfg)
			fn(t, e, func(t *testing.T) *syncer { return sc.open(t, e) })
		})
	}
}

// reader reads events from a stream, counting responses.
type reader struct {
	s        stream
	cancel   context.CancelFunc
	receives int     // responses received
	pending  []event // events received but not yet returned
}

// next returns the next event, failing the test if the stream ends.
func (r *reader) next(t *testing.T) event {
	t.Helper()
	for len(r.pending) == 0 {
		evs, err := r.s.recv(t)
		if err != nil {
			t.Fatalf("stream ended after %d responses: %v", r.receives, err)
		}
		r.receives++
		r.pending = evs
	}
	ev := r.pending[0]
	r.pending = r.pending[1:]
	return ev
}

// nextNonBeat is next, skipping heartbeats.
func (r *reader) nextNonBeat(t *testing.T) event {
	t.Helper()
	for {
		if ev := r.next(t); !ev.Heartbeat {
			return ev
		}
	}
}

// take returns the next n events, skipping heartbeats.
func (r *reader) take(t *testing.T, n int) []event {
	t.Helper()
	out := make([]event, n)
	for i := range out {
		out[i] = r.nextNonBeat(t)
	}
	return out
}

// end reads until the stream ends and returns why (nil for a clean end). Events read on
// the way are returned too.
func (r *reader) end(t *testing.T) ([]event, error) {
	t.Helper()
	evs := r.pending
	r.pending = nil
	for {
		got, err := r.s.recv(t)
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		r.receives++
		evs = append(evs, got...)
	}
}

// wantEnd reads until the stream ends and checks its code and message fragment; no
// action may arrive on the way.
func (r *reader) wantEnd(t *testing.T, code connect.Code, frag string) {
	t.Helper()
	evs, err := r.end(t)
	for _, ev := range evs {
		if ev.Action != nil {
			t.Errorf("unexpected action before the end: %v", ev.Action)
		}
	}
	checkErr(t, err, code, frag)
}

// codeOf returns the Connect code of an error from a connect-go or a grpc-go client.
func codeOf(err error) connect.Code {
	if err == nil {
		return 0
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	if s, ok := status.FromError(err); ok {
		return connect.Code(s.Code())
	}
	return connect.CodeUnknown
}

// checkErr fails unless err has code and its message contains frag.
func checkErr(t *testing.T, err error, code connect.Code, frag string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v %q", code, frag)
	}
	if got := codeOf(err); got != code {
		t.Fatalf("got code %v (%v), want %v", got, err, code)
	}
	if !strings.Contains(err.Error(), frag) {
		t.Fatalf("got error %q, want it to contain %q", err, frag)
	}
}

// diffEvents compares events, protos by value.
// eventCmp compares events. Epochs are random per channel incarnation, so they are
// ignored; TestService_Subscribe_epoch checks them.
var eventCmp = cmp.Options{
	protocmp.Transform(),
	protocmp.IgnoreFields(&actionsyncv1.Ready{}, "epoch"),
	protocmp.IgnoreFields(&actionsyncv1.Reset{}, "epoch"),
}

func diffEvents(want, got []event) string {
	return cmp.Diff(want, got, eventCmp)
}

// checkServerFields checks the fields the server sets on a delivered action.
func checkServerFields(t *testing.T, a *actionsyncv1.Action, channel string, seq uint64, clientID string) {
	t.Helper()
	if a.GetChannel() != channel || a.GetSeq() != seq || a.GetClientId() != clientID {
		t.Errorf("action %q: got channel %q seq %d client_id %q, want %q %d %q",
			a.GetId(), a.GetChannel(), a.GetSeq(), a.GetClientId(), channel, seq, clientID)
	}
	if a.GetTime() == nil {
		t.Errorf("action %q seq %d: time not set", a.GetId(), a.GetSeq())
	} else if d := time.Since(a.GetTime().AsTime()); d < -time.Second || d > time.Minute {
		t.Errorf("action %q seq %d: time %v is %v from now", a.GetId(), a.GetSeq(), a.GetTime().AsTime(), d)
	}
}

// mustAllowList builds an allow-list or fails the test.
func mustAllowList(t *testing.T, rules ...service.AllowRule) *service.AllowList {
	t.Helper()
	l, err := service.NewAllowList(rules...)
	if err != nil {
		t.Fatalf("NewAllowList: %v", err)
	}
	return l
}
