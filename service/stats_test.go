package service_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// TestAdmin_GetStats checks GetStats's figures on a scripted state, its order, prefix
// and limit, and its limits at their edges.
func TestAdmin_GetStats(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	c := e.fresh(t)
	admin := actionsyncv1connect.NewAdminServiceClient(e.h2c, e.srv.URL)
	stats := func(req *actionsyncv1.GetStatsRequest) (*actionsyncv1.GetStatsResponse, error) {
		res, err := admin.GetStats(rpcCtx(t), connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	e.dispatch(t, "board:a", "alice", acts(3, "a")...)
	e.dispatch(t, "board:b", "alice", acts(1, "b")...)
	e.dispatch(t, "other", "alice", acts(2, "o")...)
	if _, err := c.PutSnapshot(rpcCtx(t), connect.NewRequest(&actionsyncv1.PutSnapshotRequest{Channel: "board:a", Seq: 2, Epoch: epochOf(t, c, "board:a")})); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r := subscribe(t, c, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board:b", Live: true}}})
		r.nextNonBeat(t) // ready: the subscription is a member of the channel's fan-out
	}

	got, err := stats(&actionsyncv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s := got.GetServer()
	if s.GetVersion() != "test" || s.GetBroker() != "memory" || !s.GetAvailable() || s.GetChannels() != 3 || s.GetSubscriptions() != 2 ||
		s.GetStreams() != 2 || s.GetHeapBytes() == 0 || s.GetMemoryBytes() < s.GetHeapBytes() || s.GetGoroutines() == 0 {
		t.Errorf("server = %v, want test/memory, available, 3 channels, 2 subscriptions and 2 streams, memory figures", s)
	}
	if got.GetChannelsMatched() != 3 || len(got.GetChannels()) != 3 {
		t.Fatalf("%d channels listed of %d matched, want 3 of 3", len(got.GetChannels()), got.GetChannelsMatched())
	}
	b, a, o := got.GetChannels()[0], got.GetChannels()[1], got.GetChannels()[2]
	if b.GetChannel() != "board:b" || b.GetSubscribers() != 2 || b.GetHeadSeq() != 1 || b.GetFirstSeq() != 1 || b.GetHistoryActions() != 1 {
		t.Errorf("first listed = %v, want board:b (most subscribers: 2) with 1 action", b)
	}
	if a.GetChannel() != "board:a" || a.GetSubscribers() != 0 || a.GetHeadSeq() != 3 || a.GetFirstSeq() != 1 || a.GetHistoryActions() != 3 ||
		a.GetHistoryBytes() == 0 || a.GetSnapshotSeq() != 2 || a.GetEpoch() != epochOf(t, c, "board:a") {
		t.Errorf("second listed = %v, want board:a: head 3, history 1..3, snapshot at 2", a)
	}
	if o.GetChannel() != "other" || o.GetSnapshotSeq() != 0 {
		t.Errorf("third listed = %v, want other (then by name), no snapshot", o)
	}

	got, err = stats(&actionsyncv1.GetStatsRequest{ChannelPrefix: "board:", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetChannelsMatched() != 2 || len(got.GetChannels()) != 1 || got.GetChannels()[0].GetChannel() != "board:b" {
		t.Errorf("prefix board:, limit 1: %v of %d, want board:b of 2", got.GetChannels(), got.GetChannelsMatched())
	}
	for _, c := range []struct {
		req  *actionsyncv1.GetStatsRequest
		code connect.Code
	}{
		{&actionsyncv1.GetStatsRequest{Limit: 1000}, 0},
		{&actionsyncv1.GetStatsRequest{Limit: 1001}, connect.CodeInvalidArgument},
		{&actionsyncv1.GetStatsRequest{ChannelPrefix: strings.Repeat("x", 256)}, 0},
		{&actionsyncv1.GetStatsRequest{ChannelPrefix: strings.Repeat("x", 257)}, connect.CodeInvalidArgument},
	} {
		if _, err := stats(c.req); codeOf(err) != c.code {
			t.Errorf("limit %d, prefix of %d bytes: %v, want code %v", c.req.GetLimit(), len(c.req.GetChannelPrefix()), err, c.code)
		}
	}
}
