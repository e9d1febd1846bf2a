package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// statsUsage is the usage of the stats command.
const statsUsage = `Usage: actionsync stats [flags]

Prints a running server's figures and its busiest channels, from the AdminService on its
--admin-addr listener (the same as
  npx buf curl --http2-prior-knowledge http://localhost:9091/actionsync.v1.AdminService/GetStats).

Flags:
  --admin-url URL          the server's admin listener (default: $ACTIONSYNC_ADMIN_URL, else http://localhost:9091)
  --admin-token-file FILE  the server's --admin-token-file, if it has one (default: $ACTIONSYNC_ADMIN_TOKEN_FILE)
  --channel-prefix PREFIX  list only channels whose name starts with PREFIX
  --limit N                the most channels listed, most subscribers first (default 20, at most 1000)
  --json                   print the response as JSON
`

// runStats is the stats command.
func runStats(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("admin-url", cmp.Or(getenv("ACTIONSYNC_ADMIN_URL"), "http://localhost:9091"), "")
	tokenFile := fs.String("admin-token-file", getenv("ACTIONSYNC_ADMIN_TOKEN_FILE"), "")
	prefix := fs.String("channel-prefix", "", "")
	limit := fs.Uint("limit", 20, "")
	asJSON := fs.Bool("json", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, err = io.WriteString(stdout, statsUsage)
			return err
		}
		return &usageError{err: fmt.Errorf("stats: %w", err)}
	}
	if fs.NArg() > 0 {
		return &usageError{err: fmt.Errorf("stats: unexpected argument %q", fs.Arg(0))}
	}
	if u, err := neturl.Parse(*url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &usageError{err: fmt.Errorf("stats: --admin-url: got %q, want http://HOST:PORT", *url)}
	}
	req := connect.NewRequest(&actionsyncv1.GetStatsRequest{ChannelPrefix: *prefix, Limit: uint32(*limit)})
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return &usageError{err: fmt.Errorf("stats: %w", err)}
		}
		req.Header().Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP1(true)
	client := actionsyncv1connect.NewAdminServiceClient(&http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}, *url)
	res, err := client.GetStats(ctx, req)
	if err != nil {
		return fmt.Errorf("stats: %s: %w", *url, err)
	}
	if *asJSON {
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(res.Msg)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, string(b))
		return err
	}
	return printStats(stdout, res.Msg)
}

// printStats prints r for a terminal.
func printStats(w io.Writer, r *actionsyncv1.GetStatsResponse) error {
	s := r.GetServer()
	avail := "SERVING"
	if !s.GetAvailable() {
		avail = "NOT_SERVING"
	}
	up := ""
	if s.GetStarted() != nil {
		up = ", up " + time.Since(s.GetStarted().AsTime()).Round(time.Second).String()
	}
	fmt.Fprintf(w, "actionsync %s on %s: %s%s\n", s.GetVersion(), s.GetBroker(), avail, up)
	fmt.Fprintf(w, "channels %d, subscriptions %d, streams %d, goroutines %d, heap %s, memory %s\n\n",
		s.GetChannels(), s.GetSubscriptions(), s.GetStreams(), s.GetGoroutines(), mib(s.GetHeapBytes()), mib(s.GetMemoryBytes()))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CHANNEL\tSUBSCRIBERS\tHEAD\tHISTORY FROM\tACTIONS\tBYTES\tSNAPSHOT\t")
	for _, c := range r.GetChannels() {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", c.GetChannel(), c.GetSubscribers(), c.GetHeadSeq(), c.GetFirstSeq(), c.GetHistoryActions(), c.GetHistoryBytes(), c.GetSnapshotSeq())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d of %d matching channels listed\n", len(r.GetChannels()), r.GetChannelsMatched())
	return err
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
