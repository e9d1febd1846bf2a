package demo_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/actionsync/actionsync/web/demo"
)

func TestHandler(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(demo.Handler())
	t.Cleanup(srv.Close)
	tests := []struct {
		name, method, path string
		status             int
		ctype, contains    string
	}{
		{"index_at_root", http.MethodGet, "/", http.StatusOK, "text/html; charset=utf-8", `<script type="module" src="app.js">`},
		{"index_by_name", http.MethodGet, "/index.html", http.StatusOK, "text/html; charset=utf-8", `<div id="root">`},
		{"bundle", http.MethodGet, "/app.js", http.StatusOK, "text/javascript; charset=utf-8", "UPDATE_STAGE_TITLE"},
		{"style", http.MethodGet, "/style.css", http.StatusOK, "text/css; charset=utf-8", ".board"},
		{"service_worker", http.MethodGet, "/sw.js", http.StatusOK, "text/javascript; charset=utf-8", "actionsync-demo-shell"},
		{"service_worker_registration", http.MethodGet, "/register-sw.js", http.StatusOK, "text/javascript; charset=utf-8", `register("sw.js")`},
		{"head", http.MethodHead, "/", http.StatusOK, "text/html; charset=utf-8", ""},
		{"unknown_path", http.MethodGet, "/nope.js", http.StatusNotFound, "", ""},
		{"directory_escape", http.MethodGet, "/../embed.go", http.StatusNotFound, "", ""},
		{"post", http.MethodPost, "/", http.StatusMethodNotAllowed, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("%s %s: got status %d, want %d", tt.method, tt.path, resp.StatusCode, tt.status)
			}
			if tt.status != http.StatusOK {
				return
			}
			if got := resp.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type: got %q, want %q", got, tt.ctype)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control: got %q, want no-cache", got)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body does not contain %q", tt.contains)
			}
		})
	}
}

func TestHandler_revalidate(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(demo.Handler())
	t.Cleanup(srv.Close)
	get := func(etag string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/app.js", nil)
		if err != nil {
			t.Fatal(err)
		}
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	etag := get("").Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || len(etag) < 10 {
		t.Fatalf("ETag: got %q, want a strong quoted tag", etag)
	}
	if got := get(etag).StatusCode; got != http.StatusNotModified {
		t.Errorf("If-None-Match with the current tag: got %d, want 304", got)
	}
	if got := get(`"stale"`).StatusCode; got != http.StatusOK {
		t.Errorf("If-None-Match with another tag: got %d, want 200", got)
	}
}
