package main

import (
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestRunLoad_ExactlyOnceInOrder runs a tiny round for each design and protocol against an
// in-process server and checks that every subscriber got its board's messages exactly
// once, in order.
func TestRunLoad_ExactlyOnceInOrder(t *testing.T) {
	t.Parallel()
	for _, d := range []design{designQueue, designDirect} {
		for _, protocol := range []string{"h1", "h2c"} {
			t.Run(string(d)+"_"+protocol, func(t *testing.T) {
				t.Parallel()
				url := startServer(t, d)
				cfg := loadConfig{
					url: url, protocol: protocol, boards: 10, perBoard: 2, rate: 200,
					duration: time.Second, warmup: 100 * time.Millisecond,
					serverCPU: -1, inflight: 8, msgBytes: 300, seed: 1, drain: 2 * time.Second,
				}
				r, err := runLoad(t.Context(), cfg, t.Logf)
				if err != nil {
					t.Fatalf("runLoad: %v", err)
				}
				if r.Requests < 150 {
					t.Errorf("requests in the window: got %d, want about 200", r.Requests)
				}
				if want := r.Requests * cfg.perBoard; r.Deliveries != want {
					t.Errorf("deliveries in the window: got %d, want %d (requests x per-board)", r.Deliveries, want)
				}
				if r.P99Ms == nil {
					t.Errorf("p99: got null, want a latency")
				}
			})
		}
	}
}

// TestRunLoad_UnaryOnly checks the phase without subscribers.
func TestRunLoad_UnaryOnly(t *testing.T) {
	t.Parallel()
	url := startServer(t, designQueue)
	cfg := loadConfig{
		url: url, protocol: "h2c", boards: 10, perBoard: 0, rate: 200,
		duration: 500 * time.Millisecond, serverCPU: -1, inflight: 8, msgBytes: 300, seed: 1, drain: time.Second,
	}
	r, err := runLoad(t.Context(), cfg, t.Logf)
	if err != nil {
		t.Fatalf("runLoad: %v", err)
	}
	if r.Requests < 75 || r.Deliveries != 0 || r.PerBoard != 0 {
		t.Errorf("got %d requests, %d deliveries, per_board %d; want about 100, 0, 0", r.Requests, r.Deliveries, r.PerBoard)
	}
}

// TestRunLoad_DetectsLoss checks that the delivery check fails when a subscriber misses
// messages: board 1's subscribers get their headers and nothing more.
func TestRunLoad_DetectsLoss(t *testing.T) {
	t.Parallel()
	s, err := newServer(designQueue)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /publish", s.Handler())
	mux.HandleFunc("GET /subscribe", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("board") != "1" {
			s.Handler().ServeHTTP(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush() // the client sees a failure as a lost message
		<-r.Context().Done()
	})
	cfg := loadConfig{
		url: serve(t, mux), protocol: "h1", boards: 2, perBoard: 1, rate: 100,
		duration: 200 * time.Millisecond, serverCPU: -1, inflight: 4, msgBytes: 300, seed: 1, drain: 300 * time.Millisecond,
	}
	r, err := runLoad(t.Context(), cfg, t.Logf)
	if !errors.Is(err, errViolation) {
		t.Fatalf("runLoad: got error %v, want %v", err, errViolation)
	}
	if r.Lost == 0 || r.OK {
		t.Errorf("got lost %d, ok %v; want lost > 0, ok false", r.Lost, r.OK)
	}
}

func TestViolations_Check(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		got, want []uint64
		out       violations
	}{
		{"exact", []uint64{3, 4, 7}, []uint64{3, 4, 7}, violations{}},
		{"none_sent", nil, nil, violations{}},
		{"lost", []uint64{3, 7}, []uint64{3, 4, 7}, violations{Lost: 1}},
		{"duplicated", []uint64{3, 4, 4, 7}, []uint64{3, 4, 7}, violations{Duplicated: 1}},
		{"reordered", []uint64{4, 3, 7}, []uint64{3, 4, 7}, violations{Reordered: 1}},
		{"unexpected", []uint64{3, 4, 5, 7}, []uint64{3, 4, 7}, violations{Unexpected: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var v violations
			v.check(tt.got, tt.want)
			if v != tt.out {
				t.Errorf("check(%v, %v): got %+v, want %+v", tt.got, tt.want, v, tt.out)
			}
		})
	}
}

func startServer(t *testing.T, d design) string {
	t.Helper()
	s, err := newServer(d)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, s.Handler())
}

// serve serves h on a loopback port (HTTP/1.1 and h2c) until the test ends and returns
// its base URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(h)
	go func() { _ = srv.Serve(ln) }() // returns ErrServerClosed at Close
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}
