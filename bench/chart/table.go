package main

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// row is one figure of the results table: its key in "ours" and in the peer's line (""
// if the peer has none), how to print it, and the target it is checked against.
type row struct {
	label   string
	ours    string
	peer    string
	format  func(float64) string
	target  string // key in the line's targets, "" for none
	ratioOK bool   // print ours/peer
}

// rows lists the table's figures for the subscriber counts and K the run has.
func rows(r runLine) []row {
	var out []row
	for _, n := range counts(r.Ours, "tput_") {
		out = append(out, row{label: fmt.Sprintf("deliveries/s, %s subscribers", n), ours: "tput_" + n, peer: "tput_" + n, format: human, ratioOK: true})
	}
	for _, n := range counts(r.Ours, "srv_deliv_per_cpu_s_") {
		t := ""
		if n == "10" || n == "1000" {
			t = "srv_deliv_per_cpu_s_" + n
		}
		out = append(out, row{label: fmt.Sprintf("deliveries per server CPU-second, %s subscribers", n), ours: "srv_deliv_per_cpu_s_" + n, peer: "srv_deliv_per_cpu_s_" + n, format: human, target: t, ratioOK: true})
	}
	for _, n := range counts(r.Ours, "srv_deliv_per_cpu_s_") {
		if _, ok := r.Targets["x_peer_srv_deliv_per_cpu_s_"+n]; ok {
			out = append(out, row{label: fmt.Sprintf("deliveries per server CPU-second, %s subscribers, times the peer's", n), format: times, target: "x_peer_srv_deliv_per_cpu_s_" + n})
		}
	}
	for _, n := range counts(r.Ours, "srv_cpu_") {
		out = append(out, row{label: fmt.Sprintf("server CPU during tput, %s subscribers", n), ours: "srv_cpu_" + n, peer: "srv_cpu_" + n, format: pct})
		out = append(out, row{label: fmt.Sprintf("client CPU during tput, %s subscribers", n), ours: "cli_cpu_" + n, peer: "cli_cpu_" + n, format: pct})
	}
	for _, n := range counts(r.Ours, "actions_per_msg_") {
		out = append(out, row{label: fmt.Sprintf("actions per streamed response, %s subscribers", n), ours: "actions_per_msg_" + n, format: oneDecimal})
	}
	tool, _ := r.Ours["writes_tool"].(string)
	if tool == "" {
		tool = "strace"
	}
	for _, n := range counts(r.Ours, "writes_per_delivery_") {
		out = append(out, row{label: fmt.Sprintf("write(2) calls per delivery, %s subscribers (%s)", n, tool), ours: "writes_per_delivery_" + n, format: plain})
		out = append(out, row{label: fmt.Sprintf("read(2) calls per delivery, %s subscribers (%s)", n, tool), ours: "reads_per_delivery_" + n, format: plain})
		out = append(out, row{label: fmt.Sprintf("actions per streamed response while counting, %s subscribers", n), ours: "writes_actions_per_msg_" + n, format: oneDecimal})
	}
	for _, n := range counts(r.Ours, "p99_ms_") {
		rate := rateOf(r)
		for _, p := range []string{"p50", "p99", "max"} {
			t := ""
			if p == "p99" && (n == "100" || n == "1000") {
				t = "p99_ms_" + n
			}
			out = append(out, row{label: fmt.Sprintf("%s latency, %s actions/s to %s subscribers", p, rate, n), ours: p + "_ms_" + n, peer: p + "_ms_" + n, format: millis, target: t, ratioOK: true})
		}
		t := ""
		if n == "1000" {
			t = "rate_kept_pct_" + n
		}
		out = append(out, row{label: fmt.Sprintf("offered rate kept, %s actions/s to %s subscribers", rate, n), ours: "rate_kept_pct_" + n, format: pct, target: t})
		out = append(out, row{label: fmt.Sprintf("deliveries lost, %s actions/s to %s subscribers", rate, n), ours: "lat_lost_" + n, peer: "lat_lost_" + n, format: plain})
	}
	for _, n := range counts(r.Ours, "srv_cpu_lat_") {
		t := ""
		if n == "1000" {
			t = "11:srv_cpu_lat_1000"
		}
		out = append(out, row{label: fmt.Sprintf("server CPU, %s actions/s to %s subscribers", rateOf(r), n), ours: "srv_cpu_lat_" + n, peer: "srv_cpu_lat_" + n, format: pct, target: t, ratioOK: true})
		if _, ok := r.Targets["11:x_peer_srv_cpu_lat_"+n]; ok {
			out = append(out, row{label: fmt.Sprintf("server CPU, %s actions/s to %s subscribers, times the peer's", rateOf(r), n), format: times, target: "11:x_peer_srv_cpu_lat_" + n})
		}
	}
	if _, ok := r.Ours["boards_srv_deliv_per_cpu_s"]; ok {
		b := fmt.Sprintf("%v boards x %v, %v actions/s", r.Knobs["boards"], r.Knobs["per_board"], r.Knobs["boards_rate"])
		out = append(out,
			row{label: "deliveries per server CPU-second, " + b, ours: "boards_srv_deliv_per_cpu_s", peer: "boards_srv_deliv_per_cpu_s", format: human, target: "11:boards_srv_deliv_per_cpu_s", ratioOK: true},
			row{label: "p99 latency, " + b, ours: "boards_p99_ms", peer: "boards_p99_ms", format: millis, target: "11:boards_p99_ms", ratioOK: true},
			row{label: "server CPU, " + b, ours: "boards_server_cpu_pct", peer: "boards_server_cpu_pct", format: pct, ratioOK: true})
	}
	out = append(out, row{label: "server CPU per unary Dispatch of one action", ours: "dispatch_us_per_action", format: micros, target: "11:dispatch_us_per_action"})
	own := counts(r.Ours, "kib_per_idle_conn_")
	for i, k := range own {
		t := ""
		if i == len(own)-1 {
			t = "kib_per_idle_conn"
		}
		out = append(out, row{label: fmt.Sprintf("KiB per idle subscriber, own connection, K=%s", k), ours: "kib_per_idle_conn_" + k, peer: "kib_per_idle_conn_" + k, format: kib, target: t})
	}
	conns := "shared"
	if v, ok := num(r.Ours, "shared_conns"); ok {
		conns = fmt.Sprintf("%.0f shared", v)
	}
	shared := counts(r.Ours, "shared_kib_per_idle_stream_")
	for i, k := range shared {
		t := ""
		if i == len(shared)-1 {
			t = "shared_kib_per_idle_stream"
		}
		out = append(out, row{label: fmt.Sprintf("KiB per idle subscriber, %s connections, K=%s", conns, k), ours: "shared_kib_per_idle_stream_" + k, format: kib, target: t})
	}
	if _, ok := r.Targets["11:kib_per_idle_conn"]; ok {
		out = append(out, row{label: "KiB per idle subscriber, own connection, largest K (issue 11)", format: kib, target: "11:kib_per_idle_conn"})
	}
	out = append(out, row{label: "server RSS with no subscriber", ours: "server_rss_kib_0", peer: "server_rss_kib_0", format: mib})
	return out
}

// rateOf is the run's lat rate, actions/s.
func rateOf(r runLine) string {
	if v, ok := r.Knobs["rate"]; ok {
		return fmt.Sprint(v)
	}
	return "200"
}

// counts returns the suffixes after prefix among m's keys, numeric ones in numeric order.
func counts(m map[string]any, prefix string) []string {
	var out []string
	for k := range m {
		if s, ok := strings.CutPrefix(k, prefix); ok {
			if _, err := strconv.Atoi(s); err == nil {
				out = append(out, s)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := strconv.Atoi(out[i])
		b, _ := strconv.Atoi(out[j])
		return a < b
	})
	return out
}

// renderTable is the markdown results table of r.
func renderTable(r runLine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s at %s", orDash(r.Time), orDash(r.Git))
	if r.Host != "" {
		fmt.Fprintf(&b, " on %s", r.Host)
	}
	if len(r.Knobs) > 0 {
		keys := make([]string, 0, len(r.Knobs))
		for k := range r.Knobs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, fmt.Sprintf("%s=%v", k, r.Knobs[k]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(kv, " "))
	}
	b.WriteString(".")
	if len(r.Failed) > 0 {
		fmt.Fprintf(&b, " **Failed phases: %s.**", strings.Join(r.Failed, ", "))
	}
	if f, ok := r.Ours["foreign_pct_tries"].(map[string]any); ok && len(f) > 0 {
		worst, phase := 0.0, ""
		for k, v := range f {
			if a, ok := v.([]any); ok && len(a) == 2 {
				if x, ok := a[0].(float64); ok && x > worst {
					worst, phase = x, k
				}
			}
		}
		if worst > 0 {
			fmt.Fprintf(&b, " Most foreign load on the pinned cores: %.0f%% (%s).", worst, phase)
		}
	}
	b.WriteString("\n\n| figure | actionsync | Socket.IO peer | ours / peer | target | met |\n|---|--:|--:|--:|---|---|\n")
	for _, rw := range rows(r) {
		o, oOK := num(r.Ours, rw.ours)
		p, pOK := 0.0, false
		if rw.peer != "" && r.Peer != nil {
			p, pOK = num(r.Peer, rw.peer)
		}
		cells := []string{rw.label, "–", "–", "–", "", ""}
		switch {
		case oOK:
			cells[1] = rw.format(o)
		case rw.ours == "":
			if t, ok := r.Targets[rw.target]; ok {
				cells[1] = rw.format(t.Value)
			}
		}
		if pOK {
			cells[2] = rw.format(p)
		}
		if oOK && pOK && rw.ratioOK && p != 0 {
			cells[3] = times(o / p)
		}
		if t, ok := r.Targets[rw.target]; ok && rw.target != "" {
			cells[4] = t.Want
			cells[5] = map[bool]string{true: "yes", false: "**no**"}[t.Pass]
		}
		if cells[1] == "–" && cells[2] == "–" {
			continue
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// micros prints µs.
func micros(x float64) string { return fmt.Sprintf("%.1f µs", x) }

// human prints 1234567 as 1.23 M and 83456 as 83.5 k: three significant digits.
func human(x float64) string {
	unit := ""
	switch a := math.Abs(x); {
	case a >= 1e6:
		x, unit = x/1e6, " M"
	case a >= 1e3:
		x, unit = x/1e3, " k"
	}
	return sig3(x) + unit
}

// sig3 prints x with three significant digits, without an exponent.
func sig3(x float64) string {
	switch a := math.Abs(x); {
	case a == 0:
		return "0"
	case a >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}

func oneDecimal(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) }
func plain(x float64) string      { return strconv.FormatFloat(x, 'f', -1, 64) }
func pct(x float64) string        { return strconv.FormatFloat(x, 'f', 1, 64) + " %" }
func millis(x float64) string     { return strconv.FormatFloat(x, 'f', 2, 64) + " ms" }
func kib(x float64) string        { return strconv.FormatFloat(x, 'f', 1, 64) + " KiB" }
func mib(kib float64) string      { return strconv.FormatFloat(kib/1024, 'f', 1, 64) + " MiB" }
func times(x float64) string      { return strconv.FormatFloat(x, 'f', 2, 64) + "×" }
