//go:build !race

// Package regress is CI's check against gross performance regressions. Machines differ
// and a shared CI runner is noisy, so it never compares a time with a fixed number:
// each figure is a ratio of two costs measured in the same run, on the same machine,
// moments apart. The process's CPU time (server and clients, all in this process) is
// what is measured.
//
//   - batched fan-out: CPU per delivery of actions fanned out to 100 subscribers, over
//     CPU per message of a bare net/http h2c stream that flushes every message. Batching
//     makes the first a small fraction of the second; without it they are alike.
//
//   - unary Dispatch: CPU per Dispatch of one action, over CPU per bare net/http h2c
//     POST of the same bytes. The difference is connect, validation and the broker.
//
//     go test -count=1 -v ./bench/regress/
//
// The race detector changes the costs it would compare, so the package builds without it.
package regress

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

// Limits: several times what this machine kind measures (see TestRegression_*), so that
// only a gross regression fails.
const (
	maxFanoutPerPOST   = 0.09
	maxDispatchPerPOST = 4.0
)

// cpuTime is the CPU time this process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure returns the CPU time of fn per unit, the best of three rounds (noise only adds).
func measure(t *testing.T, units int, fn func()) time.Duration {
	best := time.Duration(1<<63 - 1)
	for range 3 {
		c0 := cpuTime(t)
		fn()
		best = min(best, (cpuTime(t)-c0)/time.Duration(units))
	}
	return best
}

func h2cServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func h2cClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &p}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// action is actionsync-bench's action: a 200-byte JSON object payload.
func action() *actionsyncv1.Action {
	v, _ := structpb.NewValue(map[string]any{"stageId": "stage-000042",
		"stageTitle": "Stage title for the relay benchmark - lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. "[:158]})
	return &actionsyncv1.Action{Type: "UPDATE_STAGE_TITLE", Payload: v}
}

func actionsync(t *testing.T, opts service.Options) actionsyncv1connect.SyncServiceClient {
	b := memory.New(memory.Options{})
	opts.Logger = slog.New(slog.DiscardHandler)
	svc, err := service.New(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(svc.Handler())
	srv := h2cServer(t, mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
		_ = b.Close()
	})
	return actionsyncv1connect.NewSyncServiceClient(h2cClient(t), srv.URL)
}

// barePOSTCost is the CPU of a bare net/http h2c POST of body, answered with 16 bytes:
// the transport's cost of one request, client and server.
func barePOSTCost(t *testing.T, calls int, body []byte) time.Duration {
	srv := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/proto")
		_, _ = w.Write(b[:16])
	}))
	hc := h2cClient(t)
	return measure(t, calls, func() {
		for range calls {
			res, err := hc.Post(srv.URL, "application/proto", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}

// fanoutCost is the CPU per delivery of actions dispatched one per request to subs
// subscribers of a channel, window at a time: the next window is sent once every
// subscriber has received the last one.
func fanoutCost(t *testing.T, subs, actions, window int) time.Duration {
	c := actionsync(t, service.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	round := 0
	return measure(t, subs*actions, func() {
		round++
		channel := fmt.Sprintf("fanout-%d", round)
		var received, ready sync.WaitGroup
		received.Add(subs)
		ready.Add(subs)
		progress := make([]atomic.Int64, subs)
		for i := range subs {
			stream, err := c.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: channel}}}))
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				defer received.Done()
				defer stream.Close()
				isReady := false
				for progress[i].Load() < int64(actions) && stream.Receive() {
					m := stream.Msg()
					if m.GetReady() != nil && !isReady {
						isReady = true
						ready.Done()
					}
					progress[i].Add(int64(len(m.GetActions())))
				}
				if got := progress[i].Load(); got != int64(actions) {
					t.Errorf("a subscriber got %d actions, want %d: %v", got, actions, stream.Err())
					progress[i].Store(int64(actions)) // do not hold the publisher
					if !isReady {
						ready.Done()
					}
				}
			}()
		}
		ready.Wait()
		for sent := 0; sent < actions; {
			n := min(window, actions-sent)
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					if _, err := c.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: channel, Actions: []*actionsyncv1.Action{action()}})); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			sent += n
			for i := range progress {
				for progress[i].Load() < int64(sent) {
					time.Sleep(100 * time.Microsecond)
				}
			}
		}
		received.Wait()
	})
}

// TestRegression_Fanout: actions fanned out to 500 subscribers, batched as the service
// does, against a bare h2c POST. Measured on AMD EPYC (2 cores): 0.043-0.063; with one
// action per response (MaxBatchActions 1) 0.135-0.143, which the limit refuses.
func TestRegression_Fanout(t *testing.T) {
	const subs, actions, window = 500, 600, 64
	post := barePOSTCost(t, 2000, mustMarshal(t, dispatchRequest()))
	batched := fanoutCost(t, subs, actions, window)
	r := ratio(batched, post)
	t.Logf("fan-out to %d subscribers, %d actions in flight: %v CPU per delivery (dispatch included); bare h2c POST %v; ratio %.3f (limit %g)", subs, window, batched, post, r, maxFanoutPerPOST)
	if r > maxFanoutPerPOST {
		t.Errorf("a delivery costs %.3f of a bare POST, limit %g: has batching stopped?", r, maxFanoutPerPOST)
	}
}

// TestRegression_Dispatch: a unary Dispatch of one action against a bare h2c POST of the
// same bytes. Measured on AMD EPYC (2 cores): 1.31-1.42.
func TestRegression_Dispatch(t *testing.T) {
	const calls = 3000
	post := barePOSTCost(t, calls, mustMarshal(t, dispatchRequest()))
	c := actionsync(t, service.Options{})
	cost := measure(t, calls, func() {
		for range calls {
			if _, err := c.Dispatch(t.Context(), connect.NewRequest(dispatchRequest())); err != nil {
				t.Fatal(err)
			}
		}
	})
	r := ratio(cost, post)
	t.Logf("Dispatch of one action: %v CPU (client and server); bare h2c POST: %v; ratio %.2f (limit %g)", cost, post, r, maxDispatchPerPOST)
	if r > maxDispatchPerPOST {
		t.Errorf("a Dispatch costs %.2f bare h2c POSTs, limit %g", r, maxDispatchPerPOST)
	}
}

func dispatchRequest() *actionsyncv1.DispatchRequest {
	return &actionsyncv1.DispatchRequest{Channel: "d", Actions: []*actionsyncv1.Action{action()}}
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
