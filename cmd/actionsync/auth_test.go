package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/go-jose/go-jose/v4"

	"github.com/actionsync/actionsync/auth"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// writeSecret writes an HS256 secret (with a trailing newline, as editors save it).
func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const devSecret = "a-development-secret-of-32-bytes-at-least"

// TestLoadConfig_anonymousRefused: without auth the server serves loopback addresses
// only, unless --allow-anonymous; "*" CORS with anonymous access beyond loopback never.
func TestLoadConfig_anonymousRefused(t *testing.T) {
	t.Parallel()
	secret := writeSecret(t, devSecret)
	for _, tc := range []struct {
		args []string
		frag string // "": accepted
	}{
		{[]string{"--addr", "localhost:0"}, ""},
		{[]string{"--addr", "127.0.0.1:0"}, ""},
		{[]string{"--addr", "[::1]:0"}, ""},
		{[]string{"--addr", ":8080"}, `refusing to serve :8080 without authentication`},
		{[]string{"--addr", "0.0.0.0:8080"}, `refusing to serve 0.0.0.0:8080 without authentication`},
		{[]string{"--addr", "192.0.2.1:8080"}, `refusing to serve 192.0.2.1:8080`},
		{[]string{"--addr", "0.0.0.0:8080", "--allow-anonymous", "true"}, ""},
		{[]string{"--addr", "0.0.0.0:8080", "--allow-anonymous", "true", "--cors-origins", "*"}, `refusing --cors-origins "*" with anonymous access`},
		{[]string{"--addr", "localhost:0", "--cors-origins", "*"}, ""},
		{[]string{"--addr", "0.0.0.0:8080", "--auth-hs256-secret-file", secret, "--cors-origins", "*"}, ""},
		{[]string{"--auth-audience", "x"}, "need --auth-hs256-secret-file or --auth-jwks-file"},
		{[]string{"--auth-hs256-secret-file", writeSecret(t, "short")}, "--auth-hs256-secret-file (ACTIONSYNC_AUTH_HS256_SECRET_FILE)"},
		{[]string{"--auth-jwks-file", filepath.Join(t.TempDir(), "none.json")}, "--auth-jwks-file (ACTIONSYNC_AUTH_JWKS_FILE)"},
		{[]string{"--demo-auth", "true"}, "--demo-auth (ACTIONSYNC_DEMO_AUTH) needs --auth-hs256-secret-file"},
		{[]string{"--demo-auth", "true", "--auth-hs256-secret-file", secret}, ""},
		{[]string{"--demo-auth", "true", "--auth-hs256-secret-file", secret, "--demo", "false"}, "needs the demo"},
		{[]string{"--demo-auth", "true", "--auth-hs256-secret-file", secret, "--addr", "0.0.0.0:8080"}, "refusing --demo-auth on 0.0.0.0:8080"},
		{[]string{"--demo-auth", "true", "--auth-hs256-secret-file", secret, "--addr", "0.0.0.0:8080", "--allow-anonymous", "true"}, ""},
	} {
		_, err := loadConfig(tc.args, envOf(nil))
		switch {
		case tc.frag == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.frag != "" && (err == nil || !strings.Contains(err.Error(), tc.frag)):
			t.Errorf("%q: got %v, want an error with %q", tc.args, err, tc.frag)
		case tc.frag != "":
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Errorf("%q: got %T, want a *usageError (exit code 2)", tc.args, err)
			}
		}
	}
}

// TestServe_auth: a server with --auth-hs256-secret-file refuses a call without a token
// and serves one with a token from `actionsync token`, within its rights.
func TestServe_auth(t *testing.T) {
	t.Parallel()
	secret := writeSecret(t, devSecret)
	ts := startServer(t, nil, "--auth-hs256-secret-file", secret)
	mint := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(t.Context(), append([]string{"token", "--secret-file", secret}, args...), &out, &out, envOf(nil)); err != nil {
			t.Fatalf("token %q: %v: %s", args, err, out.String())
		}
		return strings.TrimSpace(out.String())
	}
	call := func(tok, channel string) error {
		c := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), ts.url)
		req := connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: channel, Actions: []*actionsyncv1.Action{{Type: "ADD_TASK"}}})
		if tok != "" {
			req.Header().Set("Authorization", "Bearer "+tok)
		}
		_, err := c.Dispatch(t.Context(), req)
		return err
	}
	if err := call("", "board:1"); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("no token: got %v, want unauthenticated", err)
	}
	if err := call(mint("--sub", "alice", "--channels", "board:*"), "board:1"); err != nil {
		t.Errorf("alice on board:1: %v", err)
	}
	if err := call(mint("--sub", "bob", "--channels", "board:*", "--allow", "subscribe"), "board:1"); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("read-only bob: got %v, want permission_denied", err)
	}
	if !strings.Contains(ts.logs.String(), "bearer tokens required") {
		t.Errorf("the start-up log does not say tokens are required:\n%s", ts.logs)
	}
	var out bytes.Buffer
	err := run(t.Context(), []string{"token", "--secret-file", secret, "--sub", "user:1"}, &out, &out, envOf(nil))
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "token sub") {
		t.Errorf("token --sub user:1: got %v, want a usage error about the sub", err)
	}
}

// TestServe_authKeysReload: --auth-jwks-file is re-read when it changes: a rotated key
// is accepted without a restart, and the old one no longer.
func TestServe_authKeysReload(t *testing.T) {
	t.Parallel()
	keyA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyB, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	file := filepath.Join(t.TempDir(), "jwks.json")
	write := func(kid string, k *ecdsa.PrivateKey) {
		t.Helper()
		data, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}}})
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a", keyA)
	ts := startServer(t, nil, "--auth-jwks-file", file)
	history := func(key *ecdsa.PrivateKey, kid string) error {
		tok, err := auth.Mint(auth.Claims{Subject: "alice", Expires: time.Now().Add(time.Hour),
			Rights: []auth.Grant{{Channels: []string{"*"}, Allow: []auth.Right{auth.RightHistory}}}}, key, kid)
		if err != nil {
			t.Fatal(err)
		}
		c := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), ts.url)
		req := connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: "board:1"})
		req.Header().Set("Authorization", "Bearer "+tok)
		_, err = c.History(t.Context(), req)
		return err
	}
	if err := history(keyA, "a"); err != nil {
		t.Fatalf("key a: %v", err)
	}
	write("b", keyB)
	deadline := time.Now().Add(3 * keysPollInterval)
	for history(keyB, "b") != nil {
		if time.Now().After(deadline) {
			t.Fatalf("key b still refused %v after the file changed", 3*keysPollInterval)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := history(keyA, "a"); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("key a after the rotation: got %v, want unauthenticated", err)
	}
	if !strings.Contains(ts.logs.String(), "keys file reloaded") {
		t.Errorf("no reload logged:\n%s", ts.logs)
	}
}

// TestServe_maxStreamsPerConnection: one HTTP/2 connection gets at most
// --max-streams-per-connection streams at once; the next waits until one ends.
func TestServe_maxStreamsPerConnection(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--max-streams-per-connection", "2")
	// One h2c connection that waits for a free stream rather than dialling another.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, HTTP2: &http.HTTP2Config{StrictMaxConcurrentRequests: true}}
	t.Cleanup(tr.CloseIdleConnections)
	c := actionsyncv1connect.NewSyncServiceClient(&http.Client{Transport: tr}, ts.url)
	open := func(ctx context.Context) (*connect.ServerStreamForClient[actionsyncv1.SubscribeResponse], error) {
		s, err := c.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:1", Live: true}}}))
		if err != nil {
			return nil, err
		}
		if !s.Receive() {
			return nil, errors.Join(s.Err(), errors.New("no ready"))
		}
		return s, nil
	}
	ctx1, cancel1 := context.WithCancel(t.Context())
	defer cancel1()
	if _, err := open(ctx1); err != nil {
		t.Fatal(err)
	}
	if _, err := open(t.Context()); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if s, err := open(short); err == nil {
		_ = s.Close()
		t.Fatal("a third stream on the connection started; want it to wait")
	}
	cancel1()
	later, cancel2 := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel2()
	if _, err := open(later); err != nil {
		t.Errorf("a stream after one ended: %v", err)
	}
}

// TestServe_demoAuth: with --demo-auth, /demo-token hands out tokens whose role decides
// what they may do; bad parameters are refused.
func TestServe_demoAuth(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, "--auth-hs256-secret-file", writeSecret(t, devSecret), "--demo-auth", "true")
	get := func(query string) (int, string) {
		t.Helper()
		resp, err := httpClient(t, false).Get(ts.url + "/demo-token?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Token   string `json:"token"`
			Expires string `json:"expires"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Token
	}
	for _, q := range []string{"user=a:b", "user=", "user=alice&role=admin"} {
		if code, _ := get(q); code != http.StatusBadRequest {
			t.Errorf("%s: got %d, want 400", q, code)
		}
	}
	c := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), ts.url)
	dispatch := func(tok string) error {
		req := connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", Actions: []*actionsyncv1.Action{{Type: "T"}}})
		req.Header().Set("Authorization", "Bearer "+tok)
		_, err := c.Dispatch(t.Context(), req)
		return err
	}
	code, editor := get("user=alice&role=edit")
	if code != http.StatusOK || dispatch(editor) != nil {
		t.Errorf("editor token: %d, %v", code, dispatch(editor))
	}
	code, viewer := get("user=bob&role=view")
	if err := dispatch(viewer); code != http.StatusOK || connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("viewer token: %d, %v; want permission_denied", code, err)
	}
}
