package main

import (
	"cmp"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/actionsync/actionsync/service"
)

// config is the serve command's configuration, resolved from flags, ACTIONSYNC_*
// variables and defaults, in that order of precedence.
type config struct {
	addr            string
	storage         storageConfig
	service         service.Options // Logger is set by serve
	corsOrigins     []string        // empty: no cross-origin requests
	demo            bool            // serve the ToDo board demo at "/"
	tlsCertFile     string
	tlsKeyFile      string
	tlsCert         *tls.Certificate // nil: plain HTTP with h2c
	logFormat       string           // "text" or "json"
	logLevel        slog.Level
	shutdownTimeout time.Duration
	debugAddr       string // "": no debug listener

	allowFile  string
	allowRules []service.AllowRule // from --allow / ACTIONSYNC_ALLOW, after the file's
}

// storageConfig is what every broker backend keeps and how it fans out; each backend
// converts it to its own options (newBroker).
type storageConfig struct {
	historySize int           // actions kept per channel; also the dedupe window
	maxAge      time.Duration // 0: no age limit
	queueSize   int           // actions queued per subscriber
	maxChannels int
}

// setting is one serve flag and its environment variable.
type setting struct {
	flag  string // without dashes
	env   string
	def   string // default in flag syntax; "" means none
	shown string // the default as the usage describes it, if not def
	arg   string // placeholder in the usage
	help  string
	multi bool // repeatable flag; the variable holds values separated by ";" or newlines
	apply func(c *config, v string) error
}

// settings lists every serve flag, in usage order.
var settings = []setting{
	{flag: "addr", env: "ACTIONSYNC_ADDR", def: "localhost:8080", arg: "HOST:PORT",
		help: "address to listen on; port 0 picks a free port",
		apply: func(c *config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("want HOST:PORT, e.g. localhost:8080 or :8080")
			}
			c.addr = v
			return nil
		}},
	{flag: "history-size", env: "ACTIONSYNC_HISTORY_SIZE", def: "10000", arg: "N",
		help:  "actions kept per channel; also the dedupe window",
		apply: intAtLeast(1, func(c *config) *int { return &c.storage.historySize })},
	{flag: "history-max-age", env: "ACTIONSYNC_HISTORY_MAX_AGE", def: "24h", arg: "DURATION",
		help:  "drop actions older than this from history; 0: no age limit",
		apply: durationAtLeast(0, func(c *config, d time.Duration) { c.storage.maxAge = d })},
	{flag: "queue-size", env: "ACTIONSYNC_QUEUE_SIZE", def: "1024", arg: "N",
		help:  "actions queued per subscriber before it is cut off as too slow",
		apply: intAtLeast(1, func(c *config) *int { return &c.storage.queueSize })},
	{flag: "max-channels", env: "ACTIONSYNC_MAX_CHANNELS", def: "100000", arg: "N",
		help:  "most channels the server holds",
		apply: intAtLeast(1, func(c *config) *int { return &c.storage.maxChannels })},
	{flag: "max-type-bytes", env: "ACTIONSYNC_MAX_TYPE_BYTES", def: "128", arg: "BYTES",
		help:  "longest action type",
		apply: bytesAtLeast(1, func(c *config) *int { return &c.service.Limits.MaxTypeBytes })},
	{flag: "max-payload-bytes", env: "ACTIONSYNC_MAX_PAYLOAD_BYTES", def: "64KiB", arg: "BYTES",
		help:  "largest payload plus meta of one action (protobuf size); KiB, MiB suffixes",
		apply: bytesAtLeast(1, func(c *config) *int { return &c.service.Limits.MaxPayloadBytes })},
	{flag: "max-dispatch-actions", env: "ACTIONSYNC_MAX_DISPATCH_ACTIONS", def: "100", arg: "N",
		help:  "most actions in one dispatch",
		apply: intAtLeast(1, func(c *config) *int { return &c.service.Limits.MaxDispatchActions })},
	{flag: "max-positions", env: "ACTIONSYNC_MAX_POSITIONS", def: "64", arg: "N",
		help:  "most channels one subscription follows",
		apply: intAtLeast(1, func(c *config) *int { return &c.service.Limits.MaxPositions })},
	{flag: "max-history-limit", env: "ACTIONSYNC_MAX_HISTORY_LIMIT", def: "1000", arg: "N",
		help:  "largest History limit",
		apply: intAtLeast(1, func(c *config) *int { return &c.service.Limits.MaxHistoryLimit })},
	{flag: "max-read-bytes", env: "ACTIONSYNC_MAX_READ_BYTES", def: "8MiB", arg: "BYTES",
		help:  "largest request message read; KiB, MiB, GiB suffixes",
		apply: bytesAtLeast(1, func(c *config) *int { return &c.service.Limits.MaxReadBytes })},
	{flag: "channel-pattern", env: "ACTIONSYNC_CHANNEL_PATTERN", def: service.DefaultChannelPattern, arg: "REGEXP",
		help: "regular expression a channel name must match in full",
		apply: func(c *config, v string) error {
			if v == "" {
				return errors.New("want a regular expression, got an empty one")
			}
			if _, err := regexp.Compile(v); err != nil {
				return fmt.Errorf("want a valid regular expression: %w", err)
			}
			c.service.Limits.ChannelPattern = v
			return nil
		}},
	{flag: "heartbeat", env: "ACTIONSYNC_HEARTBEAT", def: "15s", arg: "DURATION",
		help: "idle time after which a stream gets a heartbeat; 0: never",
		apply: durationAtLeast(0, func(c *config, d time.Duration) {
			c.service.Heartbeat = zeroAs(d, -1) // service: negative means never
		})},
	{flag: "compress-min-bytes", env: "ACTIONSYNC_COMPRESS_MIN_BYTES", def: "0", arg: "BYTES",
		help:  "gzip responses at least this large when the client accepts gzip; 0: never (gzip costs more CPU than it saves on streams of small actions)",
		apply: bytesAtLeast(0, func(c *config) *int { return &c.service.CompressMinBytes })},
	{flag: "batch-delay-per-stream", env: "ACTIONSYNC_BATCH_DELAY_PER_STREAM", def: "30us", arg: "DURATION",
		help: "adaptive batching: a stream that sent less than (active streams x this) ago waits out the rest of that round; 0: send at once",
		apply: durationAtLeast(0, func(c *config, d time.Duration) {
			c.service.BatchDelayPerStream = zeroAs(d, -1) // service: negative means off
		})},
	{flag: "max-batch-delay", env: "ACTIONSYNC_MAX_BATCH_DELAY", def: "50ms", arg: "DURATION",
		help:  "the longest wait of adaptive batching",
		apply: durationAtLeast(1, func(c *config, d time.Duration) { c.service.MaxBatchDelay = d })},
	{flag: "cors-origins", env: "ACTIONSYNC_CORS_ORIGINS", arg: "ORIGINS",
		shown: "none: same-origin only",
		help:  `comma-separated browser origins allowed, e.g. https://app.example.com; "*": any`,
		apply: parseOrigins},
	{flag: "demo", env: "ACTIONSYNC_DEMO", def: "true", arg: "true|false",
		help: `serve the ToDo board demo page at /; false: / answers 404`,
		apply: func(c *config, v string) error {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return errors.New("want true or false")
			}
			c.demo = b
			return nil
		}},
	{flag: "allow-file", env: "ACTIONSYNC_ALLOW_FILE", arg: "FILE",
		shown: "none: every type allowed",
		help:  `JSON allow-list, e.g. [{"channel": "board:*", "types": ["ADD_TASK"]}]`,
		apply: func(c *config, v string) error {
			c.allowFile = v
			return nil
		}},
	{flag: "allow", env: "ACTIONSYNC_ALLOW", arg: "PATTERN=TYPE,...", multi: true,
		help: `allow-list rule, e.g. "board:*=ADD_TASK,MOVE_TASK"; repeatable, checked after
        the file's rules; the variable separates rules with ";"`,
		apply: func(c *config, v string) error {
			r, err := service.ParseAllowRule(v)
			if err != nil {
				return err
			}
			c.allowRules = append(c.allowRules, r)
			return nil
		}},
	{flag: "tls-cert", env: "ACTIONSYNC_TLS_CERT", arg: "FILE",
		help: "PEM certificate chain; with --tls-key: HTTPS (HTTP/1.1, HTTP/2), not HTTP with h2c",
		apply: func(c *config, v string) error {
			c.tlsCertFile = v
			return nil
		}},
	{flag: "tls-key", env: "ACTIONSYNC_TLS_KEY", arg: "FILE",
		help: "PEM private key for --tls-cert",
		apply: func(c *config, v string) error {
			c.tlsKeyFile = v
			return nil
		}},
	{flag: "log-format", env: "ACTIONSYNC_LOG_FORMAT", def: "text", arg: "text|json",
		help: "log format on stderr",
		apply: func(c *config, v string) error {
			if v != "text" && v != "json" {
				return errors.New("want text or json")
			}
			c.logFormat = v
			return nil
		}},
	{flag: "log-level", env: "ACTIONSYNC_LOG_LEVEL", def: "info", arg: "LEVEL",
		help: "least severe level logged: debug, info, warn or error",
		apply: func(c *config, v string) error {
			if err := c.logLevel.UnmarshalText([]byte(v)); err != nil {
				return errors.New("want debug, info, warn or error")
			}
			return nil
		}},
	{flag: "debug-addr", env: "ACTIONSYNC_DEBUG_ADDR", arg: "HOST:PORT",
		shown: "none: off",
		help:  "serve Go's pprof profiles (/debug/pprof/) on this separate address; keep it private, e.g. localhost:6060",
		apply: func(c *config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("want HOST:PORT, e.g. localhost:6060")
			}
			c.debugAddr = v
			return nil
		}},
	{flag: "shutdown-timeout", env: "ACTIONSYNC_SHUTDOWN_TIMEOUT", def: "30s", arg: "DURATION",
		help: "how long a shutdown waits for streams and in-flight requests to end",
		apply: durationAtLeast(time.Nanosecond, func(c *config, d time.Duration) {
			c.shutdownTimeout = d
		})},
}

// lookupSetting returns the setting for flag name.
func lookupSetting(name string) *setting {
	for i := range settings {
		if settings[i].flag == name {
			return &settings[i]
		}
	}
	panic("unknown setting " + name) // a programming error in this file
}

// loadConfig resolves the serve configuration from args (after "serve") and the
// environment: a flag wins over its ACTIONSYNC_* variable, which wins over the default.
// Every error is a *usageError naming the flag and the variable, except flag.ErrHelp
// for -h/--help.
func loadConfig(args []string, getenv func(string) string) (config, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by the caller, with the usage
	fromFlags := make(map[string][]string, len(settings))
	for _, s := range settings {
		fs.Func(s.flag, s.help, func(v string) error {
			if s.multi {
				fromFlags[s.flag] = append(fromFlags[s.flag], v)
			} else {
				fromFlags[s.flag] = []string{v}
			}
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, &usageError{err: fmt.Errorf("serve: %w", err), showUsage: true}
	}
	if fs.NArg() > 0 {
		return config{}, &usageError{err: fmt.Errorf("serve: unexpected argument %q", fs.Arg(0)), showUsage: true}
	}

	var c config
	for _, s := range settings {
		values, source := fromFlags[s.flag], "flag"
		if values == nil {
			if env := getenv(s.env); env != "" {
				values, source = []string{env}, "environment"
				if s.multi {
					values = splitList(env, ";\n")
				}
			} else if s.def != "" {
				values, source = []string{s.def}, "default"
			}
		}
		for _, v := range values {
			if err := s.apply(&c, v); err != nil {
				return config{}, s.errorf("got %q from the %s, %w", v, source, err)
			}
		}
	}
	if err := c.finish(); err != nil {
		return config{}, err
	}
	return c, nil
}

// finish checks the settings that depend on each other and loads the files they name.
func (c *config) finish() error {
	switch {
	case c.storage.queueSize < c.service.Limits.MaxDispatchActions:
		// One dispatch lands in a queue at once: a batch larger than the queue would cut
		// off every subscriber of the channel.
		return &usageError{err: fmt.Errorf("--queue-size (ACTIONSYNC_QUEUE_SIZE) %d is less than --max-dispatch-actions (ACTIONSYNC_MAX_DISPATCH_ACTIONS) %d: one dispatch would overflow every subscriber's queue",
			c.storage.queueSize, c.service.Limits.MaxDispatchActions)}
	case c.tlsCertFile != "" && c.tlsKeyFile == "":
		return &usageError{err: errors.New("--tls-cert (ACTIONSYNC_TLS_CERT) is set but --tls-key (ACTIONSYNC_TLS_KEY) is not: want both or neither")}
	case c.tlsCertFile == "" && c.tlsKeyFile != "":
		return &usageError{err: errors.New("--tls-key (ACTIONSYNC_TLS_KEY) is set but --tls-cert (ACTIONSYNC_TLS_CERT) is not: want both or neither")}
	case c.tlsCertFile != "":
		cert, err := tls.LoadX509KeyPair(c.tlsCertFile, c.tlsKeyFile)
		if err != nil {
			return &usageError{err: fmt.Errorf("--tls-cert (ACTIONSYNC_TLS_CERT) %q, --tls-key (ACTIONSYNC_TLS_KEY) %q: %w",
				c.tlsCertFile, c.tlsKeyFile, err)}
		}
		c.tlsCert = &cert
	}

	var rules []service.AllowRule
	if c.allowFile != "" {
		list, err := readAllowFile(c.allowFile)
		if err != nil {
			return lookupSetting("allow-file").errorf("%w", err)
		}
		rules = list.Rules()
	}
	if rules = append(rules, c.allowRules...); len(rules) > 0 {
		list, err := service.NewAllowList(rules...)
		if err != nil {
			return lookupSetting("allow").errorf("%w", err)
		}
		c.service.AllowList = list
	}
	return nil
}

// readAllowFile parses the allow-list file at path.
func readAllowFile(path string) (*service.AllowList, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return service.ParseAllowList(f)
}

// errorf returns a *usageError that names the flag and its variable.
func (s *setting) errorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf("--%s (%s): %w", s.flag, s.env, fmt.Errorf(format, args...))}
}

// intAtLeast parses a whole number >= minimum into the field dst returns.
func intAtLeast(minimum int, dst func(*config) *int) func(*config, string) error {
	return func(c *config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < minimum {
			return fmt.Errorf("want a whole number >= %d", minimum)
		}
		*dst(c) = n
		return nil
	}
}

// bytesAtLeast parses a byte count >= minimum, with an optional KiB, MiB or GiB
// suffix, into the field dst returns.
func bytesAtLeast(minimum int, dst func(*config) *int) func(*config, string) error {
	return func(c *config, v string) error {
		n, err := parseBytes(v)
		if err != nil || n < minimum {
			return fmt.Errorf("want a byte count >= %d, optionally with a KiB, MiB or GiB suffix", minimum)
		}
		*dst(c) = n
		return nil
	}
}

// parseBytes parses "4096", "64KiB", "8MiB" or "1GiB".
func parseBytes(v string) (int, error) {
	v = strings.TrimSpace(v)
	unit := 1
	for _, u := range []struct {
		suffix string
		size   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, unit = strings.TrimSpace(num), u.size
			break
		}
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > math.MaxInt/unit {
		return 0, fmt.Errorf("byte count %d out of range", n)
	}
	return n * unit, nil
}

// durationAtLeast parses a Go duration (e.g. 15s, 24h) >= minimum and passes it to set.
func durationAtLeast(minimum time.Duration, set func(*config, time.Duration)) func(*config, string) error {
	return func(c *config, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < minimum {
			if minimum <= 0 {
				return errors.New("want a duration >= 0 such as 30s, 5m or 24h")
			}
			return errors.New("want a duration > 0 such as 30s, 5m or 24h")
		}
		set(c, d)
		return nil
	}
}

// parseOrigins parses the --cors-origins list: "*" or scheme://host[:port] origins,
// where host may start with one "*." wildcard label.
func parseOrigins(c *config, v string) error {
	c.corsOrigins = nil
	for _, o := range splitList(v, ",") {
		if o != "*" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
				u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
				return fmt.Errorf(`origin %q: want "*" or scheme://host[:port] with scheme http or https and no path, e.g. https://app.example.com`, o)
			}
		}
		c.corsOrigins = append(c.corsOrigins, o)
	}
	return nil
}

// splitList splits v at any of the separator characters, trimming spaces and
// dropping empty items.
func splitList(v, seps string) []string {
	var out []string
	for item := range strings.FieldsFuncSeq(v, func(r rune) bool { return strings.ContainsRune(seps, r) }) {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// zeroAs returns d, or repl when d is 0.
func zeroAs(d, repl time.Duration) time.Duration {
	if d == 0 {
		return repl
	}
	return d
}

// usage is the help text: the commands, then every serve flag with its variable and
// default.
func usage() string {
	var b strings.Builder
	b.WriteString(`actionsync relays Redux actions between clients (Connect, gRPC, gRPC-Web).

Usage:
  actionsync serve [flags]   run the server until SIGINT or SIGTERM
  actionsync version         print the version (also --version)
  actionsync help            print this help

Serve flags (each also read from the ACTIONSYNC_* variable shown; a flag wins over
its variable, a variable over the default):
`)
	for _, s := range settings {
		fmt.Fprintf(&b, "  --%s %s\n", s.flag, s.arg)
		fmt.Fprintf(&b, "        %s\n", s.help)
		def := cmp.Or(s.shown, s.def, "none")
		fmt.Fprintf(&b, "        env %s, default %s\n", s.env, def)
	}
	b.WriteString(`
Exit codes: 0 success (including a graceful shutdown), 1 runtime failure,
2 bad command line or configuration.
`)
	return b.String()
}
