// Command actionsync-bench is the load tool for an actionsync server started separately.
// It mirrors the Socket.IO peer benchmark (shared/peers/socketio/bench.js): same workload,
// same JSON result keys where they mean the same. One phase per call; it prints ONE JSON
// line on stdout and logs to stderr.
//
// Modes:
//
//	--mode tput --n N            N subscribers (each on its own connection, or --conns K
//	                             shared ones) follow one channel live; one publisher keeps
//	                             at most --window actions in flight (an action completes
//	                             when all N subscribers got it), one action per Dispatch,
//	                             as fast as that allows. Reports deliveries/s, server and
//	                             client CPU%, deliveries per server CPU-second.
//	--mode lat --n N --rate R    the publisher dispatches R actions/s on an absolute
//	                             schedule; reports send->receive percentiles over all
//	                             deliveries, offered vs achieved rate, lost deliveries.
//	--mode idle --k 2000,5000    K idle subscribers (own connections, or --conns K shared);
//	                             server VmRSS with 0 and after each K, KiB per subscriber.
//	--mode summary --dir DIR     combines the phase results bench/run.sh saved in DIR (and
//	                             the peer's line) into the final line of a run.
//	--mode compare --dir DIR     combines the runs bench/backends.sh saved in DIR: median,
//	                             min and max per backend and phase, the share of the
//	                             memory backend's efficiency, the storage goals.
//
// Several nodes: --sub-urls spreads the subscribers round-robin over the nodes' base
// URLs (the publisher stays on --url), and --server-pid takes every server process
// (nodes, their nats-server), whose CPU and RSS are summed. --label names the setup in
// the JSON line.
//
// Every mode checks what it measures: each subscriber must receive every action exactly
// once, in seq order. Any violation is printed and the exit code is 1 (the JSON line is
// still printed). Exit codes: 0 success, 1 failure or violation, 2 bad command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// errUsage marks a bad command line: exit code 2.
var errUsage = errors.New("usage")

// run executes one phase described by args (without the program name), writes its JSON
// result line to stdout and progress to stderr. It returns an error wrapping
// errViolation if the exactly-once, in-order check failed (after printing the result).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	switch cfg.mode {
	case "summary":
		return summarize(cfg, stdout)
	case "compare":
		return compare(cfg, stdout, stderr)
	}
	if lim, err := raiseNoFile(); err != nil {
		logf(stderr, cfg.mode, "warning: raise RLIMIT_NOFILE: %v", err)
	} else if need := uint64(cfg.connsNeeded()) + 64; lim < need {
		logf(stderr, cfg.mode, "warning: RLIMIT_NOFILE is %d, this phase needs about %d", lim, need)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	b := newBench(cfg, stderr)
	var res *result
	switch cfg.mode {
	case "tput":
		res, err = b.runTput(ctx)
	case "lat":
		res, err = b.runLat(ctx)
	case "idle":
		res, err = b.runIdle(ctx)
	}
	if res != nil {
		describeSetup(res, cfg)
		line, merr := res.MarshalJSON()
		if merr != nil {
			return errors.Join(err, merr)
		}
		if _, werr := fmt.Fprintf(stdout, "%s\n", line); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}

// describeSetup names what was measured in r: --label first (when given), and how many
// nodes the subscribers were spread over and how many server processes were measured,
// when more than one.
func describeSetup(r *result, cfg config) {
	if cfg.label != "" {
		r.setFirst("label", cfg.label)
	}
	if len(cfg.subURLs) > 1 {
		r.set("sub_nodes", len(cfg.subURLs))
	}
	if len(cfg.serverPIDs) > 1 {
		r.set("server_procs", len(cfg.serverPIDs))
	}
}

// exitCode reports err on stderr and maps it to the process exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "actionsync-bench: %v\n", err)
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

// logf writes one progress line to w, prefixed like the peer's ("[bench MODE]").
func logf(w io.Writer, mode, format string, a ...any) {
	fmt.Fprintf(w, "[bench %s] %s\n", mode, fmt.Sprintf(format, a...))
}
