package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

var metricsLine = regexp.MustCompile(`msg="actionsync metrics listener".* url=(\S+)`)

// scrape reads url's Prometheus text into "name{labels}" -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %s: %s", url, res.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetrics_scrape runs a scripted scenario against a real server process and checks
// the exact counts its /metrics reports.
func TestMetrics_scrape(t *testing.T) {
	p := startServe(t, "metrics", "--metrics-addr", "127.0.0.1:0")
	var metricsURL string
	waitUntil(t, 10*time.Second, "the metrics listener's log line", func() bool {
		m := metricsLine.FindStringSubmatch(p.logs())
		if m != nil {
			metricsURL = m[1]
		}
		return m != nil
	})
	c := p.client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const dispatch = `/actionsync.v1.SyncService/Dispatch`
	const subscribe = `/actionsync.v1.SyncService/Subscribe`

	// Two live subscribers on "m".
	type sub struct {
		stream *connect.ServerStreamForClient[actionsyncv1.SubscribeResponse]
		got    int
		epoch  string
		ready  bool // a ready or a reset came
	}
	open := func(pos *actionsyncv1.Position) *sub {
		s, err := c.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{pos}}))
		if err != nil {
			t.Fatal(err)
		}
		return &sub{stream: s}
	}
	// until reads s until it has got n actions and a ready (or reset).
	until := func(s *sub, n int) {
		t.Helper()
		for !(s.ready && s.got >= n) {
			if !s.stream.Receive() {
				t.Fatalf("stream ended: %v", s.stream.Err())
			}
			m := s.stream.Msg()
			s.got += len(m.GetActions())
			if r := m.GetReady(); r != nil {
				s.ready, s.epoch = true, r.GetEpoch()
			}
			if m.GetReset_() != nil {
				s.ready = true
			}
		}
	}
	live := []*sub{open(&actionsyncv1.Position{Channel: "m"}), open(&actionsyncv1.Position{Channel: "m"})}
	for _, s := range live {
		until(s, 0)
	}

	body, _ := structpb.NewValue(map[string]any{"title": "t"})
	act := func(typ, id string) *actionsyncv1.Action {
		return &actionsyncv1.Action{Type: typ, Id: id, Payload: body}
	}
	send := func(actions ...*actionsyncv1.Action) error {
		_, err := c.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "m", Actions: actions}))
		return err
	}
	if err := send(act("ADD", "a"), act("ADD", "b"), act("ADD", "c")); err != nil {
		t.Fatal(err)
	}
	if err := send(act("ADD", "a")); err != nil { // a duplicate
		t.Fatal(err)
	}
	if err := send(act("", "d"), act("ADD", "e")); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("dispatch with an empty type: %v, want InvalidArgument", err)
	}
	for _, s := range live {
		until(s, 3)
	}
	// One resumes after seq 1 (2 actions replayed), one from another epoch (a reset).
	resumed := open(&actionsyncv1.Position{Channel: "m", AfterSeq: 1, Epoch: live[0].epoch})
	until(resumed, 2)
	reset := open(&actionsyncv1.Position{Channel: "m", AfterSeq: 1, Epoch: "another"})
	until(reset, 0)

	m := scrape(t, metricsURL)
	for k, want := range map[string]float64{
		`actionsync_dispatches_total{code="ok"}`:                                           2,
		`actionsync_dispatches_total{code="invalid_argument"}`:                             1,
		`actionsync_actions_accepted_total`:                                                3,
		`actionsync_actions_duplicate_total`:                                               1,
		`actionsync_actions_refused_total{code="invalid_argument"}`:                        2,
		`actionsync_deliveries_total`:                                                      3 + 3 + 2,
		`actionsync_replayed_actions_total`:                                                2,
		`actionsync_resets_total`:                                                          1,
		`actionsync_slow_consumer_cutoffs_total`:                                           0,
		`actionsync_channels`:                                                              1,
		`actionsync_subscriptions`:                                                         4,
		`actionsync_dispatch_duration_seconds_count`:                                       2,
		`actionsync_rpcs_total{code="ok",procedure="` + dispatch + `",protocol="connect"}`: 2,
		`actionsync_rpcs_total{code="invalid_argument",procedure="` + dispatch + `",protocol="connect"}`: 1,
		`actionsync_streams_active{procedure="` + subscribe + `",protocol="connect"}`:                    4,
		`actionsync_unary_rpc_duration_seconds_count{procedure="` + dispatch + `"}`:                      3,
	} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if m[`actionsync_stream_batch_actions_sum`] != 8 || m[`actionsync_delivered_bytes_total`] <= 0 {
		t.Errorf("batch actions sum %v (want 8), delivered bytes %v", m[`actionsync_stream_batch_actions_sum`], m[`actionsync_delivered_bytes_total`])
	}

	// Streams that end are counted by their code, and no longer active.
	cancel()
	waitUntil(t, 10*time.Second, "the streams to end", func() bool {
		m = scrape(t, metricsURL)
		return m[`actionsync_streams_active{procedure="`+subscribe+`",protocol="connect"}`] == 0
	})
	if got := m[`actionsync_rpcs_total{code="canceled",procedure="`+subscribe+`",protocol="connect"}`]; got != 4 {
		t.Errorf("cancelled Subscribe streams: %v, want 4", got)
	}
}
