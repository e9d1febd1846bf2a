package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker/memory"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

// startServer runs the service in process the way cmd/actionsync wires it (memory
// broker, service handler, HTTP/1.1 and h2c) and returns its URL.
func startServer(t *testing.T) string {
	t.Helper()
	return startNodes(t, 1)[0].url
}

// node is one HTTP server in front of a shared service, and the requests it served
// per procedure.
type node struct {
	url   string
	mu    sync.Mutex
	calls map[string]int
}

func (n *node) count(procedure string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls[procedure]
}

// startNodes runs one service (memory broker) behind k HTTP servers: k nodes that share
// one order per channel, as JetStream nodes do, for the tool's multi-node mode.
func startNodes(t *testing.T, k int) []*node {
	t.Helper()
	b := memory.New(memory.Options{})
	svc, err := service.New(b, service.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(svc.Handler())
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	nodes := make([]*node, k)
	servers := make([]*httptest.Server, k)
	for i := range nodes {
		n := &node{calls: map[string]int{}}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.mu.Lock()
			n.calls[r.URL.Path]++
			n.mu.Unlock()
			mux.ServeHTTP(w, r)
		}))
		srv.Config.Protocols = &p
		srv.Start()
		n.url, nodes[i], servers[i] = srv.URL, n, srv
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown service: %v", err)
		}
		for _, srv := range servers {
			srv.Close()
		}
		if err := b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	return nodes
}

// runPhase runs the tool with args against url and returns its JSON line.
func runPhase(t *testing.T, url string, args ...string) map[string]any {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args = append([]string{"--url", url, "--server-pid", fmt.Sprint(os.Getpid())}, args...)
	err := run(t.Context(), args, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run %v: %v\nstderr:\n%s", args, err, stderr.String())
	}
	return decodeLine(t, stdout.Bytes())
}

func decodeLine(t *testing.T, b []byte) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines on stdout, want 1:\n%s", len(lines), b)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, b)
	}
	return m
}

// number returns m[key] as a float64, failing the test if it is not a number.
func number(t *testing.T, m map[string]any, key string) float64 {
	t.Helper()
	v, ok := m[key].(float64)
	if !ok {
		t.Fatalf("%s: got %v (%T), want a number", key, m[key], m[key])
	}
	return v
}

func wantZero(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if v := number(t, m, k); v != 0 {
			t.Errorf("%s: got %v, want 0", k, v)
		}
	}
}

var deliveryChecks = []string{"lost", "gaps", "dups", "reorders", "unexpected", "streams_ended", "violations", "errors"}

func TestRun_tput(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	tests := []struct {
		name string
		args []string
	}{
		{"connect_h2", []string{"--protocol", "connect-h2"}},
		{"connect_h1", []string{"--protocol", "connect-h1"}},
		{"grpc_h2", []string{"--protocol", "grpc-h2"}},
		{"shared_conns", []string{"--conns", "2"}},
		{"full_decode_gzip", []string{"--decode", "full", "--gzip"}},
		{"window_1", []string{"--window", "1"}},
		{"publish_sync", []string{"--publish", "sync"}},
		{"publish_sync_grpc", []string{"--publish", "sync", "--protocol", "grpc-h2"}},
		{"batch_dispatch", []string{"--batch", "16"}},
		{"batch_sync", []string{"--publish", "sync", "--batch", "16"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const n = 5
			args := append([]string{"--mode", "tput", "--n", fmt.Sprint(n), "--duration", "300ms", "--warmup", "100ms"}, tt.args...)
			m := runPhase(t, url, args...)
			wantZero(t, m, append(deliveryChecks, "undrained_actions")...)
			actions, total := number(t, m, "actions"), number(t, m, "deliveries_total")
			if actions < 1 || total != actions*n {
				t.Errorf("got %v deliveries of %v actions, want actions x %d > 0", total, actions, n)
			}
			if d, ps := number(t, m, "deliveries"), number(t, m, "deliveries_per_s"); d <= 0 || ps <= 0 || d > total {
				t.Errorf("got %v deliveries (%v/s) in the interval of %v in all, want 0 < interval <= all", d, ps, total)
			}
			if apm := number(t, m, "actions_per_msg"); apm < 1 {
				t.Errorf("actions_per_msg: got %v, want >= 1", apm)
			}
			if number(t, m, "server_cpu_pct") <= 0 || number(t, m, "srv_deliv_per_cpu_s") <= 0 {
				t.Errorf("got server CPU %v%%, %v deliveries per CPU-second; want both > 0", m["server_cpu_pct"], m["srv_deliv_per_cpu_s"])
			}
			if m["n"] != float64(n) || m["mode"] != "tput" {
				t.Errorf("got mode %v n %v, want tput %d", m["mode"], m["n"], n)
			}
		})
	}
}

func TestRun_lat(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	const n, rate = 5, 200
	m := runPhase(t, url, "--mode", "lat", "--n", fmt.Sprint(n), "--rate", fmt.Sprint(rate), "--duration", "500ms", "--warmup", "100ms")
	wantZero(t, m, deliveryChecks...)
	measured, samples := number(t, m, "actions_measured"), number(t, m, "samples")
	if measured < rate*0.5/2 || samples != measured*n {
		t.Errorf("got %v samples of %v measured actions, want actions x %d and about %d actions", samples, measured, n, rate/2)
	}
	p50, p99, maxMs := number(t, m, "p50_ms"), number(t, m, "p99_ms"), number(t, m, "max_ms")
	if !(p50 > 0 && p50 <= p99 && p99 <= number(t, m, "p999_ms") && number(t, m, "p999_ms") <= maxMs) {
		t.Errorf("got p50 %v, p99 %v, p99.9 %v, max %v ms; want 0 < p50 <= p99 <= p99.9 <= max", p50, p99, m["p999_ms"], maxMs)
	}
	if a := number(t, m, "achieved_rate"); a < rate/2 || a > rate*1.1 {
		t.Errorf("achieved_rate: got %v, want about %d", a, rate)
	}
	if total := number(t, m, "deliveries_total"); total != number(t, m, "actions")*n {
		t.Errorf("got %v deliveries of %v actions, want actions x %d", total, m["actions"], n)
	}
}

// TestRun_boards: --boards spreads the subscribers and the actions over channels; each
// action reaches only its board's subscribers, each of which gets its board's actions
// exactly once, in order.
func TestRun_boards(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	const n, boards, rate = 12, 4, 400
	m := runPhase(t, url, "--mode", "lat", "--n", fmt.Sprint(n), "--boards", fmt.Sprint(boards), "--rate", fmt.Sprint(rate), "--duration", "500ms", "--warmup", "100ms")
	wantZero(t, m, deliveryChecks...)
	if got := number(t, m, "boards"); got != boards {
		t.Errorf("boards: got %v, want %d", got, boards)
	}
	measured, samples := number(t, m, "actions_measured"), number(t, m, "samples")
	if measured < rate*0.5/2 || samples != measured*n/boards {
		t.Errorf("got %v samples of %v measured actions, want actions x %d subscribers per board", samples, measured, n/boards)
	}
	if total := number(t, m, "deliveries_total"); total != number(t, m, "actions")*n/boards {
		t.Errorf("got %v deliveries of %v actions, want actions x %d", total, m["actions"], n/boards)
	}
}

func TestRun_idle(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	for _, conns := range []int{0, 2} {
		t.Run(fmt.Sprint("conns_", conns), func(t *testing.T) {
			t.Parallel()
			m := runPhase(t, url, "--mode", "idle", "--k", "6,3", "--conns", fmt.Sprint(conns), "--rss-timeout", "1s")
			per := "kib_per_idle_conn_"
			if conns > 0 {
				per = "kib_per_idle_stream_"
			}
			for _, k := range []string{"server_rss_kib_0", "server_rss_kib_3", "server_rss_kib_6", per + "3", per + "6", "connect_ms_6"} {
				number(t, m, k)
			}
			rss0, rss6 := number(t, m, "server_rss_kib_0"), number(t, m, "server_rss_kib_6")
			if got, want := number(t, m, per+"6"), round3((rss6-rss0)/6); got != want {
				t.Errorf("%s6: got %v, want (rss_6 - rss_0)/6 = %v", per, got, want)
			}
			wantZero(t, m, "violations", "streams_ended")
		})
	}
}

func TestRun_spreadOverNodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		pub  string // the procedure the publisher calls
	}{
		{"tput_dispatch", []string{"--mode", "tput", "--duration", "300ms", "--warmup", "100ms"}, actionsyncv1connect.SyncServiceDispatchProcedure},
		{"tput_sync", []string{"--mode", "tput", "--publish", "sync", "--batch", "16", "--duration", "300ms", "--warmup", "100ms"}, actionsyncv1connect.SyncServiceSyncProcedure},
		{"lat", []string{"--mode", "lat", "--rate", "200", "--duration", "300ms", "--warmup", "100ms"}, actionsyncv1connect.SyncServiceDispatchProcedure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nodes := startNodes(t, 3)
			// A second "server process" whose CPU and RSS are summed with ours.
			other := exec.CommandContext(t.Context(), "sleep", "60")
			if err := other.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
			const n = 7 // subscribers 0..6 round-robin: 3 on node 0, 2 on nodes 1 and 2
			args := append([]string{
				"--url", nodes[0].url, "--sub-urls", nodes[0].url + "," + nodes[1].url + "," + nodes[2].url,
				"--n", fmt.Sprint(n), "--label", "nats-3nodes", "--server-pid", fmt.Sprintf("%d,%d", os.Getpid(), other.Process.Pid),
			}, tt.args...)
			var stdout, stderr bytes.Buffer
			if err := run(t.Context(), args, &stdout, &stderr); err != nil {
				t.Fatalf("run %v: %v\nstderr:\n%s", args, err, stderr.String())
			}
			if !strings.HasPrefix(stdout.String(), `{"label":"nats-3nodes",`) {
				t.Errorf("got %.60s..., want the line to start with the label", stdout.String())
			}
			m := decodeLine(t, stdout.Bytes())
			wantZero(t, m, deliveryChecks...)
			if got := number(t, m, "deliveries_total"); got != number(t, m, "actions")*n || got == 0 {
				t.Errorf("got %v deliveries of %v actions, want actions x %d > 0", got, m["actions"], n)
			}
			for i, want := range []int{3, 2, 2} {
				if got := nodes[i].count(actionsyncv1connect.SyncServiceSubscribeProcedure); got != want {
					t.Errorf("node %d: got %d subscribers, want %d", i, got, want)
				}
			}
			if nodes[0].count(tt.pub) == 0 {
				t.Errorf("node 0: got no %s call, want the publisher on --url", tt.pub)
			}
			for i := 1; i < 3; i++ {
				if got := nodes[i].count(tt.pub); got != 0 {
					t.Errorf("node %d: got %d %s calls, want the publisher on --url only", i, got, tt.pub)
				}
			}
			if number(t, m, "sub_nodes") != 3 || number(t, m, "server_procs") != 2 {
				t.Errorf("got sub_nodes %v, server_procs %v; want 3, 2", m["sub_nodes"], m["server_procs"])
			}
			if each, ok := m["server_cpu_pct_each"].([]any); !ok || len(each) != 2 {
				t.Errorf("server_cpu_pct_each: got %v, want one figure per server process", m["server_cpu_pct_each"])
			}
		})
	}
}

func TestRun_usage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown_mode", []string{"--mode", "fast"}, "--mode"},
		{"unknown_protocol", []string{"--protocol", "h3"}, "--protocol"},
		{"zero_subscribers", []string{"--n", "0"}, "--n"},
		{"h1_shared", []string{"--protocol", "connect-h1", "--conns", "2"}, "HTTP/1.1"},
		{"idle_without_pid", []string{"--mode", "idle"}, "--server-pid"},
		{"payload_below_fixed", []string{"--payload-bytes", fmt.Sprint(minPayloadBytes - 1)}, "--payload-bytes"},
		{"bad_k", []string{"--k", "10,x"}, "--k"},
		{"bad_duration", []string{"--duration", "soon"}, "duration"},
		{"tls_url", []string{"--url", "https://127.0.0.1:1"}, "--url"},
		{"summary_without_dir", []string{"--mode", "summary"}, "--dir"},
		{"compare_without_dir", []string{"--mode", "compare"}, "--dir"},
		{"tls_sub_url", []string{"--sub-urls", "http://127.0.0.1:1,https://127.0.0.1:2"}, "--sub-urls"},
		{"pid_twice", []string{"--server-pid", "12,12"}, "--server-pid"},
		{"pid_not_a_number", []string{"--server-pid", "12,x"}, "--server-pid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, &stdout, &stderr)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error()+stderr.String(), tt.want) {
				t.Fatalf("got %v (stderr %q), want a usage error naming %s", err, stderr.String(), tt.want)
			}
			if code := exitCode(err, &stderr); code != 2 {
				t.Errorf("exit code: got %d, want 2", code)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: got %q, want nothing", stdout.String())
			}
		})
	}
	if cfg, err := parseConfig([]string{"--payload-bytes", fmt.Sprint(minPayloadBytes)}, &bytes.Buffer{}); err != nil || cfg.payloadBytes != minPayloadBytes {
		t.Errorf("--payload-bytes %d: got %v, want accepted", minPayloadBytes, err)
	}
}

func TestRun_serverDown(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"--url", url, "--mode", "tput", "--n", "2", "--duration", "100ms"}, &stdout, &stderr)
	if err == nil || errors.Is(err, errUsage) {
		t.Fatalf("got %v, want a connection error", err)
	}
	if code := exitCode(err, &stderr); code != 1 {
		t.Errorf("exit code: got %d, want 1", code)
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("meta.json", `{"time":"2026-11-26T22:00:00Z","git":"abc123"}`)
	write("ours/tput_10.json", `{"mode":"tput","deliveries_per_s":600000,"server_cpu_pct":100,"client_cpu_pct":80,"srv_core_busy_pct":100,"cli_core_busy_pct":81,"srv_deliv_per_cpu_s":600000,"actions_per_msg":7.5}`)
	write("ours/tput_1000.json", `{"mode":"tput","deliveries_per_s":900000,"server_cpu_pct":100,"srv_deliv_per_cpu_s":900000}`)
	write("ours/lat_100.json", `{"mode":"lat","p50_ms":0.7,"p99_ms":2.5,"max_ms":5,"lost":0,"rate_kept_pct":100,"server_cpu_pct":15,"srv_deliv_per_cpu_s":133333}`)
	write("ours/lat_1000.json", `{"mode":"lat","p50_ms":20,"p99_ms":70,"max_ms":130,"lost":0,"rate_kept_pct":99.5}`)
	write("ours/idle.json", `{"mode":"idle","server_rss_kib_0":12000,"server_rss_kib_2000":110000,"kib_per_idle_conn_2000":49,"server_rss_kib_5000":250000,"kib_per_idle_conn_5000":47.6}`)
	write("ours/idle_shared.json", `{"mode":"idle","conns":50,"server_rss_kib_0":12000,"server_rss_kib_5000":90000,"kib_per_idle_stream_5000":15.6}`)
	write("ours/writes_1000.json", `{"tool":"perf","writes_per_delivery":0.058,"reads_per_delivery":0.133,"actions_per_msg":37.5}`)
	write("ours/foreign.txt", "tput_10 3 1\nlat_100 25 3")
	write("ours/boards.json", `{"mode":"lat","n":4000,"rate":2000,"boards":1000,"p50_ms":0.3,"p99_ms":12.5,"server_cpu_pct":30,"srv_deliv_per_cpu_s":26000,"rate_kept_pct":100,"violations":0,"protocol":"connect-h2"}`)
	write("ours/dispatch.json", `{"mode":"lat","n":0,"rate":2000,"srv_cpu_us_per_action":55.5,"dispatch_p50_ms":0.1}`)
	write("peer.json", `{"peer":"socket.io 4.8.4","tput_10":70000,"srv_deliv_per_cpu_s_10":75000,"tput_1000":80000,"srv_deliv_per_cpu_s_1000":82000,"p99_ms_100":8,"srv_cpu_lat_100":20}`)
	write("peer_boards.json", `{"mode":"boards","deliveries_per_server_cpu_s":40000,"p99_ms":2.5}`)

	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"--mode", "summary", "--dir", dir}, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(stdout.String())
	if !strings.Contains(line, `"want":">= 500000"`) || !strings.HasSuffix(line, `"failed_phases":[]}`) {
		t.Errorf("got %s, want targets with unescaped >= and an empty failed_phases list", line)
	}
	if !strings.HasPrefix(line, `{"time":"2026-11-26T22:00:00Z","git":"abc123","ours":{"tput_10":600000,`) {
		t.Errorf("got %s, want meta first, then ours starting with tput_10", line)
	}
	var got struct {
		Ours    map[string]any `json:"ours"`
		Peer    map[string]any `json:"peer"`
		Ratios  map[string]float64
		Targets map[string]struct {
			Value float64
			Pass  bool
		}
		Targets11 map[string]struct {
			Value float64
			Pass  bool
		} `json:"targets_11"`
	}
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"core_busy_10": []any{100.0, 81.0}, "p99_ms_1000": 70.0, "kib_per_idle_conn_5000": 47.6,
		"kib_per_idle_conn_marginal_2000_5000": round3(140000.0 / 3000), "shared_kib_per_idle_stream_5000": 15.6,
		"boards_srv_deliv_per_cpu_s": 26000.0, "boards_p99_ms": 12.5, "dispatch_us_per_action": 55.5, "srv_deliv_per_cpu_s_lat_100": 133333.0,
		"shared_conns": 50.0, "writes_per_delivery_1000": 0.058, "reads_per_delivery_1000": 0.133, "writes_tool": "perf", "writes_actions_per_msg_1000": 37.5, "foreign_pct_tries": map[string]any{"tput_10": []any{3.0, 1.0}, "lat_100": []any{25.0, 3.0}},
	} {
		if g, _ := json.Marshal(got.Ours[k]); string(g) != mustJSON(t, want) {
			t.Errorf("ours.%s: got %s, want %s", k, g, mustJSON(t, want))
		}
	}
	if got.Peer["peer"] != "socket.io 4.8.4" {
		t.Errorf("peer: got %v, want the peer's line", got.Peer)
	}
	for k, want := range map[string]float64{"tput_10": 8.571, "srv_deliv_per_cpu_s_10": 8, "srv_deliv_per_cpu_s_1000": 10.976, "p99_ms_100": 0.313,
		"boards_srv_deliv_per_cpu_s": 0.65, "boards_p99_ms": 5, "srv_cpu_lat_100": 0.75} {
		if got.Ratios[k] != want {
			t.Errorf("ratios.%s: got %v, want %v", k, got.Ratios[k], want)
		}
	}
	for k, want := range map[string]bool{
		"srv_deliv_per_cpu_s_1000": false, "srv_deliv_per_cpu_s_10": true, "x_peer_srv_deliv_per_cpu_s_10": false,
		"x_peer_srv_deliv_per_cpu_s_1000": true, "rate_kept_pct_1000": true, "p99_ms_1000": false, "p99_ms_100": true,
		"kib_per_idle_conn": false, "shared_kib_per_idle_stream": true,
	} {
		tg, ok := got.Targets[k]
		if !ok || tg.Pass != want {
			t.Errorf("targets.%s: got %+v (present %v), want pass=%v", k, tg, ok, want)
		}
	}
	for k, want := range map[string]bool{
		"boards_srv_deliv_per_cpu_s": false, "boards_p99_ms": true, "p99_ms_100": true, "x_peer_srv_cpu_lat_100": true,
		"p99_ms_1000": false, "dispatch_us_per_action": false, "kib_per_idle_conn": false,
	} {
		tg, ok := got.Targets11[k]
		if !ok || tg.Pass != want {
			t.Errorf("targets_11.%s: got %+v (present %v), want pass=%v", k, tg, ok, want)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
