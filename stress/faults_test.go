package stress

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// faultLoad is the workload of the process faults: publishers that re-send a failed
// dispatch with the same ids until it is acknowledged, and subscribers that resume from
// their last applied seq whenever their stream ends, each on whichever node answers.
type faultLoad struct {
	urls func() []string // the nodes' URLs, read at every attempt

	l         *ledger
	subs      []*follower
	retries   atomic.Int64
	dupAcks   atomic.Int64 // re-sent dispatches answered as duplicates: stored before the answer was lost
	resumes   atomic.Int64
	stopPubs  context.CancelFunc
	pubsDone  sync.WaitGroup
	stopSubs  context.CancelFunc
	subsDone  sync.WaitGroup
	firstPubs atomic.Int64 // first attempts answered as duplicates: a fault
}

// clientsByURL hands out one client per node URL, on connections of its own.
type clientsByURL struct {
	t  *testing.T
	mu sync.Mutex
	m  map[string]actionsyncv1connect.SyncServiceClient
}

func (c *clientsByURL) get(url string) actionsyncv1connect.SyncServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]actionsyncv1connect.SyncServiceClient{}
	}
	if c.m[url] == nil {
		c.m[url] = newConns(c.t, 0, 0).sync(url)
	}
	return c.m[url]
}

func startFaultLoad(t *testing.T, s *scenario, urls func() []string, channels []string, nPubs, nSubs int) *faultLoad {
	fl := &faultLoad{urls: urls, l: newLedger()}
	ctx, cancel := context.WithCancel(t.Context())
	fl.stopPubs = cancel
	for p := range nPubs {
		rng := s.rng()
		clients := &clientsByURL{t: t}
		fl.pubsDone.Go(func() {
			for n, attempt := 0, 0; ctx.Err() == nil; {
				req := &actionsyncv1.DispatchRequest{Channel: channels[rng.IntN(len(channels))], ClientId: fmt.Sprintf("p%d", p)}
				for range 1 + rng.IntN(4) {
					req.Actions = append(req.Actions, action(fmt.Sprintf("p%d-%d", p, n), 60))
					n++
				}
				// Re-send until acknowledged, even after stop: a client keeps what it sent.
				for attempt = 0; ; attempt++ {
					us := fl.urls()
					url := us[(p+attempt)%len(us)]
					dctx, dcancel := context.WithTimeout(t.Context(), 10*time.Second)
					res, err := clients.get(url).Dispatch(dctx, connect.NewRequest(req))
					dcancel()
					if err == nil {
						if res.Msg.GetAcks()[0].GetDuplicate() {
							if attempt == 0 {
								fl.firstPubs.Add(1)
							} else {
								fl.dupAcks.Add(1)
							}
						}
						fl.l.add(req.GetChannel(), res.Msg.GetAcks())
						break
					}
					if t.Context().Err() != nil {
						return
					}
					fl.retries.Add(1)
					time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
				}
				time.Sleep(time.Duration(5+rng.IntN(5)) * time.Millisecond) // ~100 dispatches/s each
			}
		})
	}
	sctx, scancel := context.WithCancel(t.Context())
	fl.stopSubs = scancel
	for i := range nSubs {
		rng := s.rng()
		f := newFollower(fmt.Sprintf("sub-%d", i), []string{channels[i%len(channels)]})
		fl.subs = append(fl.subs, f)
		clients := &clientsByURL{t: t}
		fl.subsDone.Go(func() {
			for attempt := i; sctx.Err() == nil; attempt++ {
				us := fl.urls()
				stream, err := clients.get(us[attempt%len(us)]).Subscribe(sctx, connect.NewRequest(f.request()))
				if err == nil {
					for stream.Receive() {
						f.apply(stream.Msg())
					}
					stream.Close()
				}
				if sctx.Err() != nil {
					return
				}
				fl.resumes.Add(1)
				time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
			}
		})
	}
	return fl
}

// finish stops the publishers (each once its last dispatch is acknowledged), lets the
// subscribers catch up with every head, and checks History through client: every
// acknowledged action exactly once, nothing else (every dispatch was re-sent until
// acknowledged), and every subscriber's sequence equal to it.
func (fl *faultLoad) finish(ctx context.Context, t *testing.T, client actionsyncv1connect.SyncServiceClient, channels []string) {
	t.Helper()
	fl.stopPubs()
	fl.pubsDone.Wait()
	heads := map[string]uint64{}
	for ch, acks := range fl.l.acks {
		for _, a := range acks {
			heads[ch] = max(heads[ch], a.seq)
		}
	}
	for _, f := range fl.subs {
		f.waitAt(t, f.channels[0], heads[f.channels[0]], 60*time.Second)
	}
	fl.stopSubs()
	fl.subsDone.Wait()
	hs := readHistories(ctx, t, client, channels)
	checkLedger(t, fl.l, hs, true)
	for _, f := range fl.subs {
		checkFollower(t, f, hs, true)
	}
	if n := fl.firstPubs.Load(); n > 0 {
		t.Errorf("%d first dispatches were answered as duplicates", n)
	}
}

// faultsHistory is the history size of the faults' servers: History must hold every
// action of the run to be checked against the acks.
const faultsHistory = "10000000"

// TestStress_ProcessFaults (scenario 7, guarantees 1 to 4 under faults): publishers and
// subscribers work through SIGKILLs and restarts; every acknowledged action ends in
// History exactly once and every subscriber resumes without a gap.
func TestStress_ProcessFaults(t *testing.T) {
	t.Run("data_dir", faultsDataDir)
	t.Run("nats_cluster", faultsNATSCluster)
}

// faultsDataDir: one `serve --data-dir` process, killed with SIGKILL and stopped with
// SIGTERM in turn, and restarted on its directory and address each time.
func faultsDataDir(t *testing.T) {
	s := begin(t)
	const nChannels = 8
	srv := startProc(t, "datadir", "--data-dir", t.TempDir(), "--shutdown-timeout", "5s", "--history-size", faultsHistory)
	ctx, cancel := context.WithTimeout(t.Context(), s.duration+3*time.Minute)
	defer cancel()
	channels := make([]string, nChannels)
	for i := range channels {
		channels[i] = fmt.Sprintf("faults:%d", i)
	}
	var urlMu sync.Mutex
	urls := func() []string {
		urlMu.Lock()
		defer urlMu.Unlock()
		return []string{srv.url}
	}
	fl := startFaultLoad(t, s, urls, channels, 4, 40)
	rng := s.rng()
	period := max(s.duration/6, 3*time.Second)
	start := time.Now()
	kills, terms := 0, 0
	var down time.Duration
	for round := 0; time.Since(start) < s.duration || round < 2; round++ { // each kind at least once
		time.Sleep(period/2 + time.Duration(rng.Int64N(int64(period))))
		at := time.Now()
		if round%2 == 0 {
			srv.kill()
			kills++
		} else {
			srv.signal(syscall.SIGTERM)
			if err, ok := srv.wait(10 * time.Second); !ok || err != nil {
				t.Errorf("SIGTERM under load: exited %v, %v; want 0 within 10s", ok, err)
				srv.kill()
			}
			terms++
		}
		srv.restart()
		down += time.Since(at)
	}
	acked := fl.l.total()
	fl.finish(ctx, t, newConns(t, 0, 0).sync(srv.url), channels)
	s.figure("4 publishers (re-sending until acknowledged), 40 subscribers on %d channels (resuming from their last seq), one --data-dir process", nChannels)
	s.figure("%d SIGKILLs and %d SIGTERMs, each restarted on the same directory (down %v in all); %d actions acknowledged, %d dispatch retries (%d answered as duplicates: stored before the fault cut the answer), %d subscriber reconnect attempts",
		kills, terms, down.Round(time.Millisecond), acked, fl.retries.Load(), fl.dupAcks.Load(), fl.resumes.Load())
	s.figure("History: every acknowledged action exactly once, nothing else; every subscriber's sequence equals History: no gap, duplicate, reorder or reset")
}

// natsNode is one nats-server process of a cluster, on fixed ports and its own
// directory so that it can be killed and restarted where it was.
type natsNode struct {
	name  string
	args  []string
	addr  string
	cmd   *exec.Cmd
	done  chan struct{}
	t     *testing.T
	kills int
}

// freeAddr returns a loopback address with a port free at the moment.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (n *natsNode) start() {
	n.cmd = exec.Command(natsBinary, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = io.Discard, io.Discard
	if dir := os.Getenv("STRESS_NATS_LOGS"); dir != "" {
		if f, err := os.OpenFile(fmt.Sprintf("%s/%s.log", dir, n.name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			n.cmd.Stdout, n.cmd.Stderr = f, f
		}
	}
	if err := n.cmd.Start(); err != nil {
		n.t.Fatalf("start %s: %v", n.name, err)
	}
	n.done = make(chan struct{})
	done := n.done
	go func() {
		_ = n.cmd.Wait()
		close(done)
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", n.addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s not accepting on %s after 20s", n.name, n.addr)
		}
	}
}

func (n *natsNode) kill() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Kill()
	<-n.done
}

// startNATSCluster starts three nats-server processes with JetStream, routed together.
func startNATSCluster(t *testing.T) []*natsNode {
	var nodes []*natsNode
	var routes []string
	clusters := make([]string, 3)
	for i := range clusters {
		clusters[i] = freeAddr(t)
		routes = append(routes, "nats://"+clusters[i])
	}
	for i := range 3 {
		n := &natsNode{name: fmt.Sprintf("n%d", i+1), addr: freeAddr(t), t: t}
		host, port, _ := net.SplitHostPort(n.addr)
		n.args = []string{"-a", host, "-p", port, "-js", "-sd", t.TempDir(), "-n", n.name,
			"--cluster_name", "stress", "--cluster", "nats://" + clusters[i], "--routes", strings.Join(routes, ",")}
		nodes = append(nodes, n)
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.start)
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	return nodes
}

// gate is a TCP proxy that can refuse every connection for a while, closing those open:
// a network partition between an actionsync node and NATS.
type gate struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	closed bool
	conns  []net.Conn
}

func startGate(t *testing.T, target string) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		g.cut(true)
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			closed := g.closed
			g.mu.Unlock()
			if closed {
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			g.mu.Lock()
			g.conns = append(g.conns, c, up)
			g.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return g
}

// cut closes the connections through the gate and sets whether it refuses new ones.
func (g *gate) cut(refuse bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = refuse
	for _, c := range g.conns {
		c.Close()
	}
	g.conns = nil
}

func (g *gate) url() string { return "nats://" + g.ln.Addr().String() }

// faultsNATSCluster: two actionsync nodes on a 3-server NATS cluster (stream replicas
// 3), each reaching NATS through gates. In turn: a NATS server is SIGKILLed and
// restarted, an actionsync node is SIGKILLed and restarted, one node's NATS is
// unreachable for 5 s, two NATS servers are SIGKILLed at once (no quorum: nothing can be
// stored until they are back), or a NATS server is SIGKILLed while a node's NATS is
// unreachable. Clients use whichever node answers.
func faultsNATSCluster(t *testing.T) {
	s := begin(t)
	if os.Getenv("STRESS_NATS") == "0" {
		t.Skip("STRESS_NATS=0: the NATS cluster case is off")
	}
	const nChannels = 8
	nats := startNATSCluster(t)
	var nodes []*proc
	var gates [][]*gate
	for i := range 2 {
		var gs []*gate
		var us []string
		for _, n := range nats {
			g := startGate(t, n.addr)
			gs = append(gs, g)
			us = append(us, g.url())
		}
		gates = append(gates, gs)
		nodes = append(nodes, startProc(t, fmt.Sprintf("node%d", i+1), "--broker", "nats", "--nats-url", strings.Join(us, ","), "--nats-replicas", "3", "--history-size", faultsHistory))
	}
	ctx, cancel := context.WithTimeout(t.Context(), s.duration+3*time.Minute)
	defer cancel()
	channels := make([]string, nChannels)
	for i := range channels {
		channels[i] = fmt.Sprintf("faults:%d", i)
	}
	var urlMu sync.Mutex
	urls := func() []string {
		urlMu.Lock()
		defer urlMu.Unlock()
		return []string{nodes[0].url, nodes[1].url}
	}
	fl := startFaultLoad(t, s, urls, channels, 4, 40)
	rng := s.rng()
	period := max(s.duration/6, 4*time.Second)
	start := time.Now()
	var natsKills, nodeKills, partitions, quorumLosses, killsInPartition int
	cut := func(gs []*gate, down bool) {
		for _, g := range gs {
			g.cut(down)
		}
	}
	for round := 0; time.Since(start) < s.duration || round < 5; round++ { // each kind at least once
		time.Sleep(period/2 + time.Duration(rng.Int64N(int64(period))))
		switch round % 5 { // each kind in turn, on targets drawn from the seed
		case 0:
			n := nats[rng.IntN(len(nats))]
			n.kill()
			natsKills++
			time.Sleep(2 * time.Second)
			n.start()
		case 1:
			p := nodes[rng.IntN(len(nodes))]
			p.kill()
			nodeKills++
			time.Sleep(time.Second)
			p.restart()
		case 2:
			gs := gates[rng.IntN(len(gates))]
			cut(gs, true)
			partitions++
			time.Sleep(5 * time.Second)
			cut(gs, false)
		case 3:
			up := rng.IntN(len(nats)) // the one left running
			for i, n := range nats {
				if i != up {
					n.kill()
				}
			}
			quorumLosses++
			time.Sleep(3 * time.Second)
			for i, n := range nats {
				if i != up {
					n.start()
				}
			}
		case 4:
			gs := gates[rng.IntN(len(gates))]
			n := nats[rng.IntN(len(nats))]
			cut(gs, true)
			time.Sleep(time.Second)
			n.kill()
			killsInPartition++
			time.Sleep(2 * time.Second)
			n.start()
			time.Sleep(2 * time.Second)
			cut(gs, false)
		}
	}
	acked := fl.l.total()
	fl.finish(ctx, t, newConns(t, 0, 0).sync(nodes[0].url), channels)
	s.figure("2 actionsync nodes on a 3-server NATS cluster (replicas 3), 4 publishers and 40 subscribers using whichever node answers")
	s.figure("%d NATS servers SIGKILLed (restarted after 2 s), %d actionsync nodes SIGKILLed (restarted after 1 s), %d times a node's NATS unreachable for 5 s, %d times 2 NATS servers SIGKILLed at once (no quorum; restarted after 3 s), %d NATS servers SIGKILLed while a node's NATS was unreachable", natsKills, nodeKills, partitions, quorumLosses, killsInPartition)
	s.figure("%d actions acknowledged, %d dispatch retries (%d answered as duplicates), %d subscriber reconnect attempts; History: every acknowledged action exactly once, nothing else; every subscriber equals History", acked, fl.retries.Load(), fl.dupAcks.Load(), fl.resumes.Load())
}
