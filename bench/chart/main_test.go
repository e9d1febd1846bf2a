package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sampleLine = `{"time":"2026-11-26T22:00:00Z","git":"abc123","host":"AMD EPYC","knobs":{"duration":6,"rate":200,"window":64},` +
	`"ours":{"tput_10":600000,"srv_cpu_10":99.5,"cli_cpu_10":80,"srv_deliv_per_cpu_s_10":603015,"actions_per_msg_10":7.8,` +
	`"tput_100":580000,"srv_deliv_per_cpu_s_100":583000,"tput_1000":840000,"srv_deliv_per_cpu_s_1000":857000,` +
	`"p50_ms_100":0.68,"p99_ms_100":2.29,"max_ms_100":5,"lat_lost_100":0,"rate_kept_pct_100":100,` +
	`"p50_ms_1000":22.8,"p99_ms_1000":76.5,"max_ms_1000":133,"lat_lost_1000":0,"rate_kept_pct_1000":100,` +
	`"server_rss_kib_0":12348,"kib_per_idle_conn_2000":50.79,"kib_per_idle_conn_5000":48.57,"kib_per_idle_conn_marginal_2000_5000":47.1,` +
	`"shared_conns":50,"shared_kib_per_idle_stream_5000":21.73,"writes_per_delivery_1000":0.031,"writes_tool":"strace","foreign_pct_tries":{"tput_10":[18,3]}},` +
	`"peer":{"peer":"socket.io 4.8.4","tput_10":70000,"srv_deliv_per_cpu_s_10":74000,"tput_1000":82000,"srv_deliv_per_cpu_s_1000":84000,"p99_ms_100":8.6,"kib_per_idle_conn_5000":18.47,"server_rss_kib_0":55468},` +
	`"ratios":{"tput_10":8.571},` +
	`"targets":{"srv_deliv_per_cpu_s_1000":{"value":857000,"want":">= 1000000","pass":false},"srv_deliv_per_cpu_s_10":{"value":603015,"want":">= 500000","pass":true},` +
	`"x_peer_srv_deliv_per_cpu_s_10":{"value":8.149,"want":">= 10","pass":false},"p99_ms_100":{"value":2.29,"want":"<= 3","pass":true},` +
	`"kib_per_idle_conn":{"value":48.57,"want":"<= 40","pass":false},"shared_kib_per_idle_stream":{"value":21.73,"want":"<= 16","pass":false}},` +
	`"failed_phases":[]}`

func writeHistory(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "results.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRun_svg(t *testing.T) {
	t.Parallel()
	in := writeHistory(t, `{"ours":{"tput_10":1}}`, sampleLine)
	out := filepath.Join(t.TempDir(), "chart.svg")
	if err := run([]string{"-in", in, "-out", out}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// Well-formed XML with an svg root.
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, b)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("root element: got %q, want svg", root)
	}
	svg := string(b)
	for _, want := range []string{
		"Deliveries per second", "Deliveries per server CPU-second", "p99 latency, 100 subs", "p99 latency, 1000 subs",
		">600 k<", ">70.0 k<", ">857 k<", ">2.29 ms<", ">8.60 ms<", "socket.io 4.8.4", "abc123", "n/a",
	} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	// Three targets drawn in the panels (10 and 1,000 subs per CPU-second, p99 at 100 and
	// 1,000 subs) plus the legend's sample.
	if got := strings.Count(svg, `stroke="`+targetColour+`"`); got != 5 {
		t.Errorf("target lines: got %d, want 5 (4 targets + legend)", got)
	}
}

func TestRun_table(t *testing.T) {
	t.Parallel()
	in := writeHistory(t, sampleLine)
	var out bytes.Buffer
	if err := run([]string{"-in", in, "-table"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{
		"Run of 2026-11-26T22:00:00Z at abc123 on AMD EPYC (duration=6 rate=200 window=64).",
		"Most foreign load on the pinned cores: 18% (tput_10).",
		"| deliveries/s, 10 subscribers | 600 k | 70.0 k | 8.57× |  |  |",
		"| deliveries per server CPU-second, 1000 subscribers | 857 k | 84.0 k | 10.20× | >= 1000000 | **no** |",
		"| deliveries per server CPU-second, 10 subscribers | 603 k | 74.0 k | 8.15× | >= 500000 | yes |",
		"| deliveries per server CPU-second, 10 subscribers, times the peer's | 8.15× | – | – | >= 10 | **no** |",
		"| p99 latency, 200 actions/s to 100 subscribers | 2.29 ms | 8.60 ms | 0.27× | <= 3 | yes |",
		"| KiB per idle subscriber, own connection, K=5000 | 48.6 KiB | 18.5 KiB | – | <= 40 | **no** |",
		"| KiB per idle subscriber, 50 shared connections, K=5000 | 21.7 KiB | – | – | <= 16 | **no** |",
		"| write(2) calls per delivery, 1000 subscribers (strace) | 0.031 | – | – |  |  |",
		"| server RSS with no subscriber | 12.1 MiB | 54.2 MiB | – |  |  |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q\ngot:\n%s", want, table)
		}
	}
	if strings.Contains(table, "marginal") {
		t.Errorf("table has a row per marginal figure:\n%s", table)
	}
}

func TestRun_markdown(t *testing.T) {
	t.Parallel()
	in := writeHistory(t, sampleLine)
	md := filepath.Join(t.TempDir(), "doc.md")
	doc := "# Bench\n\nbefore\n" + beginMarker + "\nold table\n" + endMarker + "\nafter\n"
	if err := os.WriteFile(md, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := run([]string{"-in", in, "-md", md}, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(md)
	got := string(b)
	if strings.Contains(got, "old table") || !strings.HasPrefix(got, "# Bench\n\nbefore\n"+beginMarker+"\nRun of ") ||
		!strings.HasSuffix(got, "|\n"+endMarker+"\nafter\n") || strings.Count(got, "| figure |") != 1 {
		t.Errorf("got:\n%s", got)
	}

	noMarkers := filepath.Join(t.TempDir(), "plain.md")
	if err := os.WriteFile(noMarkers, []byte("no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"-in", in, "-md", noMarkers}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), beginMarker) {
		t.Errorf("no markers: got %v, want an error naming the markers", err)
	}
}

func TestRun_errors(t *testing.T) {
	t.Parallel()
	empty := writeHistory(t)
	bad := writeHistory(t, `{"ours":`)
	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"nothing_to_do", []string{"-in", empty}, true, "nothing to do"},
		{"unknown_flag", []string{"-colour"}, true, "colour"},
		{"empty_history", []string{"-in", empty, "-table"}, false, "no run"},
		{"bad_line", []string{"-in", bad, "-table"}, false, "last line"},
		{"missing_file", []string{"-in", filepath.Join(t.TempDir(), "none"), "-table"}, false, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run(tt.args, io.Discard, io.Discard)
			if err == nil || errors.Is(err, errUsage) != tt.usage || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error (usage %v) containing %q", err, tt.usage, tt.want)
			}
		})
	}
}

func TestNiceScale(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ hi, step, top float64 }{
		{857000, 500000, 1000000}, {1000000, 500000, 1000000}, {8.6, 5, 10}, {76.5, 20, 80}, {0, 1, 4}, {3, 1, 3},
	} {
		step, top := niceScale(tt.hi)
		if step != tt.step || top != tt.top {
			t.Errorf("niceScale(%v): got %v, %v; want %v, %v", tt.hi, step, top, tt.step, tt.top)
		}
	}
}

// TestRun_table_issue11 checks the rows of issue 11's phases: boards beside the peer's
// boards line, the Dispatch cost, and targets_11.
func TestRun_table_issue11(t *testing.T) {
	t.Parallel()
	line := `{"time":"T","git":"g","knobs":{"boards":1000,"per_board":4,"boards_rate":2000},` +
		`"ours":{"boards_srv_deliv_per_cpu_s":26000,"boards_p99_ms":12.5,"boards_server_cpu_pct":30.8,"dispatch_us_per_action":75.5,"srv_cpu_lat_100":15},` +
		`"peer":{"srv_cpu_lat_100":20},"peer_boards":{"deliveries_per_server_cpu_s":40000,"p99_ms":2.5,"server_core_util":0.2},` +
		`"targets_11":{"boards_srv_deliv_per_cpu_s":{"value":26000,"want":">= 30000","pass":false},"dispatch_us_per_action":{"value":75.5,"want":"<= 40","pass":false},` +
		`"x_peer_srv_cpu_lat_100":{"value":0.75,"want":"<= 1","pass":true},"kib_per_idle_conn":{"value":49.5,"want":"<= 32","pass":false}}}`
	var out bytes.Buffer
	if err := run([]string{"-in", writeHistory(t, line), "-table"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| deliveries per server CPU-second, 1000 boards x 4, 2000 actions/s | 26.0 k | 40.0 k | 0.65× | >= 30000 | **no** |",
		"| p99 latency, 1000 boards x 4, 2000 actions/s | 12.50 ms | 2.50 ms | 5.00× |  |  |",
		"| server CPU, 1000 boards x 4, 2000 actions/s | 30.8 % | 20.0 % | 1.54× |  |  |",
		"| server CPU per unary Dispatch of one action | 75.5 µs | – | – | <= 40 | **no** |",
		"| server CPU, 200 actions/s to 100 subscribers, times the peer's | 0.75× | – | – | <= 1 | yes |",
		"| KiB per idle subscriber, own connection, largest K (issue 11) | 49.5 KiB | – | – | <= 32 | **no** |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q\ngot:\n%s", want, out.String())
		}
	}
}
