package main

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/actionsync/actionsync/broker/jetstream"
	"github.com/actionsync/actionsync/service"
)

// config is the serve command's configuration, resolved from flags, ACTIONSYNC_*
// variables and defaults, in that order of precedence.
type config struct {
	addr            string
	brokerName      string  // --broker as given: "memory", "nats", or "" when not given
	backend         backend // resolved by finish from --broker and --data-dir
	storage         storageConfig
	nats            natsConfig
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
	conn            connConfig
	auth            authConfig
	adminAddr       string // "": no admin listener
	metricsAddr     string // "": no metrics listener
	adminToken      string // "": the admin listener takes no token

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
	// maxSnapshotBytes is the most bytes of state a channel's snapshot may hold.
	maxSnapshotBytes int
	// maxHistoryBytes bounds all channels' history (in-memory broker);
	// maxChannelHistoryBytes one channel's (every broker; a node's cache on JetStream).
	maxHistoryBytes, maxChannelHistoryBytes int
}

// backend is the broker backend a server runs on.
type backend string

const (
	backendMemory   backend = "memory"   // in this process; lost on exit
	backendNATS     backend = "nats"     // JetStream on external NATS servers (--broker nats)
	backendEmbedded backend = "embedded" // JetStream on a NATS server in this process (--data-dir)
)

// minAdminTokenBytes is the shortest --admin-token-file token: guessing it must be hopeless.
const minAdminTokenBytes = 16

// natsConfig is where the JetStream backends keep channels and how they reach NATS.
type natsConfig struct {
	dataDir        string   // --data-dir: the embedded server's storage; "": none
	listen         string   // the embedded server's client listener; "": none
	urls           []string // --broker nats: the servers to connect to
	stream         string
	subjectPrefix  string
	replicas       int
	credsFile      string // "": no credentials
	tlsCAFile      string // "": the system's roots
	tlsCertFile    string // with tlsKeyFile: a client certificate; "": none
	tlsKeyFile     string
	publishTimeout time.Duration
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
	// redact, if set, returns a value as errors show it (without its passwords)
	redact func(v string) string
}

// settings lists every serve flag, in usage order.
// settings are every setting of serve, as the usage lists them.
var settings = slices.Concat(serverSettings, connSettings, authSettings, presenceSettings)

// serverSettings are the settings of the server itself, its storage and its limits.
var serverSettings = []setting{
	{flag: "addr", env: "ACTIONSYNC_ADDR", def: "localhost:8080", arg: "HOST:PORT",
		help: "address to listen on; port 0 picks a free port",
		apply: func(c *config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("want HOST:PORT, e.g. localhost:8080 or :8080")
			}
			c.addr = v
			return nil
		}},
	{flag: "broker", env: "ACTIONSYNC_BROKER", arg: "memory|nats",
		shown: "memory",
		help: `where channels live: memory (this process; lost on exit) or nats (JetStream on the
        NATS servers of --nats-url, shared by every node); --data-dir instead runs NATS in this process`,
		apply: func(c *config, v string) error {
			if v != string(backendMemory) && v != string(backendNATS) {
				return errors.New("want memory or nats")
			}
			c.brokerName = v
			return nil
		}},
	{flag: "data-dir", env: "ACTIONSYNC_DATA_DIR", arg: "DIR",
		shown: "none: no embedded NATS",
		help: `run an embedded NATS server with JetStream storage in DIR (created if missing; one process
        at a time): history survives restarts; not with --broker nats`,
		apply: func(c *config, v string) error {
			if strings.TrimSpace(v) == "" {
				return errors.New("want a directory")
			}
			c.nats.dataDir = v
			return nil
		}},
	{flag: "nats-listen", env: "ACTIONSYNC_NATS_LISTEN", arg: "HOST:PORT",
		shown: "none: in-process connections only",
		help:  "with --data-dir: also accept NATS clients (the nats CLI, monitoring) on this address",
		apply: func(c *config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("want HOST:PORT, e.g. localhost:4222")
			}
			c.nats.listen = v
			return nil
		}},
	{flag: "nats-url", env: "ACTIONSYNC_NATS_URL", arg: "URLS",
		shown:  "none",
		help:   "with --broker nats (required there): comma-separated NATS server URLs, e.g. nats://n1:4222,nats://n2:4222",
		apply:  parseNATSURLs,
		redact: redactURLs},
	{flag: "nats-stream", env: "ACTIONSYNC_NATS_STREAM", def: jetstream.DefaultStream, arg: "NAME",
		help: "JetStream stream that holds every channel; created, or updated to these settings, at start",
		apply: func(c *config, v string) error {
			if !streamNamePattern.MatchString(v) {
				return errors.New("want 1 to 255 letters, digits, '-' or '_'")
			}
			c.nats.stream = v
			return nil
		}},
	{flag: "nats-subject-prefix", env: "ACTIONSYNC_NATS_SUBJECT_PREFIX", def: jetstream.DefaultSubjectPrefix, arg: "PREFIX",
		help: "subject prefix of the channels: channel c is the subject PREFIX.c",
		apply: func(c *config, v string) error {
			for token := range strings.SplitSeq(v, ".") {
				if token == "" || strings.ContainsAny(token, "*> \t\r\n\f") {
					return errors.New("want dot-separated NATS subject tokens without wildcards or white space, e.g. actionsync.ch")
				}
			}
			c.nats.subjectPrefix = v
			return nil
		}},
	{flag: "nats-replicas", env: "ACTIONSYNC_NATS_REPLICAS", def: "1", arg: "N",
		help:  "replicas of the stream, 1 to 5 (3 in a NATS cluster of 3 or more)",
		apply: intBetween(1, maxReplicas, func(c *config) *int { return &c.nats.replicas })},
	{flag: "nats-creds", env: "ACTIONSYNC_NATS_CREDS", arg: "FILE",
		shown: "none",
		help:  "with --broker nats: NATS credentials file (user JWT and NKey seed)",
		apply: setString(func(c *config) *string { return &c.nats.credsFile })},
	{flag: "nats-tls-ca", env: "ACTIONSYNC_NATS_TLS_CA", arg: "FILE",
		shown: "none: the system's roots",
		help:  "with --broker nats: PEM CA certificates that verify the NATS servers",
		apply: setString(func(c *config) *string { return &c.nats.tlsCAFile })},
	{flag: "nats-tls-cert", env: "ACTIONSYNC_NATS_TLS_CERT", arg: "FILE",
		shown: "none",
		help:  "with --broker nats and --nats-tls-key: PEM client certificate for NATS (mutual TLS)",
		apply: setString(func(c *config) *string { return &c.nats.tlsCertFile })},
	{flag: "nats-tls-key", env: "ACTIONSYNC_NATS_TLS_KEY", arg: "FILE",
		shown: "none",
		help:  "PEM private key for --nats-tls-cert",
		apply: setString(func(c *config) *string { return &c.nats.tlsKeyFile })},
	{flag: "nats-publish-timeout", env: "ACTIONSYNC_NATS_PUBLISH_TIMEOUT", def: "5s", arg: "DURATION",
		help: "how long a dispatch waits for JetStream to store it; then it fails with UNAVAILABLE",
		apply: durationAtLeast(time.Nanosecond, func(c *config, d time.Duration) {
			c.nats.publishTimeout = d
		})},
	{flag: "history-size", env: "ACTIONSYNC_HISTORY_SIZE", def: "10000", arg: "N",
		help:  "actions kept per channel; also the dedupe window",
		apply: intAtLeast(1, func(c *config) *int { return &c.storage.historySize })},
	{flag: "history-max-age", env: "ACTIONSYNC_HISTORY_MAX_AGE", def: "24h", arg: "DURATION",
		help:  "drop actions older than this from history; 0: no age limit. Never drops the actions after a channel's snapshot",
		apply: durationAtLeast(0, func(c *config, d time.Duration) { c.storage.maxAge = d })},
	{flag: "history-max-bytes", env: "ACTIONSYNC_HISTORY_MAX_BYTES", def: "512MiB", arg: "BYTES",
		help:  "in memory: the history of all channels together; past it the oldest history of any channel is dropped first (clients behind it get a reset or the snapshot)",
		apply: bytesAtLeast(1, func(c *config) *int { return &c.storage.maxHistoryBytes })},
	{flag: "history-channel-max-bytes", env: "ACTIONSYNC_HISTORY_CHANNEL_MAX_BYTES", def: "64MiB", arg: "BYTES",
		help:  "one channel's history in memory (on JetStream: a node's cache of it); past it the channel's oldest actions are dropped",
		apply: bytesAtLeast(1, func(c *config) *int { return &c.storage.maxChannelHistoryBytes })},
	{flag: "max-snapshot-bytes", env: "ACTIONSYNC_MAX_SNAPSHOT_BYTES", def: "1048576", arg: "BYTES",
		help:  "largest snapshot state a client may store for a channel (PutSnapshot); with --broker nats, capped below the NATS max payload",
		apply: bytesAtLeast(1, func(c *config) *int { return &c.storage.maxSnapshotBytes })},
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
	{flag: "max-history-page-bytes", env: "ACTIONSYNC_MAX_HISTORY_PAGE_BYTES", def: "4MiB", arg: "BYTES",
		help:  "a History page stops growing past this many bytes of actions (its first action is always sent); the client reads on",
		apply: bytesAtLeast(1, func(c *config) *int { return &c.service.Limits.MaxHistoryBytes })},
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
		help: "adaptive batching: a stream that sent less than (streams in its fan-out x this) ago waits out the rest of that round (its fan-out: the active streams, or its channels' subscribers if fewer); 0: send at once",
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
		help:  `serve the ToDo board demo page at /; false: / answers 404`,
		apply: setBool(func(c *config) *bool { return &c.demo })},
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
	{flag: "metrics-addr", env: "ACTIONSYNC_METRICS_ADDR", arg: "HOST:PORT",
		shown: "none: off",
		help:  "serve Prometheus metrics (/metrics) on this separate address, e.g. localhost:9090 (docs/operations.md lists them)",
		apply: func(c *config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("want HOST:PORT, e.g. localhost:9090")
			}
			c.metricsAddr = v
			return nil
		}},
	{flag: "admin-addr", env: "ACTIONSYNC_ADMIN_ADDR", arg: "HOST:PORT",
		shown: "none: off",
		help:  "serve the AdminService (GetStats, DeleteSnapshot) on this separate address; without --admin-token-file it has no access checks: keep it private, e.g. localhost:9091",
		apply: func(c *config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("want HOST:PORT, e.g. localhost:9091")
			}
			c.adminAddr = v
			return nil
		}},
	{flag: "admin-token-file", env: "ACTIONSYNC_ADMIN_TOKEN_FILE", arg: "FILE",
		shown: "none: no token",
		help:  "require the token in FILE (\"Authorization: Bearer TOKEN\") of every call to the --admin-addr listener",
		apply: func(c *config, v string) error {
			b, err := os.ReadFile(v)
			if err != nil {
				return err
			}
			tok := strings.TrimSpace(string(b))
			if len(tok) < minAdminTokenBytes {
				return fmt.Errorf("the token in %s has %d bytes, want at least %d", v, len(tok), minAdminTokenBytes)
			}
			c.adminToken = tok
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
	given := make(map[string]bool, len(settings)) // set by a flag or a variable
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
		given[s.flag] = source != "default" && values != nil
		for _, v := range values {
			if err := s.apply(&c, v); err != nil {
				if s.redact != nil {
					v = s.redact(v)
				}
				return config{}, s.errorf("got %q from the %s, %w", v, source, err)
			}
		}
	}
	if err := c.finish(given); err != nil {
		return config{}, err
	}
	return c, nil
}

// finish checks the settings that depend on each other and loads the files they name;
// given holds the settings set by a flag or a variable.
func (c *config) finish(given map[string]bool) error {
	if err := c.resolveBackend(given); err != nil {
		return err
	}
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
	if err := c.finishAuth(); err != nil {
		return err
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

// resolveBackend chooses the broker backend from --broker and --data-dir, refuses the
// NATS settings the chosen backend would ignore, and checks the NATS TLS files.
func (c *config) resolveBackend(given map[string]bool) error {
	switch {
	case c.nats.dataDir != "" && c.brokerName == string(backendNATS):
		return conflictError("data-dir", "broker", "--data-dir runs NATS inside this process, --broker nats connects to external NATS servers: want one or the other")
	case c.nats.dataDir != "" && len(c.nats.urls) > 0:
		return conflictError("data-dir", "nats-url", "--data-dir runs NATS inside this process, --nats-url names external NATS servers: want one or the other")
	case c.nats.dataDir != "" && c.brokerName == string(backendMemory):
		return conflictError("data-dir", "broker", "--data-dir keeps channels on disk with an embedded NATS server, --broker memory keeps them in memory: want one or the other")
	case c.nats.dataDir != "":
		c.backend = backendEmbedded
	case c.brokerName == string(backendNATS):
		if len(c.nats.urls) == 0 {
			return &usageError{err: errors.New("--broker (ACTIONSYNC_BROKER) nats needs --nats-url (ACTIONSYNC_NATS_URL): the NATS servers to connect to")}
		}
		c.backend = backendNATS
	default:
		c.backend = backendMemory
	}

	// A NATS setting the backend would ignore is refused: the operator meant another backend.
	var (
		external = c.backend == backendNATS
		embedded = c.backend == backendEmbedded
		onNATS   = external || embedded
	)
	for _, only := range []struct {
		flag  string
		ok    bool
		where string
	}{
		{"nats-url", external, "--broker nats"},
		{"nats-creds", external, "--broker nats"},
		{"nats-tls-ca", external, "--broker nats"},
		{"nats-tls-cert", external, "--broker nats"},
		{"nats-tls-key", external, "--broker nats"},
		{"nats-listen", embedded, "--data-dir"},
		{"nats-stream", onNATS, "--broker nats or --data-dir"},
		{"nats-subject-prefix", onNATS, "--broker nats or --data-dir"},
		{"nats-replicas", onNATS, "--broker nats or --data-dir"},
		{"nats-publish-timeout", onNATS, "--broker nats or --data-dir"},
	} {
		if given[only.flag] && !only.ok {
			s := lookupSetting(only.flag)
			return &usageError{err: fmt.Errorf("--%s (%s) is set but the broker is %s: it applies only with %s",
				s.flag, s.env, c.backend, only.where)}
		}
	}
	if embedded && c.nats.replicas > 1 {
		return lookupSetting("nats-replicas").errorf("got %d, but the embedded NATS server of --data-dir is one node: want 1", c.nats.replicas)
	}

	switch n := c.nats; {
	case n.tlsCertFile != "" && n.tlsKeyFile == "":
		return &usageError{err: errors.New("--nats-tls-cert (ACTIONSYNC_NATS_TLS_CERT) is set but --nats-tls-key (ACTIONSYNC_NATS_TLS_KEY) is not: want both or neither")}
	case n.tlsCertFile == "" && n.tlsKeyFile != "":
		return &usageError{err: errors.New("--nats-tls-key (ACTIONSYNC_NATS_TLS_KEY) is set but --nats-tls-cert (ACTIONSYNC_NATS_TLS_CERT) is not: want both or neither")}
	case n.tlsCertFile != "":
		// nats.ClientCert loads the pair only when connecting; a bad pair is a
		// configuration error, reported before anything starts.
		if _, err := tls.LoadX509KeyPair(n.tlsCertFile, n.tlsKeyFile); err != nil {
			return &usageError{err: fmt.Errorf("--nats-tls-cert (ACTIONSYNC_NATS_TLS_CERT) %q, --nats-tls-key (ACTIONSYNC_NATS_TLS_KEY) %q: %w",
				n.tlsCertFile, n.tlsKeyFile, err)}
		}
	}
	if c.nats.tlsCAFile != "" {
		pem, err := os.ReadFile(c.nats.tlsCAFile)
		if err != nil {
			return lookupSetting("nats-tls-ca").errorf("%w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return lookupSetting("nats-tls-ca").errorf("%q holds no PEM certificate", c.nats.tlsCAFile)
		}
	}
	if c.nats.credsFile != "" {
		f, err := os.Open(c.nats.credsFile)
		if err != nil {
			return lookupSetting("nats-creds").errorf("%w", err)
		}
		_ = f.Close()
	}
	return nil
}

// conflictError is the usage error for two settings that exclude each other.
func conflictError(flag1, flag2, why string) error {
	s1, s2 := lookupSetting(flag1), lookupSetting(flag2)
	return &usageError{err: fmt.Errorf("--%s (%s) and --%s (%s) are both set: %s", s1.flag, s1.env, s2.flag, s2.env, why)}
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

// setBool parses true or false (as strconv.ParseBool) into the field dst returns.
func setBool(dst func(*config) *bool) func(*config, string) error {
	return func(c *config, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return errors.New("want true or false")
		}
		*dst(c) = b
		return nil
	}
}

// setString returns an apply function that stores the value as it is in dst.
func setString(dst func(*config) *string) func(*config, string) error {
	return func(c *config, v string) error {
		*dst(c) = v
		return nil
	}
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

// intBetween parses a whole number from minimum to maximum into the field dst returns.
func intBetween(minimum, maximum int, dst func(*config) *int) func(*config, string) error {
	return func(c *config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < minimum || n > maximum {
			return fmt.Errorf("want a whole number from %d to %d", minimum, maximum)
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

// maxReplicas is JetStream's largest replica count.
const maxReplicas = 5

// streamNamePattern is what --nats-stream accepts: the characters NATS recommends for
// stream names (the name is also a directory of the file store), at most as long as
// JetStream allows.
var streamNamePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// parseNATSURLs parses the --nats-url list: nats:// (or tls://, TLS required) URLs.
func parseNATSURLs(c *config, v string) error {
	c.nats.urls = nil
	for _, raw := range splitList(v, ",") {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("URL %q: want nats://host:port (or tls://host:port), e.g. nats://localhost:4222", redactURL(raw))
		}
		c.nats.urls = append(c.nats.urls, raw)
	}
	if len(c.nats.urls) == 0 {
		return errors.New("want one or more comma-separated URLs, e.g. nats://localhost:4222")
	}
	return nil
}

// redactURL returns raw with any password replaced by "xxxxx", for messages and logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil && strings.Contains(raw, "@"):
		return "(unparsable URL with user information)"
	case err != nil || u.User == nil:
		return raw
	}
	return u.Redacted()
}

// redactURLs applies redactURL to each URL of a comma-separated list.
func redactURLs(list string) string {
	urls := splitList(list, ",")
	for i, raw := range urls {
		urls[i] = redactURL(raw)
	}
	return strings.Join(urls, ",")
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
  actionsync token [flags]   print a development token (actionsync token --help)
  actionsync stats [flags]   print a running server's figures (actionsync stats --help)
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
