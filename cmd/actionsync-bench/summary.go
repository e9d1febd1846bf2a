package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The layout of a bench/run.sh result directory, as summarize reads it:
//
//	meta.json         {"time":…, "git":…, "knobs":{…}, …}: copied first into the line
//	ours/PHASE.json   one actionsync-bench line per phase: tput_N, lat_N, idle, idle_shared,
//	                  boards (many small boards) and dispatch (lat with no subscriber)
//	ours/writes_N.json {"tool":…, "writes_per_delivery":…, …}: from strace or perf (WRITES)
//	ours/foreign.txt  "PHASE FOREIGN_PCT TRIES" per phase
//	failed.txt        one failed phase per line (absent: none failed)
//	peer.json         the Socket.IO peer's final line (absent: peer skipped)
//	peer_boards.json  the peer's bench.js --mode boards line (absent: skipped)
const (
	metaFile       = "meta.json"
	oursDir        = "ours"
	peerFile       = "peer.json"
	peerBoardsFile = "peer_boards.json"
	foreignFile    = "foreign.txt"
	failedFile     = "failed.txt"
)

// Targets of issue 4, checked by summarize.
const (
	targetDelivPerCPU1000 = 1_000_000 // deliveries per server CPU-second, 1,000 subscribers
	targetDelivPerCPU10   = 500_000   // the same, 10 subscribers
	targetPeerRatio       = 10        // times the peer's deliveries per server CPU-second
	targetRateKeptPct     = 95        // % of 200 actions/s kept with 1,000 subscribers
	targetP99Ms1000       = 60        // p99 ms at 200 actions/s to 1,000 subscribers
	targetP99Ms100        = 3         // p99 ms at 200 actions/s to 100 subscribers
	targetKiBOwnConn      = 40        // KiB per idle subscriber on its own HTTP/2 connection
	targetKiBShared       = 16        // KiB per idle subscriber sharing connections
)

// Targets of issue 11 (many small boards, unbatched messages), checked by summarize.
const (
	targetBoardsDelivPerCPU = 30_000 // deliveries per server CPU-second, 1,000 boards x 4
	targetBoardsP99Ms       = 20     // p99 ms, the same
	targetLat100P99Ms       = 5      // p99 ms at 200 actions/s to 100 subscribers
	targetLat1000CPUPct     = 70     // server core busy % at 200 actions/s to 1,000
	targetDispatchUs        = 40     // µs of server CPU per unary Dispatch of one action
	targetKiBOwnConn11      = 32     // KiB per idle subscriber on its own connection
)

var phaseName = regexp.MustCompile(`^(tput|lat|writes)_(\d+)$`)

// summarize prints the final line of a run: our figures flattened with the peer's key
// names, the peer's line, ours/peer ratios, and the targets with pass/fail.
func summarize(cfg config, stdout io.Writer) error {
	dir := cfg.dir
	out := newResult()
	meta := newResult()
	if err := readObject(filepath.Join(dir, metaFile), meta); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, k := range meta.keys {
		out.set(k, meta.vals[k])
	}
	ours, err := flattenOurs(filepath.Join(dir, oursDir))
	if err != nil {
		return err
	}
	out.set("ours", ours)
	var peer map[string]any
	peerLine, err := os.ReadFile(filepath.Join(dir, peerFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		out.set("peer", nil)
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(bytes.TrimSpace(peerLine), &peer); err != nil {
			return fmt.Errorf("read %s: %w", peerFile, err)
		}
		out.set("peer", json.RawMessage(bytes.TrimSpace(peerLine)))
	}
	peerBoards := newResult()
	if err := readObject(filepath.Join(dir, peerBoardsFile), peerBoards); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(peerBoards.keys) > 0 {
		out.set("peer_boards", peerBoards)
		if peer == nil {
			peer = map[string]any{}
		}
		// The peer's figures under our boards_ names, for ratios and targets.
		peer["boards_srv_deliv_per_cpu_s"] = peerBoards.get("deliveries_per_server_cpu_s")
		peer["boards_p99_ms"] = peerBoards.get("p99_ms")
	}
	out.set("ratios", ratios(ours, peer))
	out.set("targets", targets(ours, peer))
	out.set("targets_11", targets11(ours, peer))
	return writeFinalLine(stdout, dir, out)
}

// writeFinalLine adds the run's failed phases (dir's failedFile; none if it is missing)
// to out and writes it to w as one line of JSON.
func writeFinalLine(w io.Writer, dir string, out *result) error {
	failed, err := readLines(filepath.Join(dir, failedFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if failed == nil {
		failed = []string{}
	}
	out.set("failed_phases", failed)
	line, err := out.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", line)
	return err
}

// flattenOurs reads the phase results into one object with the peer's key names
// (tput_N, srv_cpu_N, …, p99_ms_N, server_rss_kib_K, kib_per_idle_conn_K) plus ours.
func flattenOurs(dir string) (*result, error) {
	out := newResult()
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	// tput by N, then lat by N, then the rest, so that the line reads like the peer's.
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(phaseSortKey(a), phaseSortKey(b)) })
	for _, path := range names {
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		r := newResult()
		if err := readObject(path, r); err != nil {
			return nil, err
		}
		m := phaseName.FindStringSubmatch(name)
		switch {
		case m != nil && m[1] == "tput":
			n := m[2]
			out.set("tput_"+n, r.get("deliveries_per_s"))
			out.set("srv_cpu_"+n, r.get("server_cpu_pct"))
			out.set("cli_cpu_"+n, r.get("client_cpu_pct"))
			out.set("core_busy_"+n, []any{r.get("srv_core_busy_pct"), r.get("cli_core_busy_pct")})
			out.set("srv_deliv_per_cpu_s_"+n, r.get("srv_deliv_per_cpu_s"))
			out.set("actions_per_msg_"+n, r.get("actions_per_msg"))
		case m != nil && m[1] == "lat":
			n := m[2]
			for _, k := range []string{"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"} {
				out.set(k+"_"+n, r.get(k))
			}
			out.set("lat_lost_"+n, r.get("lost"))
			out.set("srv_cpu_lat_"+n, r.get("server_cpu_pct"))
			out.set("cli_cpu_lat_"+n, r.get("client_cpu_pct"))
			out.set("achieved_rate_"+n, r.get("achieved_rate"))
			out.set("rate_kept_pct_"+n, r.get("rate_kept_pct"))
			out.set("dispatch_p99_ms_"+n, r.get("dispatch_p99_ms"))
			out.set("srv_deliv_per_cpu_s_lat_"+n, r.get("srv_deliv_per_cpu_s"))
		case m != nil && m[1] == "writes":
			out.set("writes_per_delivery_"+m[2], r.get("writes_per_delivery"))
			if v := r.get("reads_per_delivery"); v != nil {
				out.set("reads_per_delivery_"+m[2], v)
			}
			out.set("writes_actions_per_msg_"+m[2], r.get("actions_per_msg"))
			out.set("writes_tool", r.get("tool"))
		case name == "boards":
			out.set("boards", r.get("boards"))
			out.set("boards_n", r.get("n"))
			out.set("boards_rate", r.get("rate"))
			out.set("boards_protocol", r.get("protocol"))
			out.set("boards_srv_deliv_per_cpu_s", r.get("srv_deliv_per_cpu_s"))
			out.set("boards_server_cpu_pct", r.get("server_cpu_pct"))
			out.set("boards_p50_ms", r.get("p50_ms"))
			out.set("boards_p99_ms", r.get("p99_ms"))
			out.set("boards_rate_kept_pct", r.get("rate_kept_pct"))
			out.set("boards_violations", r.get("violations"))
		case name == "dispatch":
			out.set("dispatch_rate", r.get("rate"))
			out.set("dispatch_us_per_action", r.get("srv_cpu_us_per_action"))
			out.set("dispatch_p50_ms", r.get("dispatch_p50_ms"))
		case name == "idle" || name == "idle_shared":
			prefix := ""
			if name == "idle_shared" {
				prefix = "shared_"
				out.set("shared_conns", r.get("conns"))
			}
			for _, k := range r.keys {
				if strings.HasPrefix(k, "server_rss_kib_") || strings.HasPrefix(k, "kib_per_idle_") {
					out.set(prefix+k, r.get(k))
				}
			}
			setMarginal(out, r, prefix)
		}
	}
	foreign, err := readLines(filepath.Join(dir, foreignFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ft := newResult()
	for _, l := range foreign {
		f := strings.Fields(l)
		if len(f) == 3 {
			a, _ := strconv.Atoi(f[1])
			b, _ := strconv.Atoi(f[2])
			ft.set(f[0], []any{a, b})
		}
	}
	out.set("foreign_pct_tries", ft)
	return out, nil
}

func phaseSortKey(path string) string {
	name := strings.TrimSuffix(filepath.Base(path), ".json")
	if m := phaseName.FindStringSubmatch(name); m != nil {
		order := map[string]string{"tput": "0", "lat": "1", "writes": "2"}[m[1]]
		return fmt.Sprintf("%s%012s", order, m[2])
	}
	return "3" + name
}

// setMarginal adds the peer's kib_per_idle_conn_marginal_A_B between the last two K.
func setMarginal(out, r *result, prefix string) {
	var ks []int
	for _, k := range r.keys {
		if s, ok := strings.CutPrefix(k, "server_rss_kib_"); ok {
			if n, err := strconv.Atoi(s); err == nil && n > 0 {
				ks = append(ks, n)
			}
		}
	}
	slices.Sort(ks)
	if len(ks) < 2 {
		return
	}
	a, b := ks[len(ks)-2], ks[len(ks)-1]
	ra, oka := num(r.get(fmt.Sprint("server_rss_kib_", a)))
	rb, okb := num(r.get(fmt.Sprint("server_rss_kib_", b)))
	if oka && okb {
		out.set(fmt.Sprintf("%skib_per_idle_conn_marginal_%d_%d", prefix, a, b), round3((rb-ra)/float64(b-a)))
	}
}

// ratios are ours/peer for every figure both have: tput_N, srv_deliv_per_cpu_s_N, the
// boards figures, and the latency percentiles and server CPU % at a fixed rate (below 1
// is better for those).
func ratios(ours *result, peer map[string]any) *result {
	out := newResult()
	if peer == nil {
		return out
	}
	for _, k := range ours.keys {
		if !(strings.HasPrefix(k, "tput_") || strings.HasPrefix(k, "srv_deliv_per_cpu_s_") ||
			strings.HasPrefix(k, "p50_ms_") || strings.HasPrefix(k, "p99_ms_") || strings.HasPrefix(k, "max_ms_") ||
			strings.HasPrefix(k, "srv_cpu_lat_") || strings.HasPrefix(k, "boards_srv_deliv") || k == "boards_p99_ms") {
			continue
		}
		o, ok1 := num(ours.get(k))
		p, ok2 := num(peer[k])
		if ok1 && ok2 && p != 0 {
			out.set(k, round3(o/p))
		}
	}
	return out
}

// targets checks the targets against the figures present.
func targets(ours *result, peer map[string]any) *result {
	out := newResult()
	check := func(name string, v any, want string, pass func(float64) bool) {
		x, ok := num(v)
		if !ok {
			return
		}
		out.set(name, newResult().set("value", x).set("want", want).set("pass", pass(x)))
	}
	atLeast := func(t float64) func(float64) bool { return func(x float64) bool { return x >= t } }
	atMost := func(t float64) func(float64) bool { return func(x float64) bool { return x <= t } }
	check("srv_deliv_per_cpu_s_1000", ours.get("srv_deliv_per_cpu_s_1000"), ">= 1000000", atLeast(targetDelivPerCPU1000))
	check("srv_deliv_per_cpu_s_10", ours.get("srv_deliv_per_cpu_s_10"), ">= 500000", atLeast(targetDelivPerCPU10))
	if peer != nil {
		for _, k := range ours.keys {
			if n, ok := strings.CutPrefix(k, "srv_deliv_per_cpu_s_"); ok {
				o, ok1 := num(ours.get(k))
				p, ok2 := num(peer[k])
				if ok1 && ok2 && p > 0 {
					check("x_peer_srv_deliv_per_cpu_s_"+n, round3(o/p), ">= 10", atLeast(targetPeerRatio))
				}
			}
		}
	}
	check("rate_kept_pct_1000", ours.get("rate_kept_pct_1000"), ">= 95", atLeast(targetRateKeptPct))
	check("p99_ms_1000", ours.get("p99_ms_1000"), "<= 60", atMost(targetP99Ms1000))
	check("p99_ms_100", ours.get("p99_ms_100"), "<= 3", atMost(targetP99Ms100))
	check("kib_per_idle_conn", lastK(ours, "kib_per_idle_conn_"), "<= 40", atMost(targetKiBOwnConn))
	check("shared_kib_per_idle_stream", lastK(ours, "shared_kib_per_idle_stream_"), "<= 16", atMost(targetKiBShared))
	return out
}

// targets11 checks issue 11's targets (unbatched messages, many small boards).
func targets11(ours *result, peer map[string]any) *result {
	out := newResult()
	check := func(name string, v any, want string, pass bool) {
		if x, ok := num(v); ok {
			out.set(name, newResult().set("value", x).set("want", want).set("pass", pass))
		}
	}
	val := func(k string) float64 { x, _ := num(ours.get(k)); return x }
	check("boards_srv_deliv_per_cpu_s", ours.get("boards_srv_deliv_per_cpu_s"), ">= 30000", val("boards_srv_deliv_per_cpu_s") >= targetBoardsDelivPerCPU)
	check("boards_p99_ms", ours.get("boards_p99_ms"), "<= 20", val("boards_p99_ms") <= targetBoardsP99Ms)
	check("p99_ms_100", ours.get("p99_ms_100"), "<= 5", val("p99_ms_100") <= targetLat100P99Ms)
	if p, ok := num(peer["srv_cpu_lat_100"]); ok && p > 0 {
		// The same workload on both: less CPU is more deliveries per CPU-second.
		r := round3(val("srv_cpu_lat_100") / p)
		check("x_peer_srv_cpu_lat_100", r, "<= 1", r <= 1)
	}
	check("srv_cpu_lat_1000", ours.get("srv_cpu_lat_1000"), "< 70", val("srv_cpu_lat_1000") < targetLat1000CPUPct)
	check("rate_kept_pct_1000", ours.get("rate_kept_pct_1000"), ">= 95", val("rate_kept_pct_1000") >= targetRateKeptPct)
	check("p99_ms_1000", ours.get("p99_ms_1000"), "<= 60", val("p99_ms_1000") <= targetP99Ms1000)
	check("dispatch_us_per_action", ours.get("dispatch_us_per_action"), "<= 40", val("dispatch_us_per_action") <= targetDispatchUs)
	k := lastK(ours, "kib_per_idle_conn_")
	kv, _ := num(k)
	check("kib_per_idle_conn", k, "<= 32", kv <= targetKiBOwnConn11)
	return out
}

// lastK returns the figure prefix+K for the largest K present.
func lastK(r *result, prefix string) any {
	best, val := -1, any(nil)
	for _, k := range r.keys {
		if s, ok := strings.CutPrefix(k, prefix); ok {
			if n, err := strconv.Atoi(s); err == nil && n > best {
				best, val = n, r.get(k)
			}
		}
	}
	return val
}

func num(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// readObject reads one JSON object (the first line of path) into r, keeping key order.
func readObject(path string, r *result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("read %s: want a JSON object", path)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		key, _ := t.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("read %s: %s: %w", path, key, err)
		}
		r.set(key, v)
	}
	return nil
}

// readLines returns the non-empty lines of path.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
