package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

var adminLine = regexp.MustCompile(`msg="actionsync admin listener".* url=(\S+)`)

// TestStats_adminToken: with --admin-token-file, the AdminService refuses calls without
// the token, and `actionsync stats` with it prints the server's figures and channels.
func TestStats_adminToken(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin-token")
	const token = "0123456789abcdef-admin"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, "stats", "--admin-addr", "127.0.0.1:0", "--admin-token-file", tokenFile)
	var adminURL string
	waitUntil(t, 10*time.Second, "the admin listener's log line", func() bool {
		m := adminLine.FindStringSubmatch(p.logs())
		if m != nil {
			adminURL = m[1]
		}
		return m != nil
	})
	if _, err := p.client(t).Dispatch(t.Context(), connect.NewRequest(&actionsyncv1.DispatchRequest{
		Channel: "board:stats", Actions: []*actionsyncv1.Action{{Type: "ADD"}, {Type: "ADD"}}})); err != nil {
		t.Fatal(err)
	}
	admin := actionsyncv1connect.NewAdminServiceClient(httpClient(t, true), adminURL)
	for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Basic " + token, "Bearer " + token} {
		req := connect.NewRequest(&actionsyncv1.GetStatsRequest{})
		if auth != "" {
			req.Header().Set("Authorization", auth)
		}
		_, err := admin.GetStats(t.Context(), req)
		want := connect.CodeUnauthenticated
		if auth == "Bearer "+token {
			want = 0
		}
		if connect.CodeOf(err) != want && !(want == 0 && err == nil) {
			t.Errorf("Authorization %q: %v, want code %v", auth, err, want)
		}
	}

	out, err := command(t, nil, "stats", "--admin-url", adminURL, "--admin-token-file", tokenFile).CombinedOutput()
	if err != nil {
		t.Fatalf("actionsync stats: %v\n%s", err, out)
	}
	for _, want := range []string{"on memory: SERVING", "channels 1, subscriptions 0, streams 0", "board:stats  ", "1 of 1 matching channels listed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("actionsync stats printed no %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`board:stats\s+0\s+2\s+1\s+2\s+\d+\s+0`).Match(out) {
		t.Errorf("actionsync stats: want board:stats with 0 subscribers, head 2, history from 1, 2 actions, no snapshot:\n%s", out)
	}
	out, err = command(t, nil, "stats", "--admin-url", adminURL).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unauthenticated") {
		t.Errorf("actionsync stats without the token: %v\n%s", err, out)
	}
}

// TestHandler_probes: /healthz answers while the process serves; /readyz follows health.
func TestHandler_probes(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	svc, err := service.New(b, service.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(context.Background())
	h := newHealth()
	srv := httptest.NewServer(newHandler(svc, h, context.Background(), nil, false, nil))
	defer srv.Close()
	get := func(path string) int {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if l, r := get("/healthz"), get("/readyz"); l != 200 || r != 200 {
		t.Errorf("serving: /healthz %d, /readyz %d; want 200, 200", l, r)
	}
	h.setAvailable(false)
	if l, r := get("/healthz"), get("/readyz"); l != 200 || r != 503 {
		t.Errorf("broker unavailable: /healthz %d, /readyz %d; want 200, 503", l, r)
	}
	h.setAvailable(true)
	if r := get("/readyz"); r != 200 {
		t.Errorf("broker back: /readyz %d, want 200", r)
	}
	h.stop()
	h.setAvailable(true)
	if l, r := get("/healthz"), get("/readyz"); l != 200 || r != 503 {
		t.Errorf("shutting down: /healthz %d, /readyz %d; want 200, 503", l, r)
	}
}
