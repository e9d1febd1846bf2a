// Command actionsync is the actionsync server: it relays Redux actions between clients
// over Connect, gRPC and gRPC-Web (actionsync.v1.SyncService), with gRPC reflection and
// health, CORS for browsers, h2c or TLS, the ToDo board demo page at "/", and a graceful
// shutdown on SIGINT/SIGTERM.
//
// Usage:
//
//	actionsync serve [flags]   run the server (flags also read ACTIONSYNC_* variables)
//	actionsync token [flags]   print a development token (HS256)
//	actionsync version         print the version
//	actionsync help            print the usage
//
// Exit codes: 0 success, 1 runtime failure, 2 bad command line or configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

// version is the release version, set at build time with
// -ldflags "-X main.version=v1.2.3". Without it, the module version recorded by
// `go install module@version` is used, else "dev".
var version = "dev"

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a bad command line or configuration: exit code 2.
type usageError struct {
	err       error
	showUsage bool // print the full usage after the error, not just a hint
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// run executes the command line args (without the program name). It reads the
// environment only through getenv, writes command output to stdout and logs to stderr,
// and returns when the command is done; for serve, that is after ctx is cancelled or
// SIGINT/SIGTERM arrives and the server has shut down.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return &usageError{err: errors.New("no command given"), showUsage: true}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		cfg, err := loadConfig(rest, getenv)
		if errors.Is(err, flag.ErrHelp) {
			_, err = io.WriteString(stdout, usage())
			return err
		}
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		return serve(ctx, cfg, stderr)
	case "token":
		return runToken(rest, stdout, getenv, time.Now())
	case "stats":
		return runStats(ctx, rest, stdout, getenv)
	case "version", "-version", "--version":
		if len(rest) > 0 {
			return &usageError{err: fmt.Errorf("%s: unexpected argument %q", cmd, rest[0])}
		}
		_, err := fmt.Fprintln(stdout, versionString())
		return err
	case "help", "-help", "--help", "-h":
		_, err := io.WriteString(stdout, usage())
		return err
	default:
		return &usageError{err: fmt.Errorf("unknown command %q", cmd), showUsage: true}
	}
}

// exitCode reports err on stderr and returns the process exit code for it: 0 for nil,
// 2 for a usage error (with the usage text or a hint), 1 for anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "actionsync: %v\n", err)
	var ue *usageError
	if !errors.As(err, &ue) {
		return 1
	}
	if ue.showUsage {
		fmt.Fprintf(stderr, "\n%s", usage())
	} else {
		fmt.Fprintln(stderr, "Run 'actionsync help' for usage.")
	}
	return 2
}

// resolvedVersion returns the release version: the -ldflags one, else the module
// version from the build info, else "dev".
func resolvedVersion() string {
	if version != "dev" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return version
}

// versionString is the one-line answer to `actionsync version`.
func versionString() string {
	goVersion := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
	}
	return fmt.Sprintf("actionsync %s (%s)", resolvedVersion(), goVersion)
}
