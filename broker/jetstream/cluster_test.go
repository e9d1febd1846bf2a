package jetstream_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/actionsync/actionsync/broker/jetstream"
	"github.com/actionsync/actionsync/broker/jetstream/embedded"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// startCluster starts three embedded nats-servers with JetStream, routed to each other
// on loopback ports, and returns them (stopped when t ends, unless stopped before).
func startCluster(t *testing.T) []*embedded.Server {
	t.Helper()
	var routes []string
	clusterAddrs := make([]string, 3)
	for i := range clusterAddrs {
		clusterAddrs[i] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		routes = append(routes, "nats://"+clusterAddrs[i])
	}
	servers := make([]*embedded.Server, 3)
	errs := make(chan error, 3)
	for i := range servers {
		go func() {
			srv, err := embedded.Start(embedded.Config{
				DataDir:    t.TempDir(),
				Listen:     "127.0.0.1:0",
				ServerName: fmt.Sprintf("n%d", i+1),
				Cluster:    clusterAddrs[i],
				Routes:     routes,
			})
			servers[i] = srv
			errs <- err
		}()
	}
	for range servers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, srv := range servers {
		t.Cleanup(func() {
			if srv.NATS().Running() {
				srv.Shutdown()
			}
		})
	}
	return servers
}

// TestBroker_ClusterNodeLoss: a stream with 3 replicas on a 3-server NATS cluster; one
// server (the one the node is connected to) is killed while a publisher keeps
// dispatching, retrying each action with its id until it is acked, as a client does.
// Publishing goes on, and every acked action is in history exactly once, in ack order.
func TestBroker_ClusterNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-server cluster")
	}
	t.Parallel()
	servers := startCluster(t)
	var urls []string
	for _, srv := range servers {
		urls = append(urls, srv.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), append(jetstream.ConnectOptions(), nats.ReconnectWait(50*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var b *jetstream.Broker
	waitFor(t, "a JetStream meta leader", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		b, err = jetstream.New(ctx, nc, jetstream.Options{Stream: "R3", SubjectPrefix: "r3", Replicas: 3, PublishTimeout: time.Second})
		return err == nil
	})
	t.Cleanup(func() { _ = b.Close() })

	const (
		ch        = "cluster"
		total     = 300
		killAfter = 100
	)
	start := time.Now()
	t.Logf("stream ready")
	acked := make([]uint64, total) // seq of action i
	var retries atomic.Int64
	killed := make(chan string, 1)
	for i := range total {
		if i == killAfter {
			connected := nc.ConnectedUrl() // read once: the client moves on after the kill
			for _, srv := range servers {
				if url := srv.ClientURL(); url == connected {
					srv.Shutdown()
					killed <- url
					t.Logf("killed %s at %v", url, time.Since(start))
					break
				}
			}
		}
		a := act("c", fmt.Sprintf("a%d", i))
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			acks, err := b.Publish(ctx, ch, []*actionsyncv1.Action{a})
			cancel()
			if err == nil {
				acked[i] = acks[0].Seq
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("action %d not acked within 30s: %v", i, err)
			}
			retries.Add(1)
			a = act("c", fmt.Sprintf("a%d", i)) // a fresh copy, as a client would send
			time.Sleep(20 * time.Millisecond)
		}
	}
	select {
	case url := <-killed:
		t.Logf("killed %s after %d acks; %d acks in %v, %d retries", url, killAfter, total, time.Since(start), retries.Load())
	default:
		t.Fatal("no server was killed")
	}
	h := allHistory(t, b, ch)
	if len(h) != total {
		t.Fatalf("history: %d entries, want %d", len(h), total)
	}
	for i, e := range h {
		if want := fmt.Sprintf("a%d", i); e.ID() != want || e.Seq() != acked[i] {
			t.Fatalf("history[%d]: id %q seq %d, want id %q acked seq %d", i, e.ID(), e.Seq(), want, acked[i])
		}
	}
}
