// Command chart turns the latest run of bench/run.sh (the last line of
// bench/results.jsonl) into an SVG bar chart of actionsync against the Socket.IO peer,
// and into the markdown results table of docs/benchmarks.md. It has no dependencies
// beyond the standard library.
//
//	go run ./bench/chart -in bench/results.jsonl -out docs/benchmarks.svg
//	go run ./bench/chart -table                      # print the markdown table
//	go run ./bench/chart -out docs/benchmarks.svg -md docs/benchmarks.md
//
// -md rewrites the part of the file between the lines "<!-- bench-results:begin -->" and
// "<!-- bench-results:end -->" with the table, so that no figure is typed by hand.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// Markers around the generated table in -md files.
const (
	beginMarker = "<!-- bench-results:begin -->"
	endMarker   = "<!-- bench-results:end -->"
)

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "bench/results.jsonl", "results history, one run per line; the last line is charted")
	out := fs.String("out", "", "write the SVG chart to this file")
	table := fs.Bool("table", false, "print the markdown results table on stdout")
	md := fs.String("md", "", "replace the table between the bench-results markers of this markdown file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *out == "" && !*table && *md == "" {
		return fmt.Errorf("%w: nothing to do: give -out, -table or -md", errUsage)
	}
	r, err := readLatest(*in)
	if err != nil {
		return err
	}
	if *out != "" {
		if err := os.WriteFile(*out, []byte(renderSVG(r)), 0o644); err != nil {
			return err
		}
	}
	if *table {
		if _, err := io.WriteString(stdout, renderTable(r)); err != nil {
			return err
		}
	}
	if *md != "" {
		return rewriteMarkdown(*md, renderTable(r))
	}
	return nil
}

// runLine is one line of results.jsonl, as bench/run.sh writes it.
type runLine struct {
	Time    string                 `json:"time"`
	Git     string                 `json:"git"`
	Host    string                 `json:"host"`
	Knobs   map[string]any         `json:"knobs"`
	Ours    map[string]any         `json:"ours"`
	Peer    map[string]any         `json:"peer"`
	Ratios  map[string]float64     `json:"ratios"`
	Targets map[string]targetCheck `json:"targets"`
	Failed  []string               `json:"failed_phases"`
	// Issue 11's targets, merged into Targets under "11:" keys by readLatest.
	Targets11 map[string]targetCheck `json:"targets_11"`
	// The peer's boards line, merged into Peer under our boards_ names by readLatest.
	PeerBoards map[string]any `json:"peer_boards"`
}

type targetCheck struct {
	Value float64 `json:"value"`
	Want  string  `json:"want"`
	Pass  bool    `json:"pass"`
}

// readLatest returns the last non-empty line of path.
func readLatest(path string) (runLine, error) {
	var r runLine
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	var last []byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			last = append(last[:0], l...)
		}
	}
	if err := sc.Err(); err != nil {
		return r, fmt.Errorf("read %s: %w", path, err)
	}
	if last == nil {
		return r, fmt.Errorf("read %s: no run in it", path)
	}
	if err := json.Unmarshal(last, &r); err != nil {
		return r, fmt.Errorf("read %s: last line: %w", path, err)
	}
	if r.Ours == nil {
		return r, fmt.Errorf("read %s: last line has no \"ours\"", path)
	}
	for k, v := range r.Targets11 {
		if r.Targets == nil {
			r.Targets = map[string]targetCheck{}
		}
		r.Targets["11:"+k] = v
	}
	if r.PeerBoards != nil {
		if r.Peer == nil {
			r.Peer = map[string]any{}
		}
		r.Peer["boards_srv_deliv_per_cpu_s"] = r.PeerBoards["deliveries_per_server_cpu_s"]
		r.Peer["boards_p99_ms"] = r.PeerBoards["p99_ms"]
		if u, ok := num(r.PeerBoards, "server_core_util"); ok {
			r.Peer["boards_server_cpu_pct"] = u * 100
		}
	}
	return r, nil
}

// num returns m[key] if it is a number.
func num(m map[string]any, key string) (float64, bool) {
	v, ok := m[key].(float64)
	return v, ok
}

// rewriteMarkdown replaces what lies between the markers of path with table.
func rewriteMarkdown(path, table string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i := strings.Index(s, beginMarker)
	j := strings.Index(s, endMarker)
	if i < 0 || j < i {
		return fmt.Errorf("%s: want %q then %q", path, beginMarker, endMarker)
	}
	s = s[:i+len(beginMarker)] + "\n" + table + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
