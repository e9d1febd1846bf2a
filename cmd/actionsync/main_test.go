package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/actionsync/actionsync/broker/jetstream/embedded"
	actionsyncv1connect "github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// runMainEnv makes the test binary run main() instead of the tests, so that tests can
// check exit codes and signal handling of the real process.
const runMainEnv = "ACTIONSYNC_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	if url := os.Getenv(runSubscriberEnv); url != "" {
		os.Exit(runSubscriber(url))
	}
	os.Exit(m.Run())
}

// command returns the test binary set up to run main() with args, with env added to an
// environment free of ACTIONSYNC_* variables.
func command(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ACTIONSYNC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(append(cmd.Env, runMainEnv+"=1"), env...)
	return cmd
}

func TestRun_version(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"version", "--version", "-version"} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), []string{arg}, &stdout, &stderr, envOf(nil)); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		if got := stdout.String(); !regexp.MustCompile(`^actionsync dev \(go1\.\d+`).MatchString(got) {
			t.Errorf("%s: got %q, want actionsync dev (go1.N...)", arg, got)
		}
	}
}

func TestMain_exitCodes(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	lockedDir := t.TempDir()
	holder, err := embedded.Start(embedded.Config{DataDir: lockedDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(holder.Shutdown)
	unreachable := "nats://" + closedAddr(t)

	tests := []struct {
		name         string
		args         []string
		env          []string
		code         int
		stdout       string // fragments expected
		stderr       []string
		stderrAbsent string
	}{
		{name: "version", args: []string{"--version"}, code: 0, stdout: "actionsync dev (go1."},
		{name: "help", args: []string{"help"}, code: 0, stdout: "env ACTIONSYNC_MAX_READ_BYTES, default 8MiB"},
		{name: "serve_help", args: []string{"serve", "-h"}, code: 0, stdout: "--shutdown-timeout"},
		{name: "no_command", args: nil, code: 2, stderr: []string{"no command given", "Usage:"}},
		{name: "unknown_command", args: []string{"frobnicate"}, code: 2,
			stderr: []string{`actionsync: unknown command "frobnicate"`, "Usage:", "--cors-origins"}},
		{name: "unknown_flag", args: []string{"serve", "--bogus"}, code: 2,
			stderr: []string{"flag provided but not defined: -bogus", "Usage:"}},
		{name: "bad_flag_value", args: []string{"serve", "--history-size", "-1"}, code: 2,
			stderr:       []string{`--history-size (ACTIONSYNC_HISTORY_SIZE): got "-1" from the flag`, "Run 'actionsync help'"},
			stderrAbsent: "Usage:"},
		{name: "bad_env_value", args: []string{"serve"}, env: []string{"ACTIONSYNC_HEARTBEAT=often"}, code: 2,
			stderr: []string{`--heartbeat (ACTIONSYNC_HEARTBEAT): got "often" from the environment`}},
		{name: "half_tls", args: []string{"serve", "--tls-key", "key.pem"}, code: 2,
			stderr: []string{"--tls-key (ACTIONSYNC_TLS_KEY) is set but --tls-cert (ACTIONSYNC_TLS_CERT) is not"}},
		{name: "data_dir_and_nats_url", args: []string{"serve", "--data-dir", t.TempDir(), "--nats-url", unreachable}, code: 2,
			stderr: []string{"--data-dir (ACTIONSYNC_DATA_DIR) and --nats-url (ACTIONSYNC_NATS_URL) are both set"}},
		{name: "broker_nats_without_url", args: []string{"serve"}, env: []string{"ACTIONSYNC_BROKER=nats"}, code: 2,
			stderr: []string{"--broker (ACTIONSYNC_BROKER) nats needs --nats-url (ACTIONSYNC_NATS_URL)"}},
		{name: "nats_unreachable", args: []string{"serve", "--addr", "127.0.0.1:0", "--broker", "nats", "--nats-url", unreachable}, code: 1,
			stderr: []string{"actionsync: connect to NATS at " + unreachable}, stderrAbsent: "actionsync listening"},
		{name: "data_dir_locked", args: []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", lockedDir}, code: 1,
			stderr:       []string{"actionsync: start embedded NATS on --data-dir: " + lockedDir + ": data directory in use by another process"},
			stderrAbsent: "actionsync listening"},
		{name: "address_in_use", args: []string{"serve", "--addr", busy.Addr().String()}, code: 1,
			stderr: []string{"actionsync: listen:", "address already in use"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := command(t, tt.env, tt.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if exitErr := (*exec.ExitError)(nil); errors.As(err, &exitErr) {
				code = exitErr.ExitCode()
			} else if err != nil {
				t.Fatalf("run: %v", err)
			}
			if code != tt.code {
				t.Errorf("exit code: got %d, want %d\nstderr: %s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout: got %q, want it to contain %q", stdout.String(), tt.stdout)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr: got %q, want it to contain %q", stderr.String(), want)
				}
			}
			if tt.stderrAbsent != "" && strings.Contains(stderr.String(), tt.stderrAbsent) {
				t.Errorf("stderr: got %q, want it without %q", stderr.String(), tt.stderrAbsent)
			}
		})
	}
}

func TestMain_signals(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			p := startMain(t, "serve", "--addr", "127.0.0.1:0")

			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/grpc.health.v1.Health/Check", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("health: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("health: got status %d, want 200", resp.StatusCode)
			}

			if err := p.stop(t, sig); err != nil {
				t.Errorf("after %v: got %v, want exit code 0\n%s", sig, err, p.log.String())
			}
			if !strings.Contains(p.log.String(), `msg="actionsync stopped"`) {
				t.Errorf("log lacks the stop line:\n%s", p.log.String())
			}
		})
	}
}

// TestMain_sigtermDataDir checks that SIGTERM shuts the embedded NATS server down
// cleanly: the process exits 0, the data directory is unlocked, and the acknowledged
// action is in its file store.
func TestMain_sigtermDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startMain(t, "serve", "--addr", "127.0.0.1:0", "--data-dir", dir)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	client := actionsyncv1connect.NewSyncServiceClient(http.DefaultClient, p.url)
	if ack, err := dispatchOne(ctx, t, client, "board:sigterm", "a1"); err != nil || ack.GetSeq() != 1 {
		t.Fatalf("Dispatch: got %v, %v; want seq 1", ack, err)
	}
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("after SIGTERM: got %v, want exit code 0\n%s", err, p.log.String())
	}

	srv, err := embedded.Start(embedded.Config{DataDir: dir})
	if err != nil {
		t.Fatalf("data dir after SIGTERM: %v", err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "ACTIONSYNC")
	if err != nil {
		t.Fatalf("stream after SIGTERM: %v", err)
	}
	if info, err := stream.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("stream after SIGTERM: got %+v, %v; want 1 message", info, err)
	}
}

// mainProcess is the test binary running main() with a serve command.
type mainProcess struct {
	cmd     *exec.Cmd
	url     string
	log     bytes.Buffer // the text log; read it only after stop
	scanned chan struct{}
}

// startMain starts main() with args and returns once its start-up line gives its URL.
func startMain(t *testing.T, args ...string) *mainProcess {
	t.Helper()
	p := &mainProcess{cmd: command(t, nil, args...), scanned: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Read the text log: the start-up line gives the URL; keep the rest.
	urls := make(chan string, 1)
	go func() {
		defer close(p.scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.log.WriteString(sc.Text() + "\n")
			if m := regexp.MustCompile(`msg="actionsync listening".* url=(\S+)`).FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
	}()
	select {
	case p.url = <-urls:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.scanned
		t.Fatalf("no start-up line after 10s:\n%s", p.log.String())
	}
	return p
}

// stop sends sig and returns what the process exited with.
func (p *mainProcess) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		<-p.scanned // Wait must not close the pipe before the log is read
		exited <- p.cmd.Wait()
	}()
	select {
	case err := <-exited:
		return err
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatalf("still running 10s after %v", sig)
		return nil
	}
}
