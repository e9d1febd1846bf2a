// Command floor measures what net/http itself costs for actionsync's "many small boards"
// workload, with neither connect-go nor actionsync: C boards with P subscribers each, every
// subscriber on its own connection holding one streaming response, and one publisher
// sending RATE messages/s in total, each to a random board in its own POST. The server
// fans each message out to its board's subscribers, one write and flush per delivery. Its
// figures are the transport's floor, to compare actionsync's with.
//
//	floor serve --addr 127.0.0.1:PORT [--design queue|direct] [--debug-addr ADDR]
//	floor load --url http://127.0.0.1:PORT --protocol h1|h2c --boards 1000 --per-board 4 \
//	    --rate 2000 --duration 6 --warmup 1 --server-pid PID [--server-cpu 0]
//
// load prints one JSON line (see result in load.go) and exits 1 if a subscriber missed,
// repeated or reordered a message of its board, or a publish failed; 2 on a bad command
// line. With --per-board 0 (or --boards 0) there is no subscriber, and
// srv_cpu_us_per_request is what one publish request costs the server.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

// errUsage marks a bad command line.
var errUsage = errors.New("usage: floor serve|load [flags]")

// run runs the subcommand args name (without the program name). load writes its JSON
// line to stdout, even when the delivery check fails.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	if _, err := raiseNoFile(); err != nil {
		fmt.Fprintf(stderr, "floor: warning: raise RLIMIT_NOFILE: %v\n", err)
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stderr)
	case "load":
		return runLoadCommand(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: got subcommand %q", errUsage, args[0])
}

// runServe serves until ctx is done.
func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	d := fs.String("design", string(designQueue), "how messages reach subscribers: queue (a goroutine per stream) or direct (the publisher writes)")
	debugAddr := fs.String("debug-addr", "", "if set, serve net/http/pprof on this address")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	s, err := newServer(design(*d))
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := newHTTPServer(s.Handler())
	servers := []*http.Server{srv}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if *debugAddr != "" {
		dbg := &http.Server{Addr: *debugAddr, Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, dbg)
		go func() { errc <- dbg.ListenAndServe() }()
	}
	fmt.Fprintf(stderr, "floor: serving on %s, design %s, GOMAXPROCS %d\n", ln.Addr(), *d, runtime.GOMAXPROCS(0))
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	// Streams never end on their own: close rather than wait for them.
	for _, s := range servers {
		_ = s.Close() // shutting down; nothing to do about an error
	}
	return nil
}

// pprofMux serves net/http/pprof under /debug/pprof/.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// runLoadCommand runs one load phase and prints its result.
func runLoadCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg loadConfig
	fs.StringVar(&cfg.url, "url", "http://127.0.0.1:8090", "the server's base URL")
	fs.StringVar(&cfg.protocol, "protocol", "h1", "h1 (HTTP/1.1) or h2c (HTTP/2 without TLS, prior knowledge)")
	fs.IntVar(&cfg.boards, "boards", 1000, "boards; 0: no subscriber")
	fs.IntVar(&cfg.perBoard, "per-board", 4, "subscribers per board, each on its own connection; 0: no subscriber")
	fs.Float64Var(&cfg.rate, "rate", 2000, "publish requests per second, in total")
	duration := fs.Float64("duration", 6, "the measured window, in seconds")
	warmup := fs.Float64("warmup", 1, "sending before the window, in seconds")
	fs.IntVar(&cfg.serverPID, "server-pid", 0, "the server's pid, for its CPU time; 0: no CPU figures")
	fs.IntVar(&cfg.serverCPU, "server-cpu", -1, "the core the server is pinned to, to report how busy it was; -1: none")
	fs.IntVar(&cfg.inflight, "inflight", 64, "the most publish requests in flight at once")
	fs.IntVar(&cfg.msgBytes, "msg-bytes", 300, "the size of a message")
	fs.Uint64Var(&cfg.seed, "seed", 1, "seeds the choice of boards")
	drain := fs.Float64("drain", 5, "how long to wait for the last deliveries, in seconds")
	fs.StringVar(&cfg.label, "label", "", "copied to the JSON line")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	cfg.duration = seconds(*duration)
	cfg.warmup = seconds(*warmup)
	cfg.drain = seconds(*drain)
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "floor load: "+format+"\n", args...) }
	r, err := runLoad(ctx, cfg, logf)
	if err != nil && !errors.Is(err, errViolation) {
		return err
	}
	if encErr := json.NewEncoder(stdout).Encode(r); encErr != nil {
		return errors.Join(err, encErr)
	}
	return err
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
