package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	actionsyncv1connect "github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// testServer is `actionsync serve` run in-process by run, on a free port.
type testServer struct {
	url    string
	logs   *logSink
	cancel context.CancelFunc // what SIGTERM does

	once    sync.Once
	done    chan error
	stopErr error
	stopped time.Duration // how long run took to return after cancel
}

// startServer runs `serve --addr 127.0.0.1:0 --log-format json args...` with env as the
// whole environment, and returns once it listens. The server stops at cleanup.
func startServer(t *testing.T, env map[string]string, args ...string) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{logs: newLogSink(), cancel: cancel, done: make(chan error, 1)}
	argv := append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	go func() { ts.done <- run(ctx, argv, io.Discard, ts.logs, envOf(env)) }()
	select {
	case ts.url = <-ts.logs.url:
	case err := <-ts.done:
		cancel()
		t.Fatalf("run returned before listening: %v\nlogs:\n%s", err, ts.logs)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("server not listening after 10s; logs:\n%s", ts.logs)
	}
	t.Cleanup(func() {
		if err := ts.stop(t); err != nil {
			t.Errorf("run: %v\nlogs:\n%s", err, ts.logs)
		}
	})
	return ts
}

// stop cancels run's context, as SIGTERM does, and returns run's result.
func (ts *testServer) stop(t *testing.T) error {
	t.Helper()
	ts.once.Do(func() {
		start := time.Now()
		ts.cancel()
		select {
		case ts.stopErr = <-ts.done:
			ts.stopped = time.Since(start)
		case <-time.After(30 * time.Second):
			t.Fatalf("run did not return 30s after cancel; logs:\n%s", ts.logs)
		}
	})
	return ts.stopErr
}

// logSink collects the server's JSON log and reports the URL of its start-up line.
type logSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	url  chan string
	once sync.Once
}

func newLogSink() *logSink { return &logSink{url: make(chan string, 1)} }

// Write relies on slog handlers writing one record per call.
func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	var rec struct {
		Msg string `json:"msg"`
		URL string `json:"url"`
	}
	if json.Unmarshal(p, &rec) == nil && rec.Msg == "actionsync listening" {
		s.once.Do(func() { s.url <- rec.URL })
	}
	return len(p), nil
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// httpClient returns a client speaking HTTP/1.1 only, or h2c (HTTP/2 without TLS) only.
func httpClient(t *testing.T, h2c bool) *http.Client {
	t.Helper()
	var p http.Protocols
	if h2c {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// clientCase is one protocol and transport combination.
type clientCase struct {
	name string
	h2c  bool
	opts []connect.ClientOption
}

var clientCases = []clientCase{
	{"connect_http1", false, nil},
	{"connect_json_http1", false, []connect.ClientOption{connect.WithProtoJSON()}},
	{"connect_h2c", true, nil},
	{"grpc_h2c", true, []connect.ClientOption{connect.WithGRPC()}},
	{"grpcweb_http1", false, []connect.ClientOption{connect.WithGRPCWeb()}},
	{"grpcweb_h2c", true, []connect.ClientOption{connect.WithGRPCWeb()}},
}

// action returns an UPDATE_STAGE_TITLE action with id.
func action(t *testing.T, id string) *actionsyncv1.Action {
	t.Helper()
	payload, err := structpb.NewValue(map[string]any{"stageId": "s1", "stageTitle": "Todo"})
	if err != nil {
		t.Fatal(err)
	}
	return &actionsyncv1.Action{Type: "UPDATE_STAGE_TITLE", Id: id, Payload: payload}
}

// receiveUntil receives from next until match reports true, skipping other messages.
func receiveUntil[T any](t *testing.T, what string, next func() (*T, error), match func(*T) bool) *T {
	t.Helper()
	for {
		msg, err := next()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(msg) {
			return msg
		}
	}
}

// subscribe opens a Subscribe stream on channel and waits for its ready message.
func subscribe(ctx context.Context, t *testing.T, client actionsyncv1connect.SyncServiceClient, channel, clientID string) *connect.ServerStreamForClient[actionsyncv1.SubscribeResponse] {
	t.Helper()
	stream, err := client.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{
		Positions: []*actionsyncv1.Position{{Channel: channel}},
		ClientId:  clientID,
	}))
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { _ = stream.Close() })
	receiveUntil(t, "ready", streamNext(stream), func(m *actionsyncv1.SubscribeResponse) bool {
		return m.GetReady().GetChannel() == channel
	})
	return stream
}

// streamNext adapts a server stream to receiveUntil.
func streamNext[T any](stream *connect.ServerStreamForClient[T]) func() (*T, error) {
	return func() (*T, error) {
		if stream.Receive() {
			return stream.Msg(), nil
		}
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
}

func TestServe_roundTrip(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for _, cc := range clientCases {
		t.Run(cc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			client := actionsyncv1connect.NewSyncServiceClient(httpClient(t, cc.h2c), ts.url, cc.opts...)
			channel := "board:" + cc.name
			stream := subscribe(ctx, t, client, channel, "watcher")

			res, err := client.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{
				Channel: channel, ClientId: "writer", Actions: []*actionsyncv1.Action{action(t, "a1")},
			}))
			if err != nil {
				t.Fatalf("Dispatch: %v", err)
			}
			if acks := res.Msg.GetAcks(); len(acks) != 1 || acks[0].GetSeq() != 1 || acks[0].GetDuplicate() {
				t.Fatalf("acks: got %v, want one with seq 1, not duplicate", acks)
			}
			got := receiveUntil(t, "actions", streamNext(stream), func(m *actionsyncv1.SubscribeResponse) bool {
				return len(m.GetActions()) > 0
			}).GetActions()[0]
			if got.GetSeq() != 1 || got.GetId() != "a1" || got.GetClientId() != "writer" || got.GetType() != "UPDATE_STAGE_TITLE" {
				t.Errorf("received %v, want seq 1, id a1, client writer, UPDATE_STAGE_TITLE", got)
			}

			hist, err := client.History(ctx, connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: channel}))
			if err != nil {
				t.Fatalf("History: %v", err)
			}
			if hist.Msg.GetHeadSeq() != 1 || len(hist.Msg.GetActions()) != 1 {
				t.Errorf("History: got head %d with %d actions, want head 1 with 1", hist.Msg.GetHeadSeq(), len(hist.Msg.GetActions()))
			}

			_, err = client.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{
				Channel: "bad channel!", Actions: []*actionsyncv1.Action{action(t, "a2")},
			}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("Dispatch on a bad channel: got %v, want invalid_argument", err)
			}
		})
	}
}

func TestServe_sync(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for _, cc := range clientCases {
		if !cc.h2c {
			continue // bidi streaming needs HTTP/2
		}
		t.Run(cc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			client := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), ts.url, cc.opts...)
			stream := client.Sync(ctx)
			defer func() { _ = stream.CloseResponse() }()
			channel := "room:" + cc.name
			send := func(req *actionsyncv1.SyncRequest) {
				if err := stream.Send(req); err != nil {
					t.Fatalf("Send: %v", err)
				}
			}
			send(&actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Subscribe{Subscribe: &actionsyncv1.SubscribeRequest{
				Positions: []*actionsyncv1.Position{{Channel: channel}}, ClientId: "mobile",
			}}})
			receiveUntil(t, "ready", stream.Receive, func(m *actionsyncv1.SyncResponse) bool { return m.GetReady() != nil })
			send(&actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Dispatch{Dispatch: &actionsyncv1.DispatchRequest{
				Channel: channel, ClientId: "mobile", Actions: []*actionsyncv1.Action{action(t, "s1")},
			}}})
			var dispatched, echoed bool
			receiveUntil(t, "dispatched and echo", stream.Receive, func(m *actionsyncv1.SyncResponse) bool {
				if d := m.GetDispatched(); d != nil {
					dispatched = len(d.GetAcks()) == 1 && d.GetAcks()[0].GetSeq() == 1
				}
				if a := m.GetActions(); len(a) > 0 {
					echoed = a[0].GetId() == "s1" && a[0].GetClientId() == "mobile"
				}
				return dispatched && echoed
			})
			if err := stream.CloseRequest(); err != nil {
				t.Errorf("CloseRequest: %v", err)
			}
		})
	}
}

func TestServe_healthAndReflection(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	health := grpchealth.NewClient(httpClient(t, true), ts.url, connect.WithGRPC())
	for _, svc := range []string{"", actionsyncv1connect.SyncServiceName} {
		res, err := health.Check(ctx, &grpchealth.CheckRequest{Service: svc})
		if err != nil || res.Status != grpchealth.StatusServing {
			t.Errorf("health of %q: got %v, %v; want SERVING", svc, res, err)
		}
	}
	// What a load balancer or `curl` does: Connect JSON over HTTP/1.1.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.url+"/grpc.health.v1.Health/Check", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient(t, false).Do(req)
	if err != nil {
		t.Fatalf("POST health: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"SERVING_STATUS_SERVING"`) {
		t.Errorf("POST health: got %d %s, want 200 with SERVING_STATUS_SERVING", resp.StatusCode, body)
	}

	stream := grpcreflect.NewClient(httpClient(t, true), ts.url).NewStream(ctx)
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("reflection ListServices: %v", err)
	}
	if _, err := stream.Close(); err != nil {
		t.Errorf("reflection Close: %v", err)
	}
	for _, want := range []string{actionsyncv1connect.SyncServiceName, grpchealth.HealthV1ServiceName} {
		if !slices.ContainsFunc(names, func(n protoreflect.FullName) bool { return string(n) == want }) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
	files, err := grpcreflect.NewClient(httpClient(t, true), ts.url).NewStream(ctx).
		FileContainingSymbol(actionsyncv1connect.SyncServiceName)
	if err != nil || len(files) == 0 {
		t.Errorf("reflection FileContainingSymbol: got %d files, %v", len(files), err)
	}
}

func TestServe_cors(t *testing.T) {
	t.Parallel()
	const allowed = "https://app.example.com"
	withCORS := startServer(t, map[string]string{"ACTIONSYNC_CORS_ORIGINS": allowed + ",http://localhost:5173"})
	noCORS := startServer(t, nil)
	tests := []struct {
		name    string
		url     string
		origin  string
		allowed bool
	}{
		{"allowed_origin", withCORS.url, allowed, true},
		{"other_allowed_origin", withCORS.url, "http://localhost:5173", true},
		{"unknown_origin", withCORS.url, "https://evil.example.com", false},
		{"no_origins_configured", noCORS.url, allowed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := httpClient(t, false)
			preflight, err := http.NewRequestWithContext(t.Context(), http.MethodOptions,
				tt.url+actionsyncv1connect.SyncServiceDispatchProcedure, nil)
			if err != nil {
				t.Fatal(err)
			}
			preflight.Header.Set("Origin", tt.origin)
			preflight.Header.Set("Access-Control-Request-Method", http.MethodPost)
			// As browsers send it: lowercase and sorted (rs/cors relies on the order).
			preflight.Header.Set("Access-Control-Request-Headers", "connect-protocol-version,connect-timeout-ms,content-type")
			resp, err := client.Do(preflight)
			if err != nil {
				t.Fatalf("preflight: %v", err)
			}
			resp.Body.Close()
			h := resp.Header
			if !tt.allowed {
				if got := h.Get("Access-Control-Allow-Origin"); got != "" {
					t.Errorf("Access-Control-Allow-Origin: got %q, want none", got)
				}
				return
			}
			if resp.StatusCode != http.StatusNoContent {
				t.Errorf("preflight status: got %d, want 204", resp.StatusCode)
			}
			checks := []struct{ header, want string }{
				{"Access-Control-Allow-Origin", tt.origin},
				{"Access-Control-Allow-Methods", "POST"},
				{"Access-Control-Allow-Headers", "connect-protocol-version,connect-timeout-ms,content-type"},
				{"Access-Control-Max-Age", "7200"},
			}
			for _, c := range checks {
				if got := h.Get(c.header); !strings.EqualFold(got, c.want) {
					t.Errorf("%s: got %q, want %q", c.header, got, c.want)
				}
			}

			// The actual request: the origin is echoed and gRPC-Web's trailers exposed.
			post, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
				tt.url+actionsyncv1connect.SyncServiceHistoryProcedure, strings.NewReader(`{"channel":"board:cors"}`))
			if err != nil {
				t.Fatal(err)
			}
			post.Header.Set("Origin", tt.origin)
			post.Header.Set("Content-Type", "application/json")
			resp, err = client.Do(post)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.origin {
				t.Errorf("POST Access-Control-Allow-Origin: got %q, want %q", got, tt.origin)
			}
			if got := resp.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Grpc-Status") {
				t.Errorf("POST Access-Control-Expose-Headers: got %q, want Grpc-Status among them", got)
			}
		})
	}
}

func TestServe_demo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		demo bool
	}{
		{"default", nil, nil, true},
		{"flag_off", nil, []string{"--demo=false"}, false},
		{"env_off", map[string]string{"ACTIONSYNC_DEMO": "false"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, tt.env, tt.args...)
			client := httpClient(t, false)
			get := func(path string) (*http.Response, string) {
				t.Helper()
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.url+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				return resp, string(body)
			}
			for _, path := range []string{"/", "/app.js", "/style.css"} {
				resp, body := get(path)
				switch {
				case !tt.demo && resp.StatusCode != http.StatusNotFound:
					t.Errorf("GET %s: got status %d, want 404 (demo off)", path, resp.StatusCode)
				case tt.demo && resp.StatusCode != http.StatusOK:
					t.Errorf("GET %s: got status %d, want 200", path, resp.StatusCode)
				case tt.demo && path == "/" && (!strings.Contains(body, `src="app.js"`) ||
					resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || resp.Header.Get("Cache-Control") != "no-cache"):
					t.Errorf("GET /: got %s %q with Cache-Control %q, want the demo page, no-cache",
						resp.Header.Get("Content-Type"), body, resp.Header.Get("Cache-Control"))
				}
			}
			if resp, _ := get("/no-such-file"); resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET /no-such-file: got status %d, want 404", resp.StatusCode)
			}

			// "/" must not shadow the RPCs: they stay more specific than the demo.
			post, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
				ts.url+actionsyncv1connect.SyncServiceHistoryProcedure, strings.NewReader(`{"channel":"board:demo"}`))
			if err != nil {
				t.Fatal(err)
			}
			post.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(post)
			if err != nil {
				t.Fatalf("History: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("History: got %d %s, want 200 application/json", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
		})
	}
}

func TestServe_shutdown(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--shutdown-timeout", "20s")
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()

	var streams []struct {
		name string
		next func() error // receives until the stream ends; returns its error
	}
	for _, cc := range clientCases {
		client := actionsyncv1connect.NewSyncServiceClient(httpClient(t, cc.h2c), ts.url, cc.opts...)
		stream := subscribe(ctx, t, client, "board:shutdown", "sub-"+cc.name)
		streams = append(streams, struct {
			name string
			next func() error
		}{"subscribe_" + cc.name, func() error {
			for stream.Receive() {
			}
			return stream.Err()
		}})
	}
	bidi := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), ts.url, connect.WithGRPC()).Sync(ctx)
	t.Cleanup(func() { _ = bidi.CloseResponse() })
	if err := bidi.Send(&actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Subscribe{Subscribe: &actionsyncv1.SubscribeRequest{
		Positions: []*actionsyncv1.Position{{Channel: "board:shutdown"}},
	}}}); err != nil {
		t.Fatalf("Sync Send: %v", err)
	}
	receiveUntil(t, "sync ready", bidi.Receive, func(m *actionsyncv1.SyncResponse) bool { return m.GetReady() != nil })
	streams = append(streams, struct {
		name string
		next func() error
	}{"sync_grpc_h2c", func() error {
		for {
			if _, err := bidi.Receive(); err != nil {
				return err
			}
		}
	}})
	// A health Watch must not hold the shutdown up until its timeout.
	watch := grpchealth.NewClient(httpClient(t, true), ts.url).Watch(ctx, &grpchealth.CheckRequest{})
	if ev := <-watch; ev.Err != nil || ev.Response.Status != grpchealth.StatusServing {
		t.Fatalf("health Watch: got %+v, want SERVING", ev)
	}

	if err := ts.stop(t); err != nil {
		t.Fatalf("run after SIGTERM: got %v, want nil; logs:\n%s", err, ts.logs)
	}
	if ts.stopped > 5*time.Second {
		t.Errorf("run returned %v after SIGTERM, want well under the 20s shutdown timeout", ts.stopped)
	}
	for _, s := range streams {
		if err := s.next(); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("%s ended with %v, want unavailable", s.name, err)
		}
	}
	for ev := range watch { // ends, whatever its last event
		_ = ev
	}
	client := actionsyncv1connect.NewSyncServiceClient(httpClient(t, false), ts.url)
	_, err := client.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{
		Channel: "board:shutdown", Actions: []*actionsyncv1.Action{action(t, "late")},
	}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("Dispatch after shutdown: got %v, want unavailable (connection refused)", err)
	}
	for _, want := range []string{"actionsync shutting down", "actionsync stopped"} {
		if !strings.Contains(ts.logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, ts.logs)
		}
	}
}

func TestServe_tls(t *testing.T) {
	t.Parallel()
	certFile, keyFile := writeSelfSigned(t)
	ts := startServer(t, nil, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(ts.url, "https://127.0.0.1:") {
		t.Fatalf("url: got %q, want https://127.0.0.1:PORT", ts.url)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	for _, tt := range []struct {
		name      string
		http2     bool
		wantMajor int
	}{{"http1", false, 1}, {"http2", true, 2}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var p http.Protocols
			p.SetHTTP1(!tt.http2)
			p.SetHTTP2(tt.http2)
			tr := &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{RootCAs: roots}}
			t.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.url+"/grpc.health.v1.Health/Check", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("POST health: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != tt.wantMajor {
				t.Errorf("POST health: got %d over HTTP/%d, want 200 over HTTP/%d", resp.StatusCode, resp.ProtoMajor, tt.wantMajor)
			}
			sc := actionsyncv1connect.NewSyncServiceClient(client, ts.url, connect.WithGRPC())
			if !tt.http2 {
				sc = actionsyncv1connect.NewSyncServiceClient(client, ts.url)
			}
			_, err = sc.Dispatch(t.Context(), connect.NewRequest(&actionsyncv1.DispatchRequest{
				Channel: "board:tls-" + tt.name, Actions: []*actionsyncv1.Action{action(t, "t1")},
			}))
			if err != nil {
				t.Errorf("Dispatch over TLS: %v", err)
			}
		})
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and localhost and its
// key as PEM files, and returns their paths.
func writeSelfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "actionsync test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestServerURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		tls  bool
		want string
	}{
		{"127.0.0.1:8080", false, "http://127.0.0.1:8080"},
		{"0.0.0.0:8080", false, "http://localhost:8080"},
		{"[::]:8443", true, "https://localhost:8443"},
		{"[::1]:8080", false, "http://[::1]:8080"},
	}
	for _, tt := range tests {
		addr, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := serverURL(addr, tt.tls); got != tt.want {
			t.Errorf("serverURL(%s, %v): got %q, want %q", tt.addr, tt.tls, got, tt.want)
		}
	}
}

// loggedURL returns the url of the first log record with message msg.
func loggedURL(t *testing.T, ts *testServer, msg string) string {
	t.Helper()
	for _, line := range strings.Split(ts.logs.String(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
			URL string `json:"url"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
			return rec.URL
		}
	}
	t.Fatalf("no %q logged:\n%s", msg, ts.logs)
	return ""
}

// The pprof profiles are served only on --debug-addr, never with the API.
func TestServe_debugAddr(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--debug-addr", "127.0.0.1:0")
	debugURL := loggedURL(t, ts, "actionsync debug listener")
	get := func(url string) int {
		t.Helper()
		resp, err := httpClient(t, false).Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(debugURL + "heap?gc=1"); code != http.StatusOK {
		t.Errorf("GET heap profile on the debug address: %d, want 200", code)
	}
	if code := get(ts.url + "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ on the API address: %d, want 404", code)
	}
}

// The AdminService is served only on --admin-addr, never with the API, and deletes a
// snapshot a client stored through the API.
func TestServe_adminAddr(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--admin-addr", "127.0.0.1:0")
	adminURL := loggedURL(t, ts, "actionsync admin listener")
	ctx := t.Context()
	client := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), ts.url)
	const ch = "board:admin"
	if _, err := client.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: ch, Actions: []*actionsyncv1.Action{{Type: "T"}}})); err != nil {
		t.Fatal(err)
	}
	sub, err := client.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: ch, Live: true}}}))
	if err != nil || !sub.Receive() {
		t.Fatalf("Subscribe: %v %v", err, sub.Err())
	}
	epoch := sub.Msg().GetReady().GetEpoch()
	_ = sub.Close()
	if _, err := client.PutSnapshot(ctx, connect.NewRequest(&actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 1, Epoch: epoch, State: []byte("{}")})); err != nil {
		t.Fatalf("PutSnapshot: %v", err)
	}
	onAPI := actionsyncv1connect.NewAdminServiceClient(httpClient(t, true), ts.url)
	if _, err := onAPI.DeleteSnapshot(ctx, connect.NewRequest(&actionsyncv1.DeleteSnapshotRequest{Channel: ch})); connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Errorf("DeleteSnapshot on the API address: got %v, want unimplemented (not served there)", err)
	}
	admin := actionsyncv1connect.NewAdminServiceClient(httpClient(t, false), adminURL)
	res, err := admin.DeleteSnapshot(ctx, connect.NewRequest(&actionsyncv1.DeleteSnapshotRequest{Channel: ch}))
	if err != nil || res.Msg.GetSeq() != 1 {
		t.Fatalf("DeleteSnapshot on the admin address: got %v, %v; want seq 1", res, err)
	}
	if _, err := client.GetSnapshot(ctx, connect.NewRequest(&actionsyncv1.GetSnapshotRequest{Channel: ch})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("GetSnapshot after the delete: got %v, want not_found", err)
	}
}
