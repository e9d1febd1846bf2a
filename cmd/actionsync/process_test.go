package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	actionsyncv1connect "github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// This file is the harness of the tests that run real `actionsync serve` processes and
// kill them: a process that can be SIGKILLed, a subscriber that resumes as a client does,
// and History and dispatch helpers that check what they read.

// serveStartTimeout bounds a process's start-up: on a JetStream cluster the process
// itself retries creating the stream for up to natsStartTimeout.
const serveStartTimeout = natsStartTimeout + 15*time.Second

var listeningLine = regexp.MustCompile(`msg="actionsync listening".* url=(\S+)`)

// serveProc is one `actionsync serve` process: the test binary running main().
type serveProc struct {
	name string
	cmd  *exec.Cmd
	url  string

	mu  sync.Mutex
	log bytes.Buffer // its text log (stderr)

	done    chan struct{} // closed once it has exited and its log is read
	waitErr error         // what Wait returned; set before done closes
}

// startServe starts `actionsync serve --addr 127.0.0.1:0 args...` and returns once it
// listens. The process is killed, if still running, when t ends.
func startServe(t *testing.T, name string, args ...string) *serveProc {
	t.Helper()
	p, err := tryStartServe(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tryStartServe is startServe returning the failure of a process that exits (or does not
// listen in time) instead of failing the test; it may run on any goroutine.
func tryStartServe(t *testing.T, name string, args ...string) (*serveProc, error) {
	t.Helper()
	p := &serveProc{
		name: name,
		cmd:  command(t, nil, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...),
		done: make(chan struct{}),
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // a line too long: keep the pipe drained
		p.waitErr = p.cmd.Wait()           // after the last read: Wait closes the pipe
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(t)
		// The processes run with the race detector when the tests do: a race in the
		// server fails the test that found it.
		if log := p.logs(); strings.Contains(log, "WARNING: DATA RACE") {
			t.Errorf("%s: data race in the server:\n%s", p.name, log)
		}
	})
	select {
	case p.url = <-urls:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before listening: %v\n%s", name, p.waitErr, p.logs())
	case <-time.After(serveStartTimeout):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return nil, fmt.Errorf("%s not listening after %v:\n%s", name, serveStartTimeout, p.logs())
	}
}

// logs returns what the process logged so far.
func (p *serveProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// kill sends SIGKILL, unless the process has exited, and waits until it has.
func (p *serveProc) kill(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("%s: SIGKILL: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10s after SIGKILL", p.name)
	}
}

// client returns a Connect client of the process over h2c.
func (p *serveProc) client(t *testing.T) actionsyncv1connect.SyncServiceClient {
	t.Helper()
	return actionsyncv1connect.NewSyncServiceClient(httpClient(t, true), p.url)
}

// applied is one action as a client applied it.
type applied struct {
	Seq uint64
	ID  string
}

func (a applied) String() string { return fmt.Sprintf("seq %d id %s", a.Seq, a.ID) }

// appliedOf returns what a client applies of actions.
func appliedOf(actions []*actionsyncv1.Action) []applied {
	out := make([]applied, len(actions))
	for i, a := range actions {
		out[i] = applied{a.GetSeq(), a.GetId()}
	}
	return out
}

// diffSequence describes the first difference between two sequences of applied actions,
// or returns "" when they are equal.
func diffSequence(got, want []applied) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d: got %v, want %v", i, got[i], want[i])
		}
	}
	switch {
	case len(got) > len(want):
		return fmt.Sprintf("%d actions, want %d: the first extra one is %v", len(got), len(want), got[len(want)])
	case len(got) < len(want):
		return fmt.Sprintf("%d actions, want %d: the first missing one is %v", len(got), len(want), want[len(got)])
	}
	return ""
}

// follower is a client following one channel as the Redux middleware does: it applies
// actions in order, remembers the last seq it applied and the epoch of its last ready,
// and resumes from them. It records every gap, duplicate, reorder, reset or epoch change
// as a fault.
type follower struct {
	name    string
	channel string

	mu      sync.Mutex
	after   uint64    // the position it started from
	got     []applied // what it applied after that
	epoch   string    // of the last ready
	readies int
	faults  []string
}

// newFollower returns a follower that has applied channel up to after in epoch (after
// 0, epoch "": nothing yet).
func newFollower(name, channel string, after uint64, epoch string) *follower {
	return &follower{name: name, channel: channel, after: after, epoch: epoch}
}

// last returns the last seq applied.
func (f *follower) last() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastLocked()
}

func (f *follower) lastLocked() uint64 {
	if len(f.got) == 0 {
		return f.after
	}
	return f.got[len(f.got)-1].Seq
}

// follow subscribes through client from the follower's position and applies what
// arrives until the stream ends; it returns the stream's error (nil if the stream ended
// without one, which a Subscribe stream should not).
func (f *follower) follow(ctx context.Context, client actionsyncv1connect.SyncServiceClient) error {
	f.mu.Lock()
	pos := &actionsyncv1.Position{Channel: f.channel, AfterSeq: f.lastLocked(), Epoch: f.epoch}
	f.mu.Unlock()
	stream, err := client.Subscribe(ctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{
		Positions: []*actionsyncv1.Position{pos},
		ClientId:  f.name,
	}))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		f.apply(stream.Msg())
	}
	return stream.Err()
}

// apply applies one message of a Subscribe stream.
func (f *follower) apply(m *actionsyncv1.SubscribeResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range m.GetActions() {
		if want := f.lastLocked() + 1; a.GetSeq() != want || a.GetChannel() != f.channel {
			f.faultLocked("got action %s seq %d on %q, want seq %d on %q", a.GetId(), a.GetSeq(), a.GetChannel(), want, f.channel)
		}
		f.got = append(f.got, applied{a.GetSeq(), a.GetId()})
	}
	if r := m.GetReset_(); r != nil {
		f.faultLocked("got reset %v after seq %d in epoch %q, want none", r, f.lastLocked(), f.epoch)
	}
	if r := m.GetReady(); r != nil {
		if r.GetChannel() != f.channel || r.GetHeadSeq() != f.lastLocked() || f.epoch != "" && r.GetEpoch() != f.epoch {
			f.faultLocked("got ready %v, want one on %q at seq %d in epoch %q", r, f.channel, f.lastLocked(), f.epoch)
		}
		f.epoch = r.GetEpoch()
		f.readies++
	}
}

// fault records a fault the follower's user found.
func (f *follower) fault(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faultLocked(format, args...)
}

func (f *follower) faultLocked(format string, args ...any) {
	if len(f.faults) < 10 {
		f.faults = append(f.faults, fmt.Sprintf(format, args...))
	}
}

// currentEpoch returns the epoch of the follower's last ready.
func (f *follower) currentEpoch() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.epoch
}

// readyCount returns how many ready messages the follower got.
func (f *follower) readyCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readies
}

// check fails t with the follower's faults, and unless what it applied after its start
// equals want[its start:].
func (f *follower) check(t *testing.T, want []applied) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fault := range f.faults {
		t.Errorf("%s: %s", f.name, fault)
	}
	if f.after > uint64(len(want)) {
		t.Errorf("%s: started after seq %d, beyond the %d actions of history", f.name, f.after, len(want))
		return
	}
	if d := diffSequence(f.got, want[f.after:]); d != "" {
		t.Errorf("%s (from seq %d): sequence differs from History %s", f.name, f.after, d)
	}
}

// waitUntil polls cond every 10 ms until it holds, or fails t after within.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readHistory reads channel's whole history through client, page by page, and checks
// that its seqs are 1..head.
func readHistory(ctx context.Context, t *testing.T, client actionsyncv1connect.SyncServiceClient, channel string) []*actionsyncv1.Action {
	t.Helper()
	var all []*actionsyncv1.Action
	for {
		res, err := client.History(ctx, connect.NewRequest(&actionsyncv1.HistoryRequest{
			Channel: channel, AfterSeq: uint64(len(all)), Limit: 1000,
		}))
		if err != nil {
			t.Fatalf("History of %q after seq %d: %v", channel, len(all), err)
		}
		for _, a := range res.Msg.GetActions() {
			if want := uint64(len(all)) + 1; a.GetSeq() != want {
				t.Fatalf("History of %q: got seq %d (id %s), want %d", channel, a.GetSeq(), a.GetId(), want)
			}
			all = append(all, a)
		}
		if head := res.Msg.GetHeadSeq(); uint64(len(all)) >= head {
			if uint64(len(all)) != head {
				t.Fatalf("History of %q: got %d actions, beyond head %d", channel, len(all), head)
			}
			return all
		}
		if len(res.Msg.GetActions()) == 0 {
			t.Fatalf("History of %q after seq %d: no actions, head %d", channel, len(all), res.Msg.GetHeadSeq())
		}
	}
}

// waitHistory reads channel's history through client until it has at least n actions:
// a node's History follows what other nodes store through its feed.
func waitHistory(ctx context.Context, t *testing.T, client actionsyncv1connect.SyncServiceClient, channel string, n int) []*actionsyncv1.Action {
	t.Helper()
	var h []*actionsyncv1.Action
	waitUntil(t, 10*time.Second, fmt.Sprintf("%d actions in History of %q", n, channel), func() bool {
		h = readHistory(ctx, t, client, channel)
		return len(h) >= n
	})
	return h
}

// batchOf returns size actions with ids prefix-from, prefix-(from+1), ...; each has its
// number in its payload, so that no two ids share a body.
func batchOf(t *testing.T, prefix string, from, size int) []*actionsyncv1.Action {
	t.Helper()
	batch := make([]*actionsyncv1.Action, size)
	for i := range batch {
		n := from + i
		payload, err := structpb.NewValue(map[string]any{"taskId": fmt.Sprintf("%s-%d", prefix, n), "n": n})
		if err != nil {
			t.Fatal(err)
		}
		batch[i] = &actionsyncv1.Action{Type: "ADD_TASK", Id: fmt.Sprintf("%s-%d", prefix, n), Payload: payload}
	}
	return batch
}

// dispatchBatch dispatches batch on channel through client and checks the acks: one per
// action with its id, contiguous seqs, and all duplicates or none (a batch is stored
// whole or not at all). An error is the dispatch's; a wrong ack fails t.
func dispatchBatch(ctx context.Context, t *testing.T, client actionsyncv1connect.SyncServiceClient, channel, clientID string, batch []*actionsyncv1.Action) ([]*actionsyncv1.Ack, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	res, err := client.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{
		Channel: channel, ClientId: clientID, Actions: batch,
	}))
	if err != nil {
		return nil, err
	}
	acks := res.Msg.GetAcks()
	if len(acks) != len(batch) {
		t.Errorf("Dispatch of %d actions from %s: got %d acks, want %d", len(batch), batch[0].GetId(), len(acks), len(batch))
		return acks, nil
	}
	for i, a := range acks {
		if a.GetId() != batch[i].GetId() || a.GetSeq() != acks[0].GetSeq()+uint64(i) || a.GetDuplicate() != acks[0].GetDuplicate() {
			t.Errorf("Dispatch: ack %d is %v, want id %s, seq %d, duplicate %v (the batch's acks: %v)",
				i, a, batch[i].GetId(), acks[0].GetSeq()+uint64(i), acks[0].GetDuplicate(), acks)
		}
	}
	return acks, nil
}
