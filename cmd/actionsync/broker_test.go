package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/actionsync/actionsync/broker/jetstream/embedded"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	actionsyncv1connect "github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// dispatchOne dispatches one action with id on channel and returns its ack.
func dispatchOne(ctx context.Context, t *testing.T, client actionsyncv1connect.SyncServiceClient, channel, id string) (*actionsyncv1.Ack, error) {
	t.Helper()
	res, err := client.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{
		Channel: channel, ClientId: "writer", Actions: []*actionsyncv1.Action{action(t, id)},
	}))
	if err != nil {
		return nil, err
	}
	if acks := res.Msg.GetAcks(); len(acks) != 1 {
		t.Fatalf("Dispatch: got %d acks, want 1", len(acks))
	}
	return res.Msg.GetAcks()[0], nil
}

// readyOf subscribes to channel from the start and returns its ready message.
func readyOf(ctx context.Context, t *testing.T, client actionsyncv1connect.SyncServiceClient, channel string) *actionsyncv1.Ready {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{
		Positions: []*actionsyncv1.Position{{Channel: channel}},
	}))
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer stream.Close()
	return receiveUntil(t, "ready", streamNext(stream), func(m *actionsyncv1.SubscribeResponse) bool {
		return m.GetReady().GetChannel() == channel
	}).GetReady()
}

// healthOf returns the server's overall health status.
func healthOf(ctx context.Context, t *testing.T, ts *testServer) (grpchealth.Status, error) {
	t.Helper()
	res, err := grpchealth.NewClient(httpClient(t, true), ts.url, connect.WithGRPC()).
		Check(ctx, &grpchealth.CheckRequest{Service: actionsyncv1connect.SyncServiceName})
	if err != nil {
		return 0, err
	}
	return res.Status, nil
}

// waitHealth waits up to within for the server's health to become want.
func waitHealth(ctx context.Context, t *testing.T, ts *testServer, want grpchealth.Status, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := healthOf(ctx, t, ts)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health after %v: got %v, %v; want %v\nlogs:\n%s", within, got, err, want, ts.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServe_dataDir(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	const channel = "board:durable"

	first := startServer(t, nil, "--data-dir", dir)
	client := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), first.url)
	ack, err := dispatchOne(ctx, t, client, channel, "a1")
	if err != nil || ack.GetSeq() != 1 {
		t.Fatalf("Dispatch: got %v, %v; want seq 1", ack, err)
	}
	epoch := readyOf(ctx, t, client, channel).GetEpoch()
	if epoch == "" {
		t.Fatal("ready has no epoch")
	}

	// The data directory is locked while a server uses it.
	err = run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir}, io.Discard, io.Discard, envOf(nil))
	if !errors.Is(err, embedded.ErrLocked) || !strings.Contains(err.Error(), "data directory in use by another process") {
		t.Fatalf("second serve on the same data dir: got %v, want %v", err, embedded.ErrLocked)
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("second serve: exit code %d, want 1", code)
	}

	if err := first.stop(t); err != nil {
		t.Fatalf("stop: %v\nlogs:\n%s", err, first.logs)
	}
	second := startServer(t, nil, "--data-dir", dir)
	client = actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), second.url)
	hist, err := client.History(ctx, connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: channel}))
	if err != nil {
		t.Fatalf("History after restart: %v", err)
	}
	if got := hist.Msg.GetActions(); hist.Msg.GetHeadSeq() != 1 || len(got) != 1 || got[0].GetId() != "a1" || got[0].GetClientId() != "writer" {
		t.Fatalf("History after restart: got head %d, actions %v; want head 1 with a1 from writer", hist.Msg.GetHeadSeq(), got)
	}
	if got := readyOf(ctx, t, client, channel).GetEpoch(); got != epoch {
		t.Errorf("epoch after restart: got %q, want %q (the history is the same)", got, epoch)
	}
	// The dedupe window survived too.
	if ack, err := dispatchOne(ctx, t, client, channel, "a1"); err != nil || ack.GetSeq() != 1 || !ack.GetDuplicate() {
		t.Errorf("re-dispatch of a1 after restart: got %v, %v; want a duplicate of seq 1", ack, err)
	}
}

func TestServe_natsURL(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	natsDir := t.TempDir()
	srv, err := embedded.Start(embedded.Config{DataDir: natsDir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	natsURL := srv.ClientURL()
	const channel = "board:nats"

	ts := startServer(t, nil, "--broker", "nats", "--nats-url", natsURL, "--nats-stream", "CMDTEST")
	client := actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), ts.url)
	stream := subscribe(ctx, t, client, channel, "watcher")
	if ack, err := dispatchOne(ctx, t, client, channel, "a1"); err != nil || ack.GetSeq() != 1 {
		t.Fatalf("Dispatch: got %v, %v; want seq 1", ack, err)
	}
	got := receiveUntil(t, "actions", streamNext(stream), func(m *actionsyncv1.SubscribeResponse) bool {
		return len(m.GetActions()) > 0
	}).GetActions()[0]
	if got.GetSeq() != 1 || got.GetId() != "a1" {
		t.Errorf("received %v, want seq 1, id a1", got)
	}
	hist, err := client.History(ctx, connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: channel}))
	if err != nil || hist.Msg.GetHeadSeq() != 1 || len(hist.Msg.GetActions()) != 1 {
		t.Fatalf("History: got %v, %v; want head 1 with 1 action", hist, err)
	}
	waitHealth(ctx, t, ts, grpchealth.StatusServing, 0)

	// NATS goes away: health turns NOT_SERVING, dispatches fail at once with
	// Unavailable, and streams end with Unavailable so that clients resume later.
	srv.Shutdown()
	waitHealth(ctx, t, ts, grpchealth.StatusNotServing, 2*time.Second)
	start := time.Now()
	_, err = dispatchOne(ctx, t, client, channel, "a2")
	if took := time.Since(start); connect.CodeOf(err) != connect.CodeUnavailable || took > 2*time.Second {
		t.Errorf("Dispatch while NATS is down: got %v after %v, want unavailable within 2s", err, took)
	}
	if _, err := receiveUntilErr(stream); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("stream while NATS is down: ended with %v, want unavailable", err)
	}

	// NATS is back on the same address: health and dispatches follow.
	u, err := url.Parse(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	srv2, err := embedded.Start(embedded.Config{DataDir: natsDir, Listen: u.Host})
	if err != nil {
		t.Fatalf("restart NATS: %v", err)
	}
	t.Cleanup(srv2.Shutdown)
	waitHealth(ctx, t, ts, grpchealth.StatusServing, 10*time.Second)
	if ack, err := dispatchOne(ctx, t, client, channel, "a3"); err != nil || ack.GetSeq() != 2 {
		t.Errorf("Dispatch after NATS is back: got %v, %v; want seq 2", ack, err)
	}

	if err := ts.stop(t); err != nil {
		t.Errorf("stop: %v\nlogs:\n%s", err, ts.logs)
	}
}

// receiveUntilErr receives from stream until it ends and returns how many messages it
// skipped and the stream's error.
func receiveUntilErr[T any](stream *connect.ServerStreamForClient[T]) (int, error) {
	n := 0
	for stream.Receive() {
		n++
	}
	return n, stream.Err()
}

func TestServe_natsDownAtShutdown(t *testing.T) {
	t.Parallel()
	srv, err := embedded.Start(embedded.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ts := startServer(t, nil, "--broker", "nats", "--nats-url", srv.ClientURL())
	srv.Shutdown()
	waitHealth(t.Context(), t, ts, grpchealth.StatusNotServing, 2*time.Second)
	if err := ts.stop(t); err != nil || ts.stopped > 5*time.Second {
		t.Errorf("stop while NATS is down: got %v after %v, want nil within 5s\nlogs:\n%s", err, ts.stopped, ts.logs)
	}
}

func TestServe_natsUnreachable(t *testing.T) {
	t.Parallel()
	natsURL := "nats://" + closedAddr(t)
	start := time.Now()
	err := run(t.Context(), []string{"serve", "--addr", "127.0.0.1:0", "--broker", "nats", "--nats-url", natsURL},
		io.Discard, io.Discard, envOf(nil))
	if took := time.Since(start); err == nil || !strings.Contains(err.Error(), "connect to NATS at "+natsURL) || took > 2*natsConnectTimeout {
		t.Errorf("serve with NATS unreachable: got %v after %v, want a connect error within %v", err, took, 2*natsConnectTimeout)
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
}

func TestServe_dataDirFormat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(t.Context(), []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir}, io.Discard, io.Discard, envOf(nil))
	if !errors.Is(err, embedded.ErrFormat) || !strings.Contains(err.Error(), "not an actionsync data directory") {
		t.Errorf("serve on a foreign directory: got %v, want %v", err, embedded.ErrFormat)
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
