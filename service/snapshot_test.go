package service_test

import (
	"bytes"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// epochOf returns channel's epoch, from the ready of a live subscription.
func epochOf(t *testing.T, c actionsyncv1connect.SyncServiceClient, channel string) string {
	t.Helper()
	r := subscribe(t, c, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: channel, Live: true}}})
	ev := r.nextNonBeat(t)
	if ev.Ready == nil || ev.Ready.GetEpoch() == "" {
		t.Fatalf("live subscription: got %+v, want ready with an epoch", ev)
	}
	r.cancel()
	return ev.Ready.GetEpoch()
}

func TestService_PutSnapshot(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
		const ch = "board:snap"
		c.env.dispatch(t, ch, "alice", acts(5, "a")...)
		if _, err := c.client.GetSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetSnapshotRequest{Channel: ch})); codeOf(err) != connect.CodeNotFound {
			t.Errorf("GetSnapshot before any: got %v, want not_found", err)
		}
		epoch := epochOf(t, c.client, ch)
		state := []byte(`{"tasks":["a","b","c"]}` + "\x00\xff") // any bytes
		res, err := c.client.PutSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.PutSnapshotRequest{
			Channel: ch, Seq: 3, Epoch: epoch, Version: "board/v1", State: state, ClientId: "alice",
		}))
		if err != nil {
			t.Fatalf("PutSnapshot: %v", err)
		}
		got := res.Msg.GetSnapshot()
		if got.GetSeq() != 3 || got.GetEpoch() != epoch || got.GetChannel() != ch || got.GetClientId() != "alice" ||
			got.GetVersion() != "board/v1" || got.GetTime() == nil || len(got.GetState()) != 0 {
			t.Errorf("PutSnapshot response: got %v, want the snapshot at 3 without its state", got)
		}
		gres, err := c.client.GetSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetSnapshotRequest{Channel: ch}))
		if err != nil {
			t.Fatalf("GetSnapshot: %v", err)
		}
		if g := gres.Msg.GetSnapshot(); g.GetSeq() != 3 || !bytes.Equal(g.GetState(), state) {
			t.Errorf("GetSnapshot: got seq %d state %q, want 3 %q", g.GetSeq(), g.GetState(), state)
		}

		// From 0 with snapshots: the snapshot, the actions after it, ready.
		r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Snapshots: true, Positions: []*actionsyncv1.Position{{Channel: ch}}})
		evs := r.take(t, 4)
		if s := evs[0].Snapshot; s == nil || s.GetSeq() != 3 || !bytes.Equal(s.GetState(), state) || s.GetEpoch() != epoch {
			t.Fatalf("first event: got %+v, want the snapshot at 3", evs[0])
		}
		if evs[1].Action.GetSeq() != 4 || evs[2].Action.GetSeq() != 5 || evs[3].Ready.GetHeadSeq() != 5 {
			t.Errorf("after the snapshot: got %+v, want seqs 4, 5 and ready at 5", evs[1:])
		}
		// Without: the whole history, as before.
		old := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: ch}}})
		if evs := old.take(t, 6); evs[0].Action.GetSeq() != 1 || evs[5].Ready == nil {
			t.Errorf("without snapshots: got %+v, want seqs 1..5 and ready", evs)
		}
	})
}

func TestService_PutSnapshot_refused(t *testing.T) {
	t.Parallel()
	const limit = 100
	e := newEnv(t, envConfig{mem: memory.Options{MaxSnapshotBytes: limit}})
	c := e.fresh(t)
	const ch = "board:refused"
	e.dispatch(t, ch, "alice", acts(4, "a")...)
	epoch := epochOf(t, c, ch)
	put := func(req *actionsyncv1.PutSnapshotRequest) error {
		_, err := c.PutSnapshot(rpcCtx(t), connect.NewRequest(req))
		return err
	}
	if err := put(&actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 2, Epoch: epoch, State: bytes.Repeat([]byte("x"), limit)}); err != nil {
		t.Fatalf("PutSnapshot of %d bytes, limit %d: %v", limit, limit, err)
	}
	for _, tc := range []struct {
		name string
		req  *actionsyncv1.PutSnapshotRequest
		code connect.Code
		frag string
	}{
		{"bad_channel", &actionsyncv1.PutSnapshotRequest{Channel: "no spaces", Seq: 3, Epoch: epoch}, connect.CodeInvalidArgument, "channel:"},
		{"bad_client_id", &actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 3, Epoch: epoch, ClientId: "a b"}, connect.CodeInvalidArgument, "client_id:"},
		{"no_epoch", &actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 3}, connect.CodeInvalidArgument, "epoch: required"},
		{"long_epoch", &actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 3, Epoch: strings.Repeat("e", 65)}, connect.CodeInvalidArgument, "epoch: 65 bytes, limit 64"},
		{"seq_zero", &actionsyncv1.PutSnapshotRequest{Channel: ch, Epoch: epoch}, connect.CodeInvalidArgument, "seq: must be at least 1"},
		{"long_version", &actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 3, Epoch: epoch, Version: strings.Repeat("v", 65)}, connect.CodeInvalidArgument, "version: 65 bytes, limit 64"},
		{"too_large", &actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 3, Epoch: epoch, State: bytes.Repeat([]byte("x"), limit+1)}, connect.CodeInvalidArgument, "state: 101 bytes, limit 100"},
		{"wrong_epoch", &actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 3, Epoch: "other"}, connect.CodeFailedPrecondition, "epoch"},
		{"beyond_head", &actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 5, Epoch: epoch}, connect.CodeOutOfRange, "head 4"},
		{"not_newer", &actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 2, Epoch: epoch}, connect.CodeAlreadyExists, "holds a snapshot at seq 2"},
		{"no_channel", &actionsyncv1.PutSnapshotRequest{Channel: "board:none", Seq: 1, Epoch: epoch}, connect.CodeOutOfRange, "has no actions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkErr(t, put(tc.req), tc.code, tc.frag)
		})
	}
	res, err := c.GetSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetSnapshotRequest{Channel: ch}))
	if err != nil || res.Msg.GetSnapshot().GetSeq() != 2 {
		t.Errorf("after the refusals: got %v, %v; want the snapshot at 2 unchanged", res, err)
	}
}

// TestService_Subscribe_snapshotForReset: a client whose position history no longer
// reaches gets the snapshot instead of a reset, on Subscribe and on Sync.
func TestService_Subscribe_snapshotForReset(t *testing.T) {
	t.Parallel()
	forEachSyncClient(t, envConfig{mem: memory.Options{HistorySize: 5}}, func(t *testing.T, e *testEnv, open func(t *testing.T) *syncer) {
		const ch = "board:trimmed"
		c := e.fresh(t)
		e.dispatch(t, ch, "alice", acts(10, "a")...) // history keeps 6..10
		if _, err := c.PutSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 8, Epoch: epochOf(t, c, ch), State: []byte("s8")})); err != nil {
			t.Fatal(err)
		}
		s := open(t)
		s.subscribe(t, &actionsyncv1.SubscribeRequest{Snapshots: true, Positions: []*actionsyncv1.Position{{Channel: ch, AfterSeq: 2}}})
		evs := s.take(t, 4)
		if evs[0].Snapshot.GetSeq() != 8 || string(evs[0].Snapshot.GetState()) != "s8" || evs[1].Action.GetSeq() != 9 || evs[2].Action.GetSeq() != 10 || evs[3].Ready.GetHeadSeq() != 10 {
			t.Errorf("Sync from a trimmed position: got %+v, want snapshot 8, seqs 9 10, ready 10", evs)
		}
		r := subscribe(t, c, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: ch, AfterSeq: 2}}})
		if ev := r.nextNonBeat(t); ev.Reset == nil || ev.Reset.GetHeadSeq() != 10 {
			t.Errorf("Subscribe without snapshots from a trimmed position: got %+v, want a reset at 10", ev)
		}
	})
}

func TestAdmin_DeleteSnapshot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	c := e.fresh(t)
	admin := actionsyncv1connect.NewAdminServiceClient(e.h2c, e.srv.URL)
	const ch = "board:admin"
	e.dispatch(t, ch, "alice", acts(3, "a")...)
	del := func(seq uint64) (uint64, error) {
		res, err := admin.DeleteSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.DeleteSnapshotRequest{Channel: ch, Seq: seq}))
		if err != nil {
			return 0, err
		}
		return res.Msg.GetSeq(), nil
	}
	if _, err := del(0); codeOf(err) != connect.CodeNotFound {
		t.Errorf("delete with none held: got %v, want not_found", err)
	}
	if _, err := c.PutSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.PutSnapshotRequest{Channel: ch, Seq: 2, Epoch: epochOf(t, c, ch)})); err != nil {
		t.Fatal(err)
	}
	if _, err := del(1); codeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("delete at 1 with 2 held: got %v, want failed_precondition", err)
	}
	if seq, err := del(2); err != nil || seq != 2 {
		t.Fatalf("delete at 2: got %d, %v", seq, err)
	}
	if _, err := c.GetSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetSnapshotRequest{Channel: ch})); codeOf(err) != connect.CodeNotFound {
		t.Errorf("GetSnapshot after the delete: got %v, want not_found", err)
	}
	if _, err := admin.DeleteSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.DeleteSnapshotRequest{Channel: "bad channel"})); codeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("delete on a bad channel name: got %v, want invalid_argument", err)
	}
}

// TestService_Dispatch_sentAfter: a retry that names where it was first sent is refused
// with FAILED_PRECONDITION once history no longer reaches back there, on Dispatch and
// on Sync, and nothing of it is applied.
func TestService_Dispatch_sentAfter(t *testing.T) {
	t.Parallel()
	forEachSyncClient(t, envConfig{mem: memory.Options{HistorySize: 3}}, func(t *testing.T, e *testEnv, open func(t *testing.T) *syncer) {
		const ch = "board:retry"
		c := e.fresh(t)
		e.dispatch(t, ch, "alice", acts(5, "a")...) // history keeps 3..5: trimmed 2
		epoch := epochOf(t, c, ch)
		req := func(id string, after uint64, epoch string) *actionsyncv1.DispatchRequest {
			return &actionsyncv1.DispatchRequest{Channel: ch, ClientId: "alice", SentAfterSeq: after, SentEpoch: epoch, Actions: []*actionsyncv1.Action{act("T", id, nil)}}
		}
		_, err := c.Dispatch(rpcCtx(t), connect.NewRequest(req("late", 1, epoch)))
		checkErr(t, err, connect.CodeFailedPrecondition, "dedupe window passed")
		_, err = c.Dispatch(rpcCtx(t), connect.NewRequest(req("late", 4, "other")))
		checkErr(t, err, connect.CodeFailedPrecondition, "dedupe window passed")
		_, err = c.Dispatch(rpcCtx(t), connect.NewRequest(req("late", 4, "")))
		checkErr(t, err, connect.CodeInvalidArgument, "sent_after_seq: requires sent_epoch")
		s := open(t)
		s.dispatch(t, req("late", 1, epoch))
		if ev := s.nextNonBeat(t); ev.DispatchError.GetCode() != "failed_precondition" {
			t.Errorf("Sync retry past the window: got %+v, want dispatch_error failed_precondition", ev)
		}
		if h := e.historyAfter(t, ch, 4); len(h) != 1 || h[0].GetSeq() != 5 {
			t.Fatalf("refused retries were applied: history after 4 is %v, want seq 5 only", h)
		}
		res, err := c.Dispatch(rpcCtx(t), connect.NewRequest(req("late", 2, epoch)))
		if err != nil || res.Msg.GetAcks()[0].GetSeq() != 6 {
			t.Errorf("retry within the window: got %v, %v; want seq 6", res, err)
		}
	})
}
