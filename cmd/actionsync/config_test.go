package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/jetstream"
	"github.com/actionsync/actionsync/broker/memory"
	"github.com/actionsync/actionsync/service"
)

// envOf returns a getenv over vars.
func envOf(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestLoadConfig_defaults(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(nil, envOf(nil))
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	ints := []struct {
		name      string
		got, want int
	}{
		{"history-size", c.storage.historySize, memory.DefaultHistorySize},
		{"queue-size", c.storage.queueSize, memory.DefaultQueueSize},
		{"max-channels", c.storage.maxChannels, memory.DefaultMaxChannels},
		{"max-snapshot-bytes", c.storage.maxSnapshotBytes, broker.DefaultMaxSnapshotBytes},
		{"max-type-bytes", c.service.Limits.MaxTypeBytes, service.DefaultMaxTypeBytes},
		{"max-payload-bytes", c.service.Limits.MaxPayloadBytes, service.DefaultMaxPayloadBytes},
		{"max-dispatch-actions", c.service.Limits.MaxDispatchActions, service.DefaultMaxDispatchActions},
		{"max-positions", c.service.Limits.MaxPositions, service.DefaultMaxPositions},
		{"max-history-limit", c.service.Limits.MaxHistoryLimit, service.DefaultMaxHistoryLimit},
		{"max-read-bytes", c.service.Limits.MaxReadBytes, service.DefaultMaxReadBytes},
		{"compress-min-bytes", c.service.CompressMinBytes, 0}, // 0: never compress
	}
	for _, tt := range ints {
		if tt.got != tt.want {
			t.Errorf("--%s: got %d, want %d", tt.name, tt.got, tt.want)
		}
	}
	durations := []struct {
		name      string
		got, want time.Duration
	}{
		{"history-max-age", c.storage.maxAge, memory.DefaultMaxAge},
		{"heartbeat", c.service.Heartbeat, service.DefaultHeartbeat},
		{"shutdown-timeout", c.shutdownTimeout, 30 * time.Second},
		{"batch-delay-per-stream", c.service.BatchDelayPerStream, service.DefaultBatchDelayPerStream},
		{"max-batch-delay", c.service.MaxBatchDelay, service.DefaultMaxBatchDelay},
	}
	for _, tt := range durations {
		if tt.got != tt.want {
			t.Errorf("--%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if c.addr != "localhost:8080" {
		t.Errorf("--addr: got %q, want localhost:8080", c.addr)
	}
	if c.service.Limits.ChannelPattern != service.DefaultChannelPattern {
		t.Errorf("--channel-pattern: got %q, want %q", c.service.Limits.ChannelPattern, service.DefaultChannelPattern)
	}
	if c.corsOrigins != nil || c.service.AllowList != nil || c.tlsCert != nil {
		t.Errorf("got cors %v, allow-list %v, tls %v; want none of them", c.corsOrigins, c.service.AllowList, c.tlsCert)
	}
	if c.logFormat != "text" || c.logLevel.String() != "INFO" {
		t.Errorf("got log format %q level %v, want text INFO", c.logFormat, c.logLevel)
	}
	if !c.demo {
		t.Errorf("--demo: got false, want true")
	}
	wantNATS := natsConfig{
		stream:         jetstream.DefaultStream,
		subjectPrefix:  jetstream.DefaultSubjectPrefix,
		replicas:       1,
		publishTimeout: jetstream.DefaultPublishTimeout,
	}
	if c.backend != backendMemory || !reflect.DeepEqual(c.nats, wantNATS) {
		t.Errorf("got broker %q, NATS section %+v; want memory, %+v", c.backend, c.nats, wantNATS)
	}
}

func TestLoadConfig_precedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"default", nil, nil, 10_000},
		{"env", nil, map[string]string{"ACTIONSYNC_HISTORY_SIZE": "50"}, 50},
		{"flag", []string{"--history-size", "7"}, nil, 7},
		{"flag_over_env", []string{"--history-size=7"}, map[string]string{"ACTIONSYNC_HISTORY_SIZE": "50"}, 7},
		{"flag_over_bad_env", []string{"-history-size", "7"}, map[string]string{"ACTIONSYNC_HISTORY_SIZE": "-1"}, 7},
		{"last_flag_wins", []string{"--history-size=7", "--history-size=8"}, nil, 8},
		{"empty_env_is_unset", nil, map[string]string{"ACTIONSYNC_HISTORY_SIZE": ""}, 10_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := loadConfig(tt.args, envOf(tt.env))
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if c.storage.historySize != tt.want {
				t.Errorf("history size: got %d, want %d", c.storage.historySize, tt.want)
			}
		})
	}
}

func TestLoadConfig_values(t *testing.T) {
	t.Parallel()
	c, err := loadConfig([]string{
		"--addr", "127.0.0.1:0",
		"--max-read-bytes", "2MiB",
		"--max-payload-bytes", "1024",
		"--heartbeat", "0",
		"--history-max-age", "0",
		"--cors-origins", " https://app.example.com, http://localhost:5173 ,,https://*.example.org",
		"--channel-pattern", `^[a-z]+$`,
		"--log-level", "debug",
	}, envOf(map[string]string{"ACTIONSYNC_LOG_FORMAT": "json", "ACTIONSYNC_SHUTDOWN_TIMEOUT": "1m"}))
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	if c.addr != "127.0.0.1:0" {
		t.Errorf("addr: got %q, want 127.0.0.1:0", c.addr)
	}
	if got := c.service.Limits.MaxReadBytes; got != 2<<20 {
		t.Errorf("max read bytes: got %d, want %d", got, 2<<20)
	}
	if got := c.service.Limits.MaxPayloadBytes; got != 1024 {
		t.Errorf("max payload bytes: got %d, want 1024", got)
	}
	// Zero means "off" on the command line; the service spells "off" as negative, and
	// the storage section keeps the command line's 0 (newBroker converts it).
	if c.service.Heartbeat >= 0 || c.storage.maxAge != 0 {
		t.Errorf("heartbeat %v, max age %v: want negative (off) and 0 (no age limit)", c.service.Heartbeat, c.storage.maxAge)
	}
	want := []string{"https://app.example.com", "http://localhost:5173", "https://*.example.org"}
	if strings.Join(c.corsOrigins, " ") != strings.Join(want, " ") {
		t.Errorf("cors origins: got %q, want %q", c.corsOrigins, want)
	}
	if c.service.Limits.ChannelPattern != `^[a-z]+$` {
		t.Errorf("channel pattern: got %q", c.service.Limits.ChannelPattern)
	}
	if c.logFormat != "json" || c.logLevel.String() != "DEBUG" || c.shutdownTimeout != time.Minute {
		t.Errorf("got log %q %v, shutdown timeout %v; want json DEBUG 1m0s", c.logFormat, c.logLevel, c.shutdownTimeout)
	}
}

func TestLoadConfig_allowList(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "allow.json")
	if err := os.WriteFile(file, []byte(`[{"channel": "board:*", "types": ["UPDATE_STAGE_TITLE"]}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // rules as channel=types;...
	}{
		{"none", nil, nil, ""},
		{"file", []string{"--allow-file", file}, nil, "board:*=UPDATE_STAGE_TITLE"},
		{"file_then_flags", []string{"--allow", "room:*=A,B", "--allow-file", file, "--allow", "*="},
			nil, "board:*=UPDATE_STAGE_TITLE;room:*=A,B;*="},
		{"env_rules", nil, map[string]string{"ACTIONSYNC_ALLOW": "room:*=A, B; *=\n"}, "room:*=A,B;*="},
		{"flags_replace_env", []string{"--allow", "x=Y"}, map[string]string{"ACTIONSYNC_ALLOW": "room:*=A"}, "x=Y"},
		{"env_file", nil, map[string]string{"ACTIONSYNC_ALLOW_FILE": file}, "board:*=UPDATE_STAGE_TITLE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := loadConfig(tt.args, envOf(tt.env))
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			var got []string
			for _, r := range c.service.AllowList.Rules() {
				got = append(got, r.Channel+"="+strings.Join(r.Types, ","))
			}
			if strings.Join(got, ";") != tt.want {
				t.Errorf("rules: got %q, want %q", strings.Join(got, ";"), tt.want)
			}
		})
	}
}

func TestLoadConfig_badValues(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badJSON := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badJSON, []byte(`[{"channel": "a", "typo": []}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	// Each value is tried once as a flag and once as its variable.
	tests := []struct {
		flag, value string
		fragment    string // in the error, besides the flag and variable names
	}{
		{"addr", "localhost", "want HOST:PORT"},
		{"history-size", "-1", "want a whole number >= 1"},
		{"history-size", "0", "want a whole number >= 1"},
		{"history-size", "ten", "want a whole number >= 1"},
		{"history-size", "99999999999999999999", "want a whole number >= 1"},
		{"history-max-age", "-1s", "want a duration >= 0"},
		{"broker", "redis", "want memory or nats"},
		{"broker", "Memory", "want memory or nats"},
		{"data-dir", " ", "want a directory"},
		{"nats-listen", "localhost", "want HOST:PORT"},
		{"nats-url", "localhost:4222", `URL "localhost:4222": want nats://host:port`},
		{"nats-url", "http://localhost:4222", `URL "http://localhost:4222": want nats://host:port`},
		{"nats-url", "nats://a:4222,nats://", `URL "nats://": want nats://host:port`},
		{"nats-url", "nats://a:4222/path", `URL "nats://a:4222/path"`},
		{"nats-url", " , ", "want one or more comma-separated URLs"},
		{"nats-stream", "a.b", "want 1 to 255 letters, digits, '-' or '_'"},
		{"nats-stream", "a b", "want 1 to 255 letters"},
		{"nats-stream", "a>", "want 1 to 255 letters"},
		{"nats-stream", strings.Repeat("S", 256), "want 1 to 255 letters"},
		{"nats-subject-prefix", "a..b", "want dot-separated NATS subject tokens"},
		{"nats-subject-prefix", ".a", "want dot-separated NATS subject tokens"},
		{"nats-subject-prefix", "a.", "want dot-separated NATS subject tokens"},
		{"nats-subject-prefix", "a.*", "without wildcards"},
		{"nats-subject-prefix", "a.>", "without wildcards"},
		{"nats-subject-prefix", "a b", "without wildcards or white space"},
		{"nats-replicas", "0", "want a whole number from 1 to 5"},
		{"nats-replicas", "6", "want a whole number from 1 to 5"},
		{"nats-replicas", "three", "want a whole number from 1 to 5"},
		{"nats-publish-timeout", "0s", "want a duration > 0"},
		{"nats-publish-timeout", "-1s", "want a duration > 0"},
		{"history-max-age", "24", "want a duration >= 0"},
		{"queue-size", "-5", "want a whole number >= 1"},
		{"max-channels", "0", "want a whole number >= 1"},
		{"max-snapshot-bytes", "0", "want a byte count >= 1"},
		{"admin-addr", "nohost", "want HOST:PORT"},
		{"dispatch-rate", "-1", "want a number >= 0"},
		{"dispatch-rate", "fast", "want a number >= 0"},
		{"dispatch-burst", "0", "want a whole number >= 1"},
		{"max-streams-per-identity", "-1", "want a whole number >= 0"},
		{"allow-anonymous", "maybe", "want true or false"},
		{"auth-stream-grace", "0s", "want a duration > 0"},
		{"max-type-bytes", "-1", "want a byte count >= 1"},
		{"max-payload-bytes", "64KB", "want a byte count >= 1"},
		{"max-payload-bytes", "-1KiB", "want a byte count >= 1"},
		{"max-dispatch-actions", "1.5", "want a whole number >= 1"},
		{"max-positions", "0", "want a whole number >= 1"},
		{"max-history-limit", "-1", "want a whole number >= 1"},
		{"max-read-bytes", "99999999999GiB", "want a byte count >= 1"},
		{"channel-pattern", "[a-", "want a valid regular expression"},
		{"heartbeat", "-15s", "want a duration >= 0"},
		{"heartbeat", "soon", "want a duration >= 0"},
		{"cors-origins", "example.com", `origin "example.com"`},
		{"cors-origins", "https://a.example.com/", `origin "https://a.example.com/"`},
		{"cors-origins", "ftp://a.example.com", `origin "ftp://a.example.com"`},
		{"allow-file", missing, "no such file"},
		{"allow-file", badJSON, `unknown field "typo"`},
		{"allow", "no-equals-sign", "want PATTERN=TYPE"},
		{"allow", "[=A", "syntax error in pattern"},
		{"tls-cert", junk, "is set but --tls-key (ACTIONSYNC_TLS_KEY) is not"},
		{"tls-key", junk, "is set but --tls-cert (ACTIONSYNC_TLS_CERT) is not"},
		{"log-format", "yaml", "want text or json"},
		{"log-level", "loud", "want debug, info, warn or error"},
		{"demo", "maybe", "want true or false"},
		{"shutdown-timeout", "0s", "want a duration > 0"},
		{"shutdown-timeout", "-1m", "want a duration > 0"},
	}
	for _, tt := range tests {
		s := lookupSetting(tt.flag)
		for _, source := range []string{"flag", "env"} {
			t.Run(tt.flag+"_"+source, func(t *testing.T) {
				t.Parallel()
				var args []string
				env := map[string]string{}
				if source == "flag" {
					args = []string{"--" + tt.flag, tt.value}
				} else {
					env[s.env] = tt.value
				}
				_, err := loadConfig(args, envOf(env))
				if err == nil {
					t.Fatalf("%s=%q: got no error, want one", tt.flag, tt.value)
				}
				var ue *usageError
				if !errors.As(err, &ue) {
					t.Errorf("got %T, want a *usageError (exit code 2)", err)
				}
				for _, want := range []string{"--" + tt.flag, s.env, tt.fragment} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
			})
		}
	}
}

func TestLoadConfig_tlsFiles(t *testing.T) {
	t.Parallel()
	certFile, keyFile := writeSelfSigned(t)
	c, err := loadConfig([]string{"--tls-cert", certFile}, envOf(map[string]string{"ACTIONSYNC_TLS_KEY": keyFile}))
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	if c.tlsCert == nil {
		t.Fatal("tls certificate not loaded")
	}
	_, err = loadConfig([]string{"--tls-cert", keyFile, "--tls-key", certFile}, envOf(nil))
	if err == nil || !strings.Contains(err.Error(), "--tls-cert (ACTIONSYNC_TLS_CERT)") ||
		!strings.Contains(err.Error(), "--tls-key (ACTIONSYNC_TLS_KEY)") {
		t.Errorf("swapped cert and key: got %v, want an error naming both flags and variables", err)
	}
}

func TestLoadConfig_commandLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		fragment string
	}{
		{"unknown_flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"missing_value", []string{"--addr"}, "flag needs an argument: -addr"},
		{"positional", []string{"now"}, `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadConfig(tt.args, envOf(nil))
			var ue *usageError
			if !errors.As(err, &ue) || !ue.showUsage || !strings.Contains(err.Error(), tt.fragment) {
				t.Errorf("got %v, want a usage error with the usage text, containing %q", err, tt.fragment)
			}
		})
	}
	if _, err := loadConfig([]string{"-h"}, envOf(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: got %v, want flag.ErrHelp", err)
	}
}

func TestSettings_consistent(t *testing.T) {
	t.Parallel()
	text := usage()
	seen := map[string]bool{}
	for _, s := range settings {
		wantEnv := "ACTIONSYNC_" + strings.ToUpper(strings.ReplaceAll(s.flag, "-", "_"))
		if s.env != wantEnv {
			t.Errorf("--%s: env %s, want %s", s.flag, s.env, wantEnv)
		}
		if seen[s.flag] {
			t.Errorf("--%s listed twice", s.flag)
		}
		seen[s.flag] = true
		if !strings.Contains(text, "--"+s.flag+" ") || !strings.Contains(text, "env "+s.env+", default ") {
			t.Errorf("usage does not list --%s with %s and its default", s.flag, s.env)
		}
		if s.help == "" || s.arg == "" {
			t.Errorf("--%s: empty help or argument placeholder", s.flag)
		}
	}
}

func TestLoadConfig_demo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want bool
	}{
		{"default", nil, nil, true},
		{"flag_false", []string{"--demo=false"}, nil, false},
		{"flag_value_false", []string{"--demo", "0"}, nil, false},
		{"env_false", nil, map[string]string{"ACTIONSYNC_DEMO": "false"}, false},
		{"flag_over_env", []string{"--demo=true"}, map[string]string{"ACTIONSYNC_DEMO": "false"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := loadConfig(tt.args, envOf(tt.env))
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if c.demo != tt.want {
				t.Errorf("demo: got %v, want %v", c.demo, tt.want)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"64KiB", 64 << 10, true},
		{"8 MiB", 8 << 20, true},
		{"1GiB", 1 << 30, true},
		{"1KB", 0, false},
		{"KiB", 0, false},
		{"-1", 0, false},
		{"9223372036854775807GiB", 0, false},
	}
	for _, tt := range tests {
		got, err := parseBytes(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseBytes(%q): got %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestLoadConfig_queueSizeCoversDispatch(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		queue, dispatch string
		ok              bool
	}{
		{"99", "100", false},
		{"100", "100", true},
		{"101", "100", true},
	} {
		t.Run("queue_"+tt.queue, func(t *testing.T) {
			t.Parallel()
			_, err := loadConfig([]string{"--queue-size", tt.queue, "--max-dispatch-actions", tt.dispatch}, envOf(nil))
			switch {
			case tt.ok && err != nil:
				t.Fatalf("loadConfig: %v", err)
			case !tt.ok && (err == nil || !strings.Contains(err.Error(), "--queue-size (ACTIONSYNC_QUEUE_SIZE)") ||
				!strings.Contains(err.Error(), "--max-dispatch-actions")):
				t.Fatalf("got %v, want an error naming --queue-size and --max-dispatch-actions", err)
			}
		})
	}
}

// TestSettings_inREADME keeps the README's configuration table in step with the flags.
func TestSettings_inREADME(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		row := fmt.Sprintf("| `--%s", s.flag)
		if !strings.Contains(string(readme), row) || !strings.Contains(string(readme), "`"+s.env+"`") {
			t.Errorf("README.md's configuration table has no row for --%s (%s)", s.flag, s.env)
		}
	}
}

func TestLoadConfig_broker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t)
	creds := filepath.Join(dir, "user.creds")
	if err := os.WriteFile(creds, []byte("-----BEGIN NATS USER JWT-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const urls = "nats://n1:4222, nats://n2:4222,,tls://n3:4222"
	wantURLs := []string{"nats://n1:4222", "nats://n2:4222", "tls://n3:4222"}
	defaults := func(n natsConfig) natsConfig {
		n.stream, n.subjectPrefix, n.replicas, n.publishTimeout = "ACTIONSYNC", "actionsync.ch", 1, 5*time.Second
		return n
	}
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		wantBackend backend
		wantNATS    natsConfig
	}{
		{name: "memory_flag", args: []string{"--broker", "memory"},
			wantBackend: backendMemory, wantNATS: defaults(natsConfig{})},
		{name: "memory_env", env: map[string]string{"ACTIONSYNC_BROKER": "memory"},
			wantBackend: backendMemory, wantNATS: defaults(natsConfig{})},
		{name: "nats_flags", args: []string{"--broker", "nats", "--nats-url", urls},
			wantBackend: backendNATS, wantNATS: defaults(natsConfig{urls: wantURLs})},
		{name: "nats_env", env: map[string]string{"ACTIONSYNC_BROKER": "nats", "ACTIONSYNC_NATS_URL": urls},
			wantBackend: backendNATS, wantNATS: defaults(natsConfig{urls: wantURLs})},
		{name: "nats_flag_over_env",
			args:        []string{"--nats-url", "nats://flag:4222"},
			env:         map[string]string{"ACTIONSYNC_BROKER": "nats", "ACTIONSYNC_NATS_URL": urls},
			wantBackend: backendNATS, wantNATS: defaults(natsConfig{urls: []string{"nats://flag:4222"}})},
		{name: "nats_every_flag",
			args: []string{"--broker", "nats", "--nats-url", "nats://n1:4222",
				"--nats-stream", "Boards_2-x", "--nats-subject-prefix", "acme.sync", "--nats-replicas", "3",
				"--nats-creds", creds, "--nats-tls-ca", certFile, "--nats-tls-cert", certFile, "--nats-tls-key", keyFile,
				"--nats-publish-timeout", "1500ms"},
			wantBackend: backendNATS,
			wantNATS: natsConfig{urls: []string{"nats://n1:4222"}, stream: "Boards_2-x", subjectPrefix: "acme.sync", replicas: 3,
				credsFile: creds, tlsCAFile: certFile, tlsCertFile: certFile, tlsKeyFile: keyFile, publishTimeout: 1500 * time.Millisecond}},
		{name: "nats_every_variable",
			env: map[string]string{"ACTIONSYNC_BROKER": "nats", "ACTIONSYNC_NATS_URL": "nats://n1:4222",
				"ACTIONSYNC_NATS_STREAM": "Boards", "ACTIONSYNC_NATS_SUBJECT_PREFIX": "acme", "ACTIONSYNC_NATS_REPLICAS": "5",
				"ACTIONSYNC_NATS_CREDS": creds, "ACTIONSYNC_NATS_TLS_CA": certFile, "ACTIONSYNC_NATS_TLS_CERT": certFile,
				"ACTIONSYNC_NATS_TLS_KEY": keyFile, "ACTIONSYNC_NATS_PUBLISH_TIMEOUT": "1ns"},
			wantBackend: backendNATS,
			wantNATS: natsConfig{urls: []string{"nats://n1:4222"}, stream: "Boards", subjectPrefix: "acme", replicas: 5,
				credsFile: creds, tlsCAFile: certFile, tlsCertFile: certFile, tlsKeyFile: keyFile, publishTimeout: time.Nanosecond}},
		{name: "data_dir_flag", args: []string{"--data-dir", dir},
			wantBackend: backendEmbedded, wantNATS: defaults(natsConfig{dataDir: dir})},
		{name: "data_dir_env_with_listen",
			env:         map[string]string{"ACTIONSYNC_DATA_DIR": dir, "ACTIONSYNC_NATS_LISTEN": "127.0.0.1:4222"},
			wantBackend: backendEmbedded, wantNATS: defaults(natsConfig{dataDir: dir, listen: "127.0.0.1:4222"})},
		{name: "data_dir_with_stream_settings",
			args: []string{"--data-dir", dir, "--nats-listen", ":0", "--nats-stream", "S", "--nats-subject-prefix", "p",
				"--nats-replicas", "1", "--nats-publish-timeout", "1s"},
			wantBackend: backendEmbedded,
			wantNATS: natsConfig{dataDir: dir, listen: ":0", stream: "S", subjectPrefix: "p", replicas: 1,
				publishTimeout: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := loadConfig(tt.args, envOf(tt.env))
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if c.backend != tt.wantBackend {
				t.Errorf("backend: got %q, want %q", c.backend, tt.wantBackend)
			}
			if !reflect.DeepEqual(c.nats, tt.wantNATS) {
				t.Errorf("NATS section:\n got %+v\nwant %+v", c.nats, tt.wantNATS)
			}
		})
	}
}

// TestLoadConfig_natsBounds checks the bounded NATS settings at N-1, N and N+1.
func TestLoadConfig_natsBounds(t *testing.T) {
	t.Parallel()
	nats := []string{"--broker", "nats", "--nats-url", "nats://localhost:4222"}
	tests := []struct {
		flag, value string
		ok          bool
	}{
		{"nats-replicas", "0", false},
		{"nats-replicas", "1", true},
		{"nats-replicas", "2", true},
		{"nats-replicas", "4", true},
		{"nats-replicas", "5", true},
		{"nats-replicas", "6", false},
		{"nats-publish-timeout", "0s", false},
		{"nats-publish-timeout", "1ns", true},
		{"nats-publish-timeout", "2ns", true},
		{"nats-stream", "", false}, // as a flag: an empty name
		{"nats-stream", "S", true},
		{"nats-stream", strings.Repeat("S", 254), true},
		{"nats-stream", strings.Repeat("S", 255), true},
		{"nats-stream", strings.Repeat("S", 256), false},
	}
	for _, tt := range tests {
		t.Run(tt.flag+"_"+fmt.Sprint(len(tt.value))+"_"+tt.value[:min(len(tt.value), 3)], func(t *testing.T) {
			t.Parallel()
			_, err := loadConfig(append(slices.Clone(nats), "--"+tt.flag, tt.value), envOf(nil))
			if tt.ok && err != nil {
				t.Errorf("--%s %q: %v", tt.flag, tt.value, err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "--"+tt.flag)) {
				t.Errorf("--%s %q: got %v, want an error naming --%s", tt.flag, tt.value, err, tt.flag)
			}
		})
	}
}

// TestLoadConfig_backendConflicts checks that settings that exclude each other, or that
// the chosen backend would ignore, are refused with a usage error saying why.
func TestLoadConfig_backendConflicts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t)
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	nats := []string{"--broker", "nats", "--nats-url", "nats://localhost:4222"}
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		fragments []string
	}{
		{name: "data_dir_and_broker_nats", args: []string{"--data-dir", dir, "--broker", "nats"},
			fragments: []string{"--data-dir (ACTIONSYNC_DATA_DIR) and --broker (ACTIONSYNC_BROKER) are both set",
				"--data-dir runs NATS inside this process, --broker nats connects to external NATS servers"}},
		{name: "data_dir_and_nats_url", args: []string{"--data-dir", dir, "--nats-url", "nats://localhost:4222"},
			fragments: []string{"--data-dir (ACTIONSYNC_DATA_DIR) and --nats-url (ACTIONSYNC_NATS_URL) are both set", "want one or the other"}},
		{name: "data_dir_and_nats_url_env",
			env:       map[string]string{"ACTIONSYNC_DATA_DIR": dir, "ACTIONSYNC_NATS_URL": "nats://localhost:4222"},
			fragments: []string{"--data-dir (ACTIONSYNC_DATA_DIR) and --nats-url (ACTIONSYNC_NATS_URL) are both set"}},
		{name: "data_dir_and_broker_nats_url", args: append([]string{"--data-dir", dir}, nats...),
			fragments: []string{"--data-dir (ACTIONSYNC_DATA_DIR) and --broker (ACTIONSYNC_BROKER) are both set"}},
		{name: "data_dir_and_broker_memory", args: []string{"--data-dir", dir, "--broker", "memory"},
			fragments: []string{"--broker (ACTIONSYNC_BROKER) are both set", "--broker memory keeps them in memory"}},
		{name: "broker_nats_without_url", args: []string{"--broker", "nats"},
			fragments: []string{"--broker (ACTIONSYNC_BROKER) nats needs --nats-url (ACTIONSYNC_NATS_URL)"}},
		{name: "broker_nats_env_without_url", env: map[string]string{"ACTIONSYNC_BROKER": "nats"},
			fragments: []string{"nats needs --nats-url (ACTIONSYNC_NATS_URL)"}},
		{name: "nats_url_with_memory", args: []string{"--nats-url", "nats://localhost:4222"},
			fragments: []string{"--nats-url (ACTIONSYNC_NATS_URL) is set but the broker is memory: it applies only with --broker nats"}},
		{name: "nats_url_with_broker_memory", args: []string{"--broker", "memory", "--nats-url", "nats://localhost:4222"},
			fragments: []string{"--nats-url (ACTIONSYNC_NATS_URL) is set but the broker is memory"}},
		{name: "nats_creds_with_memory", args: []string{"--nats-creds", certFile},
			fragments: []string{"--nats-creds (ACTIONSYNC_NATS_CREDS) is set but the broker is memory: it applies only with --broker nats"}},
		{name: "nats_tls_ca_with_data_dir", args: []string{"--data-dir", dir, "--nats-tls-ca", certFile},
			fragments: []string{"--nats-tls-ca (ACTIONSYNC_NATS_TLS_CA) is set but the broker is embedded: it applies only with --broker nats"}},
		{name: "nats_listen_with_broker_nats", args: append([]string{"--nats-listen", "localhost:4222"}, nats...),
			fragments: []string{"--nats-listen (ACTIONSYNC_NATS_LISTEN) is set but the broker is nats: it applies only with --data-dir"}},
		{name: "nats_listen_with_memory", env: map[string]string{"ACTIONSYNC_NATS_LISTEN": "localhost:4222"},
			fragments: []string{"--nats-listen (ACTIONSYNC_NATS_LISTEN) is set but the broker is memory"}},
		{name: "nats_stream_with_memory", args: []string{"--nats-stream", "S"},
			fragments: []string{"--nats-stream (ACTIONSYNC_NATS_STREAM) is set but the broker is memory: it applies only with --broker nats or --data-dir"}},
		{name: "nats_replicas_env_with_memory", env: map[string]string{"ACTIONSYNC_NATS_REPLICAS": "1"},
			fragments: []string{"--nats-replicas (ACTIONSYNC_NATS_REPLICAS) is set but the broker is memory"}},
		{name: "nats_replicas_2_with_data_dir", args: []string{"--data-dir", dir, "--nats-replicas", "2"},
			fragments: []string{"--nats-replicas (ACTIONSYNC_NATS_REPLICAS)", "the embedded NATS server of --data-dir is one node: want 1"}},
		{name: "nats_tls_cert_without_key", args: append([]string{"--nats-tls-cert", certFile}, nats...),
			fragments: []string{"--nats-tls-cert (ACTIONSYNC_NATS_TLS_CERT) is set but --nats-tls-key (ACTIONSYNC_NATS_TLS_KEY) is not: want both or neither"}},
		{name: "nats_tls_key_without_cert", args: nats, env: map[string]string{"ACTIONSYNC_NATS_TLS_KEY": keyFile},
			fragments: []string{"--nats-tls-key (ACTIONSYNC_NATS_TLS_KEY) is set but --nats-tls-cert (ACTIONSYNC_NATS_TLS_CERT) is not: want both or neither"}},
		{name: "nats_tls_cert_and_key_swapped", args: append([]string{"--nats-tls-cert", keyFile, "--nats-tls-key", certFile}, nats...),
			fragments: []string{"--nats-tls-cert (ACTIONSYNC_NATS_TLS_CERT)", "--nats-tls-key (ACTIONSYNC_NATS_TLS_KEY)"}},
		{name: "nats_tls_ca_junk", args: append([]string{"--nats-tls-ca", junk}, nats...),
			fragments: []string{"--nats-tls-ca (ACTIONSYNC_NATS_TLS_CA)", "holds no PEM certificate"}},
		{name: "nats_tls_ca_missing", args: append([]string{"--nats-tls-ca", missing}, nats...),
			fragments: []string{"--nats-tls-ca (ACTIONSYNC_NATS_TLS_CA)", "no such file"}},
		{name: "nats_creds_missing", args: append([]string{"--nats-creds", missing}, nats...),
			fragments: []string{"--nats-creds (ACTIONSYNC_NATS_CREDS)", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadConfig(tt.args, envOf(tt.env))
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a *usageError (exit code 2)", err)
			}
			for _, want := range tt.fragments {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// TestLoadConfig_natsURLRedacted checks that a refused --nats-url does not show its
// password in the error.
func TestLoadConfig_natsURLRedacted(t *testing.T) {
	t.Parallel()
	_, err := loadConfig([]string{"--broker", "nats", "--nats-url", "nats://me:s3cret@n1:4222,https://me:s3cret@n2"}, envOf(nil))
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "nats://me:xxxxx@n1:4222") {
		t.Errorf("got %v, want an error with the password redacted", err)
	}
}
