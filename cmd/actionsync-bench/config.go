package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Protocols the tool speaks, named for --protocol.
const (
	protoConnectH1 = "connect-h1" // Connect over HTTP/1.1
	protoConnectH2 = "connect-h2" // Connect over HTTP/2 without TLS (h2c)
	protoGRPCH2    = "grpc-h2"    // gRPC over h2c
)

// config is the parsed command line.
type config struct {
	url          string
	tokenSecret  []byte   // --token-secret-file: mint a token per client; nil: no auth
	boards       int      // lat: spread subscribers and actions over this many channels; 0: one
	subURLs      []string // base URLs the subscribers are spread over, round-robin; [url] by default
	label        string   // copied into the result line: which server or backend was measured
	mode         string
	n            int
	conns        int // 0: every subscriber has its own connection
	window       int
	rate         float64
	duration     time.Duration
	warmup       time.Duration
	serverPIDs   []int  // server processes whose CPU and RSS are summed; none: not measured
	serverCPU    string // pinned core of the server, "" if unknown
	clientCPU    string // pinned core of this process, "" if unknown
	ks           []int  // idle: ascending subscriber counts
	protocol     string
	payloadBytes int
	gzip         bool
	decode       string // lite or full
	channel      string // "" : a fresh one per phase
	concurrency  int    // subscribers connecting at once
	maxInflight  int    // lat: most Dispatch calls at once
	publish      string // tput: dispatch (one unary Dispatch per action) or sync (a Sync stream)
	batch        int    // tput: most actions per dispatch (taken from the free window slots)
	debugURL     string // idle: the server's --debug-addr as a URL, to force a GC before readings
	timeout      time.Duration
	rssTimeout   time.Duration // idle: longest wait for the server's RSS to settle
	dir          string        // summary, compare: the run's result directory
}

// seconds is a flag.Value for durations written as seconds ("6", "0.5", like the peer's
// knobs) or as Go durations ("300ms").
type seconds struct{ d *time.Duration }

func (s seconds) String() string {
	if s.d == nil {
		return ""
	}
	return s.d.String()
}

func (s seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 {
			return errors.New("want a duration >= 0")
		}
		*s.d = time.Duration(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return errors.New("want seconds (6, 0.5) or a duration (300ms)")
	}
	*s.d = d
	return nil
}

// parseConfig parses args; usage and errors go to stderr.
func parseConfig(args []string, stderr io.Writer) (config, error) {
	c := config{duration: 6 * time.Second, warmup: time.Second, rssTimeout: 20 * time.Second}
	fs := flag.NewFlagSet("actionsync-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "base URL of the actionsync server; the publisher always uses it")
	subURLs := fs.String("sub-urls", "", "comma-separated base URLs of the nodes the subscribers are spread over, round-robin (default: --url)")
	fs.StringVar(&c.label, "label", "", "a name for what is measured (e.g. memory, data-dir, nats-3nodes), copied into the JSON line")
	fs.StringVar(&c.mode, "mode", "tput", "tput, lat, idle, summary or compare")
	fs.IntVar(&c.n, "n", 100, "subscribers (tput, lat)")
	fs.IntVar(&c.conns, "conns", 0, "connections the subscribers share (0: one each)")
	fs.IntVar(&c.window, "window", 64, "tput: most actions in flight (not yet received by every subscriber)")
	fs.Float64Var(&c.rate, "rate", 200, "lat: actions per second")
	fs.Var(seconds{&c.duration}, "duration", "measured interval (seconds or a duration)")
	fs.Var(seconds{&c.warmup}, "warmup", "time before the measured interval (seconds or a duration)")
	serverPIDs := fs.String("server-pid", "", "server process ids, comma-separated, whose CPU and RSS are summed (e.g. the nodes and their nats-server; empty or 0: not measured)")
	fs.StringVar(&c.serverCPU, "server-cpu", "", "core the server is pinned to, for per-core busy%")
	fs.StringVar(&c.clientCPU, "client-cpu", "", "core this process is pinned to, for per-core busy%")
	k := fs.String("k", "2000,5000", "idle: subscriber counts, comma-separated")
	fs.StringVar(&c.protocol, "protocol", protoConnectH2, "connect-h1, connect-h2 or grpc-h2")
	fs.IntVar(&c.payloadBytes, "payload-bytes", 200, "JSON size of each action's payload")
	fs.BoolVar(&c.gzip, "gzip", false, "offer gzip to the server (connect-go clients do by default)")
	fs.StringVar(&c.decode, "decode", "lite", "lite: read only seq and meta.sentAt of each action; full: proto.Unmarshal it")
	fs.StringVar(&c.channel, "channel", "", "channel to use (default: a fresh one per phase)")
	fs.IntVar(&c.concurrency, "concurrency", 200, "subscribers connecting at once")
	fs.IntVar(&c.maxInflight, "max-inflight", 1024, "lat: most Dispatch calls in flight at once")
	fs.StringVar(&c.debugURL, "debug-url", "", "idle: base URL of the server's --debug-addr (e.g. http://127.0.0.1:6060): force a GC before each RSS reading, as the peer does")
	fs.IntVar(&c.batch, "batch", 1, "tput: most actions per dispatch, as many as the window has free (a Redux client sends what is pending in one Dispatch)")
	fs.StringVar(&c.publish, "publish", "dispatch", "tput: dispatch (a unary Dispatch per action) or sync (every action a dispatch message on one Sync stream, like a socket; needs h2)")
	fs.Var(seconds{&c.timeout}, "timeout", "hard limit for the phase (default: 240s + warmup + duration)")
	fs.Var(seconds{&c.rssTimeout}, "rss-timeout", "idle: longest wait for the server's RSS to stop moving before a reading")
	fs.IntVar(&c.boards, "boards", 0, "lat: many small boards: this many channels, --n/--boards subscribers on each, every action to a random one (0: one channel)")
	tokenFile := fs.String("token-secret-file", "", "send each client a token minted with this HS256 secret (the server's --auth-hs256-secret-file); the server should run with --dispatch-rate 0 and --max-streams-per-identity 0")
	fs.StringVar(&c.dir, "dir", "", "summary: directory of a bench/run.sh run; compare: of a bench/backends.sh run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *tokenFile != "" {
		secret, err := os.ReadFile(*tokenFile)
		if err != nil {
			return c, fmt.Errorf("--token-secret-file: %w", err)
		}
		c.tokenSecret = bytes.TrimSuffix(bytes.TrimSuffix(secret, []byte("\n")), []byte("\r"))
	}
	if c.timeout == 0 {
		c.timeout = 240*time.Second + c.warmup + c.duration
	}
	ks, err := parseKs(*k)
	if err != nil {
		return c, fmt.Errorf("--k: %w", err)
	}
	c.ks = ks
	if c.serverPIDs, err = parsePIDs(*serverPIDs); err != nil {
		return c, fmt.Errorf("--server-pid: %w", err)
	}
	if c.subURLs, err = parseURLs(*subURLs); err != nil {
		return c, fmt.Errorf("--sub-urls: %w", err)
	}
	if len(c.subURLs) == 0 {
		c.subURLs = []string{c.url}
	}
	return c, c.validate()
}

// parsePIDs parses "123,456" into distinct process ids, in the order given. "" and "0"
// mean no process (nothing is measured); a PID listed twice would be counted twice, so
// it is refused.
func parsePIDs(s string) ([]int, error) {
	if t := strings.TrimSpace(s); t == "" || t == "0" {
		return nil, nil
	}
	var pids []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("got %q, want positive process ids, comma-separated", f)
		}
		if slices.Contains(pids, pid) {
			return nil, fmt.Errorf("got %d twice, want each process once", pid)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// parseURLs parses "http://a:1,http://b:2" into base URLs, in the order given; each is
// checked like --url. Empty items are skipped, so "" gives none.
func parseURLs(s string) ([]string, error) {
	var urls []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if err := checkBaseURL(f); err != nil {
			return nil, err
		}
		urls = append(urls, f)
	}
	return urls, nil
}

// checkBaseURL accepts http://HOST[:PORT][/path]: the tool speaks h2c or HTTP/1.1, no TLS.
func checkBaseURL(s string) error {
	if u, err := url.Parse(s); err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("got %q, want http://HOST:PORT (h2c or HTTP/1.1, no TLS)", s)
	}
	return nil
}

// subURL is the base URL of subscriber i: --sub-urls, round-robin.
func (c config) subURL(i int) string { return c.subURLs[i%len(c.subURLs)] }

// parseKs parses "2000,5000" into ascending distinct counts.
func parseKs(s string) ([]int, error) {
	var ks []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		k, err := strconv.Atoi(f)
		if err != nil || k <= 0 {
			return nil, fmt.Errorf("got %q, want positive integers", f)
		}
		ks = append(ks, k)
	}
	if len(ks) == 0 {
		return nil, errors.New("got none, want at least one count")
	}
	slices.Sort(ks)
	return slices.Compact(ks), nil
}

func (c config) validate() error {
	switch c.mode {
	case "tput", "lat", "idle":
	case "summary", "compare":
		if c.dir == "" {
			return fmt.Errorf("--mode %s needs --dir", c.mode)
		}
		return nil
	default:
		return fmt.Errorf("--mode: got %q, want tput, lat, idle, summary or compare", c.mode)
	}
	switch c.protocol {
	case protoConnectH1, protoConnectH2, protoGRPCH2:
	default:
		return fmt.Errorf("--protocol: got %q, want %s, %s or %s", c.protocol, protoConnectH1, protoConnectH2, protoGRPCH2)
	}
	switch {
	case c.publish != "dispatch" && c.publish != "sync":
		return fmt.Errorf("--publish: got %q, want dispatch or sync", c.publish)
	case c.batch < 1 || c.batch > 100:
		return fmt.Errorf("--batch: got %d, want 1..100 (the server's default dispatch limit)", c.batch)
	case c.publish == "sync" && c.protocol == protoConnectH1:
		return errors.New("--publish sync: Sync is a bidi stream and needs HTTP/2 (connect-h2 or grpc-h2)")
	}
	switch c.decode {
	case "lite", "full":
	default:
		return fmt.Errorf("--decode: got %q, want lite or full", c.decode)
	}
	if err := checkBaseURL(c.url); err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	switch {
	case c.n < 1 && (c.mode != "lat" || c.n < 0):
		return fmt.Errorf("--n: got %d, want >= 1 (or 0 with --mode lat: the cost of Dispatch alone)", c.n)
	case c.conns < 0:
		return fmt.Errorf("--conns: got %d, want >= 0", c.conns)
	case c.boards < 0 || c.boards > 0 && (c.mode != "lat" || c.n%c.boards != 0):
		return fmt.Errorf("--boards: got %d, want 0, or (with --mode lat) a divisor of --n %d", c.boards, c.n)
	case c.conns > 0 && c.protocol == protoConnectH1:
		return errors.New("--conns: HTTP/1.1 cannot share a connection between streams")
	case c.window < 1:
		return fmt.Errorf("--window: got %d, want >= 1", c.window)
	case c.rate <= 0:
		return fmt.Errorf("--rate: got %g, want > 0", c.rate)
	case c.duration <= 0:
		return errors.New("--duration: want > 0")
	case c.payloadBytes < minPayloadBytes:
		return fmt.Errorf("--payload-bytes: got %d, want >= %d", c.payloadBytes, minPayloadBytes)
	case c.concurrency < 1:
		return fmt.Errorf("--concurrency: got %d, want >= 1", c.concurrency)
	case c.maxInflight < 1:
		return fmt.Errorf("--max-inflight: got %d, want >= 1", c.maxInflight)
	case c.mode == "idle" && len(c.serverPIDs) == 0:
		return errors.New("--mode idle needs --server-pid")
	}
	return nil
}

// connsNeeded is about how many connections the phase opens.
func (c config) connsNeeded() int {
	subs := c.n
	if c.mode == "idle" {
		subs = c.ks[len(c.ks)-1]
	}
	if c.conns > 0 {
		return min(c.conns, subs) + 8
	}
	return subs + c.window + 8
}
