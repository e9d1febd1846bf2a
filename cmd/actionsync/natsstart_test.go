package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/actionsync/actionsync/broker/jetstream/embedded"
)

// TestNATSCluster_startTogether: a process started at the same moment as its NATS
// cluster, before the cluster has elected a JetStream meta leader (docker compose up),
// starts once the cluster is ready, well within its start-up deadline, instead of
// spending the deadline on a first request the cluster never answers (found by the
// stress suite's process faults).
func TestNATSCluster_startTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-server NATS cluster")
	}
	t.Parallel()
	cfgs := make([]embedded.Config, 3)
	var routes, urls []string
	for i := range cfgs {
		cfgs[i] = embedded.Config{DataDir: t.TempDir(), Listen: closedAddr(t), ServerName: fmt.Sprintf("n%d", i+1), Cluster: closedAddr(t)}
		routes = append(routes, "nats://"+cfgs[i].Cluster)
		urls = append(urls, "nats://"+cfgs[i].Listen)
	}
	servers := make([]*embedded.Server, 3)
	var wg sync.WaitGroup
	for i := range cfgs {
		cfgs[i].Routes = routes
		wg.Go(func() {
			srv, err := embedded.Start(cfgs[i])
			if err != nil {
				t.Error(err)
				return
			}
			servers[i] = srv
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range servers {
			if s != nil {
				s.Shutdown()
			}
		}
	})
	if t.Failed() {
		return
	}
	start := time.Now() // no wait for the meta leader
	startServe(t, "node", "--broker", "nats", "--nats-url", strings.Join(urls, ","), "--nats-replicas", "3")
	if took := time.Since(start); took > natsStartTimeout/2 {
		t.Errorf("listening %v after the cluster started, want well within the %v start-up deadline", took, natsStartTimeout)
	} else {
		t.Logf("listening %v after the cluster started", took.Round(time.Millisecond))
	}
}

// TestRetryStart: an attempt that gets no answer is given up after its own bound and
// the next one runs (a stream creation the cluster never answered took a second node's
// whole start-up deadline in the stress suite); an error that will not go away ends
// the retries at once; the deadline ends them with the last error.
func TestRetryStart(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	t.Run("unanswered attempt", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		attempts := 0
		start := time.Now()
		got, err := retryStart(ctx, 200*time.Millisecond, logger, func(ctx context.Context) (string, error) {
			attempts++
			if attempts == 1 {
				<-ctx.Done() // never answered
				return "", fmt.Errorf("create stream: %w", ctx.Err())
			}
			return "started", nil
		})
		if err != nil || got != "started" || attempts != 2 {
			t.Fatalf("got %q, %v after %d attempts; want started after 2", got, err, attempts)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v; the first attempt should have been given up after 200ms", d)
		}
	})
	t.Run("lasting error", func(t *testing.T) {
		attempts := 0
		refused := &natsjs.APIError{Code: 400, ErrorCode: 10052, Description: "stream configuration invalid"}
		_, err := retryStart(t.Context(), time.Second, logger, func(context.Context) (int, error) {
			attempts++
			return 0, refused
		})
		if !errors.Is(err, refused) || attempts != 1 {
			t.Fatalf("got %v after %d attempts; want the refusal after 1", err, attempts)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		attempts := 0
		_, err := retryStart(ctx, 100*time.Millisecond, logger, func(ctx context.Context) (int, error) {
			attempts++
			<-ctx.Done()
			return 0, ctx.Err()
		})
		if !errors.Is(err, context.DeadlineExceeded) || attempts < 2 {
			t.Fatalf("got %v after %d attempts; want the deadline after several", err, attempts)
		}
	})
}
