package stress

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestStress_SlowAndStuckReaders (scenario 4, guarantee 7 and the resource bounds):
// healthy subscribers and paced publishers run alone, then beside subscribers that stop
// reading (HTTP/2), read one byte a second (HTTP/1.1), or vanish without a FIN (their
// traffic blackholed by a proxy). The bad ones are cut off by --write-timeout and the
// HTTP/2 keepalive; the healthy ones lose nothing, and their delivery rate with the bad
// readers stays within 10 % of the rate without them.
func TestStress_SlowAndStuckReaders(t *testing.T) {
	s := begin(t)
	const (
		nHealthy   = 100
		nChannels  = 4
		perChannel = 100 // actions per second
		nStop      = 20
		nByte      = 10
		nVanish    = 10
		payload    = 500
	)
	srv := startProc(t, "slow", "--write-timeout", "2s", "--keepalive", "1s", "--keepalive-timeout", "1s",
		"--history-size", "10000000") // History holds the whole run, to be checked
	ctx, cancel := context.WithTimeout(t.Context(), s.duration+2*time.Minute)
	defer cancel()
	channels := make([]string, nChannels)
	for i := range channels {
		channels[i] = fmt.Sprintf("slow:%d", i)
	}

	// Healthy subscribers, each on one channel, sample the latency of every tenth action.
	var (
		delivered atomic.Int64
		latMu     sync.Mutex
		latencies []time.Duration
		healthy   []*follower
		subsDone  sync.WaitGroup
	)
	subsCtx, stopSubs := context.WithCancel(ctx)
	for i := range nHealthy {
		f := newFollower(fmt.Sprintf("healthy-%d", i), []string{channels[i%nChannels]})
		healthy = append(healthy, f)
		client := newConns(t, 0, 0).sync(srv.url)
		subsDone.Go(func() {
			for subsCtx.Err() == nil {
				stream, err := client.Subscribe(subsCtx, connect.NewRequest(f.request()))
				if err != nil {
					continue
				}
				for stream.Receive() {
					f.apply(stream.Msg())
					acts := stream.Msg().GetActions()
					delivered.Add(int64(len(acts)))
					for _, a := range acts {
						if a.GetSeq()%10 == 0 {
							sent := a.GetPayload().GetStructValue().GetFields()["t"].GetNumberValue()
							latMu.Lock()
							latencies = append(latencies, time.Since(time.Unix(0, int64(sent))))
							latMu.Unlock()
						}
					}
				}
				if subsCtx.Err() == nil {
					f.mu.Lock()
					f.fault(&f.faults.resets, "healthy stream ended: %v", stream.Err())
					f.mu.Unlock()
				}
				stream.Close()
			}
		})
	}
	l := newLedger()
	var pacers []*pacer
	for _, ch := range channels {
		pacers = append(pacers, startPacer(t, s, newConns(t, 0, 0).sync(srv.url), "pub-"+ch, ch, perChannel, 4, payload, l))
	}

	type phase struct {
		acked, delivered int64
		took             time.Duration
		p50, p99         time.Duration
	}
	measure := func(d time.Duration) phase {
		a0, d0 := int64(l.total()), delivered.Load()
		latMu.Lock()
		latencies = latencies[:0]
		latMu.Unlock()
		start := time.Now()
		time.Sleep(d)
		latMu.Lock()
		p50, p99 := percentile(latencies, 0.5), percentile(latencies, 0.99)
		latMu.Unlock()
		return phase{int64(l.total()) - a0, delivered.Load() - d0, time.Since(start), p50, p99}
	}
	time.Sleep(time.Second) // warm up
	alone := measure(s.duration / 2)

	// The bad readers arrive, each following every channel from seq 1: their replay
	// alone fills their buffers.
	all := make([]*actionsyncv1.Position, nChannels)
	for i, ch := range channels {
		all[i] = &actionsyncv1.Position{Channel: ch}
	}
	badStart := time.Now()
	for range nStop {
		client := newConns(t, 0, 0).sync(srv.url)
		stream, err := client.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: all}))
		if err != nil || !stream.Receive() {
			t.Fatalf("stop-reading subscriber: %v", err)
		}
		t.Cleanup(func() { stream.Close() }) // never reads again
	}
	for range nByte {
		go byteReader(ctx, srv.addr, channels)
	}
	proxy := startBlackhole(t, srv.addr)
	for range nVanish {
		client := newConns(t, 0, 0).sync("http://" + proxy.ln.Addr().String())
		stream, err := client.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{Positions: all}))
		if err != nil || !stream.Receive() {
			t.Fatalf("vanishing subscriber: %v", err)
		}
		t.Cleanup(func() { go stream.Close() })
	}
	proxy.vanish()
	// While the healthy ones are measured beside them, watch for the moment the last bad
	// stream is cut (the server's open streams back to the healthy ones).
	var cutIn time.Duration
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			if st, err := srv.stats(watchCtx); err == nil && st.GetStreams() == nHealthy {
				cutIn = time.Since(badStart)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	beside := measure(s.duration / 2)
	stopWatch()
	<-watched

	// Every bad stream is cut: only the healthy ones remain.
	deadline := time.Now().Add(30 * time.Second)
	for cutIn == 0 {
		st, err := srv.stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.GetStreams() == nHealthy {
			cutIn = time.Since(badStart)
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%v after the bad readers came: %d streams open, want the %d healthy ones", time.Since(badStart), st.GetStreams(), nHealthy)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, p := range pacers {
		p.stop(t)
	}
	heads := map[string]uint64{}
	for ch, acks := range l.acks {
		for _, a := range acks {
			heads[ch] = max(heads[ch], a.seq)
		}
	}
	for _, f := range healthy {
		f.waitAt(t, f.channels[0], heads[f.channels[0]], 10*time.Second)
	}
	stopSubs()
	subsDone.Wait()
	hs := readHistories(ctx, t, newConns(t, 0, 0).sync(srv.url), channels)
	checkLedger(t, l, hs, true)
	for _, f := range healthy {
		checkFollower(t, f, hs, true)
	}

	rate := func(p phase) (float64, float64) {
		return float64(p.acked) / p.took.Seconds(), float64(p.delivered) / p.took.Seconds()
	}
	a1, d1 := rate(alone)
	a2, d2 := rate(beside)
	if d2 < 0.9*d1 || a2 < 0.9*a1 {
		t.Errorf("with the bad readers: %.0f acks/s and %.0f deliveries/s, without: %.0f and %.0f: more than 10%% lower", a2, d2, a1, d1)
	}
	s.figure("%d healthy subscribers on %d channels, publishers at %d actions/s per channel (%d B payloads), server --write-timeout 2s --keepalive 1s --keepalive-timeout 1s",
		nHealthy, nChannels, perChannel, payload)
	s.figure("alone (%v):  %.0f acks/s, %.0f deliveries/s, delivery latency p50 %v p99 %v", alone.took.Round(time.Millisecond), a1, d1, alone.p50.Round(10*time.Microsecond), alone.p99.Round(10*time.Microsecond))
	s.figure("beside %d stopped HTTP/2 readers, %d one-byte-a-second HTTP/1.1 readers, %d vanished without FIN (%v): %.0f acks/s (%.1f%%), %.0f deliveries/s (%.1f%%), p50 %v p99 %v",
		nStop, nByte, nVanish, beside.took.Round(time.Millisecond), a2, 100*a2/a1, d2, 100*d2/d1, beside.p50.Round(10*time.Microsecond), beside.p99.Round(10*time.Microsecond))
	s.figure("every bad stream cut within %v of its start; healthy subscribers: every sequence equals History, %d acks checked", cutIn.Round(100*time.Millisecond), l.total())
}

// byteReader subscribes over HTTP/1.1 (Connect, JSON) to channels from seq 1 and reads
// one byte a second until ctx ends or the server closes the connection.
func byteReader(ctx context.Context, addr string, channels []string) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer conn.Close()
	context.AfterFunc(ctx, func() { conn.Close() })
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	body := `{"positions":[`
	for i, ch := range channels {
		if i > 0 {
			body += ","
		}
		body += fmt.Sprintf(`{"channel":%q}`, ch)
	}
	body += `]}`
	env := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(env[1:], uint32(len(body)))
	env = append(env, body...)
	fmt.Fprintf(conn, "POST /actionsync.v1.SyncService/Subscribe HTTP/1.1\r\nHost: %s\r\nContent-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\nContent-Length: %d\r\n\r\n", addr, len(env))
	if _, err := conn.Write(env); err != nil {
		return
	}
	r := bufio.NewReaderSize(conn, 16)
	for {
		if _, err := r.ReadByte(); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// blackhole is a TCP proxy whose connections, once vanish is called, neither forward
// nor close: to the server, the clients behind it vanished without a FIN, as on a dead
// network.
type blackhole struct {
	ln     net.Listener
	target string
	gone   chan struct{}
	once   sync.Once
}

func startBlackhole(t *testing.T, target string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target, gone: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			go b.pipe(up, c)
			go b.pipe(c, up)
		}
	}()
	return b
}

// pipe copies from src to dst until the proxy vanishes; then it stops reading.
func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-b.gone:
			return // neither forward nor close: the other side hears nothing more
		default:
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (b *blackhole) vanish() { b.once.Do(func() { close(b.gone) }) }
