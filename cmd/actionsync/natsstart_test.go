package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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
