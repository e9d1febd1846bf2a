package service_test

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/service"
)

func TestService_Dispatch(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
		start := time.Now()
		sent := []*actionsyncv1.Action{
			act("ADD_TASK", "task-1", map[string]any{"title": "write tests", "stage": 1.0}),
			act("MOVE_TASK", "", []any{"x", 2.0, true, nil}),
			act("RENAME", "01HZX7Q3J8Y6V5T4S3R2Q1P0NM", "plain string"),
		}
		res, err := c.client.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", ClientId: "alice", Actions: sent}))
		if err != nil {
			t.Fatalf("Dispatch: %v", err)
		}
		acks := res.Msg.GetAcks()
		if len(acks) != 3 {
			t.Fatalf("got %d acks, want 3", len(acks))
		}
		if _, err := ulid.ParseStrict(acks[1].GetId()); err != nil {
			t.Errorf("acks[1].id %q: want a server-assigned ULID: %v", acks[1].GetId(), err)
		}
		want := []*actionsyncv1.Ack{{Id: "task-1", Seq: 1}, {Id: acks[1].GetId(), Seq: 2}, {Id: "01HZX7Q3J8Y6V5T4S3R2Q1P0NM", Seq: 3}}
		if diff := cmp.Diff(want, acks, protocmp.Transform()); diff != "" {
			t.Errorf("acks (-want +got):\n%s", diff)
		}

		res, err = c.client.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "board:1", Actions: acts(1, "")}))
		if err != nil {
			t.Fatalf("second Dispatch: %v", err)
		}
		if got := res.Msg.GetAcks()[0].GetSeq(); got != 4 {
			t.Errorf("second Dispatch: got seq %d, want 4", got)
		}

		// The payloads are relayed as sent, with the server's fields added.
		h := c.env.history(t, "board:1")
		if len(h) != 4 {
			t.Fatalf("History has %d actions, want 4", len(h))
		}
		for i, a := range sent {
			checkServerFields(t, h[i], "board:1", uint64(i+1), "alice")
			if h[i].GetTime().AsTime().Before(start.Add(-time.Second)) {
				t.Errorf("seq %d: time %v is before the dispatch", i+1, h[i].GetTime().AsTime())
			}
			want := &actionsyncv1.Action{Type: a.GetType(), Payload: a.GetPayload(), Id: acks[i].GetId(), Channel: "board:1", Seq: uint64(i + 1), ClientId: "alice", Time: h[i].GetTime()}
			if diff := cmp.Diff(want, h[i], protocmp.Transform()); diff != "" {
				t.Errorf("history seq %d (-want +got):\n%s", i+1, diff)
			}
		}
		checkServerFields(t, h[3], "board:1", 4, "")
	})
}

func TestService_Subscribe(t *testing.T) {
	t.Parallel()
	t.Run("replay_then_live", func(t *testing.T) {
		t.Parallel()
		forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
			c.env.dispatch(t, "room", "w1", acts(5, "a")...)
			c.env.dispatch(t, "other", "w1", acts(2, "o")...)
			r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{ClientId: "reader", Positions: []*actionsyncv1.Position{{Channel: "room", AfterSeq: 2}}})
			h := c.env.history(t, "room")
			want := append(actionEvents(h[2:]...), readyEv("room", 5))
			if diff := diffEvents(want, r.take(t, len(want))); diff != "" {
				t.Fatalf("replay (-want +got):\n%s", diff)
			}

			c.env.dispatch(t, "other", "w2", acts(1, "o2")...) // not followed
			acks := c.env.dispatch(t, "room", "w2", act("LIVE", "live-1", 1.0), act("LIVE", "", 2.0))
			got := r.take(t, 2)
			for i, ev := range got {
				if ev.Action == nil {
					t.Fatalf("live event %d: got %+v, want an action", i, ev)
				}
				checkServerFields(t, ev.Action, "room", uint64(6+i), "w2")
				if ev.Action.GetId() != acks[i].GetId() {
					t.Errorf("live action %d: got id %q, want %q", i, ev.Action.GetId(), acks[i].GetId())
				}
			}
			h = c.env.history(t, "room")
			if diff := diffEvents(actionEvents(h[5:]...), got); diff != "" {
				t.Errorf("live actions differ from History (-want +got):\n%s", diff)
			}
		})
	})
	t.Run("live_only", func(t *testing.T) {
		t.Parallel()
		forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
			c.env.dispatch(t, "room", "", acts(3, "")...)
			r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", Live: true}}})
			if diff := diffEvents([]event{readyEv("room", 3)}, r.take(t, 1)); diff != "" {
				t.Fatalf("first event (-want +got):\n%s", diff)
			}
			c.env.dispatch(t, "room", "w", act("LIVE", "l1", nil))
			ev := r.nextNonBeat(t)
			if ev.Action == nil {
				t.Fatalf("got %+v, want the live action", ev)
			}
			checkServerFields(t, ev.Action, "room", 4, "w")
		})
	})
	t.Run("multiple_channels", func(t *testing.T) {
		t.Parallel()
		forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
			c.env.dispatch(t, "a", "", acts(2, "a")...)
			c.env.dispatch(t, "b", "", acts(1, "b")...)
			r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{
				{Channel: "a"}, {Channel: "b", AfterSeq: 1}, {Channel: "c"},
			}})
			ha := c.env.history(t, "a")
			want := map[string][]event{
				"a": append(actionEvents(ha...), readyEv("a", 2)),
				"b": {readyEv("b", 1)},
				"c": {readyEv("c", 0)},
			}
			if diff := cmp.Diff(want, byChannel(r.take(t, 5)), eventCmp); diff != "" {
				t.Fatalf("replay per channel (-want +got):\n%s", diff)
			}
			c.env.dispatch(t, "c", "", acts(1, "c")...)
			c.env.dispatch(t, "a", "", acts(1, "a2")...)
			c.env.dispatch(t, "b", "", acts(1, "b2")...)
			want = map[string][]event{
				"a": actionEvents(c.env.history(t, "a")[2:]...),
				"b": actionEvents(c.env.history(t, "b")[1:]...),
				"c": actionEvents(c.env.history(t, "c")...),
			}
			if diff := cmp.Diff(want, byChannel(r.take(t, 3)), eventCmp); diff != "" {
				t.Fatalf("live per channel (-want +got):\n%s", diff)
			}
		})
	})
	t.Run("reset_beyond_head", func(t *testing.T) {
		t.Parallel()
		forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
			c.env.dispatch(t, "used", "", acts(2, "")...)
			r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{
				{Channel: "fresh", AfterSeq: 99}, {Channel: "used", AfterSeq: 3},
			}})
			want := map[string][]event{
				"fresh": {resetEv("fresh", 0), readyEv("fresh", 0)},
				"used":  {resetEv("used", 2), readyEv("used", 2)},
			}
			if diff := cmp.Diff(want, byChannel(r.take(t, 4)), eventCmp); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
			c.env.dispatch(t, "fresh", "", acts(1, "")...)
			if ev := r.nextNonBeat(t); ev.Action.GetSeq() != 1 || ev.Action.GetChannel() != "fresh" {
				t.Fatalf("after the reset: got %+v, want fresh seq 1", ev)
			}
		})
	})
	t.Run("reset_trimmed", func(t *testing.T) {
		t.Parallel()
		forEachClient(t, envConfig{mem: memory.Options{HistorySize: 3}}, func(t *testing.T, c clientCase) {
			c.env.dispatch(t, "room", "", acts(5, "")...) // history holds 3..5
			r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", AfterSeq: 1}}})
			if diff := diffEvents([]event{resetEv("room", 5), readyEv("room", 5)}, r.take(t, 2)); diff != "" {
				t.Fatalf("after_seq 1 (-want +got):\n%s", diff)
			}
			c.env.dispatch(t, "room", "", acts(1, "")...)
			if ev := r.nextNonBeat(t); ev.Action.GetSeq() != 6 {
				t.Fatalf("after the reset: got %+v, want seq 6", ev)
			}

			// after_seq 3 is the oldest still resumable position: a replay, no reset.
			r = subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", AfterSeq: 3}}})
			h := c.env.historyAfter(t, "room", 3) // 4..6
			if diff := diffEvents(append(actionEvents(h...), readyEv("room", 6)), r.take(t, 4)); diff != "" {
				t.Fatalf("after_seq 3 (-want +got):\n%s", diff)
			}
		})
	})
}

// byChannel groups events by the channel they concern, keeping their order.
func byChannel(evs []event) map[string][]event {
	out := map[string][]event{}
	for _, ev := range evs {
		var ch string
		switch {
		case ev.Action != nil:
			ch = ev.Action.GetChannel()
		case ev.Ready != nil:
			ch = ev.Ready.GetChannel()
		case ev.Reset != nil:
			ch = ev.Reset.GetChannel()
		}
		out[ch] = append(out[ch], ev)
	}
	return out
}

func TestService_History(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{mem: memory.Options{HistorySize: 10}}, func(t *testing.T, c clientCase) {
		c.env.dispatch(t, "room", "", acts(15, "h")...) // history holds 6..15
		all := c.env.historyAfter(t, "room", 5)
		if len(all) != 10 || all[0].GetSeq() != 6 {
			t.Fatalf("History from 0 after trimming: got %d actions from seq %d, want 10 from 6", len(all), all[0].GetSeq())
		}
		tests := []struct {
			name     string
			channel  string
			after    uint64
			limit    uint32
			want     []*actionsyncv1.Action
			wantHead uint64
			code     connect.Code
			frag     string
		}{
			{name: "limit", channel: "room", after: 5, limit: 3, want: all[:3], wantHead: 15},
			{name: "default_limit", channel: "room", after: 5, want: all, wantHead: 15},
			{name: "middle", channel: "room", after: 12, limit: 2, want: all[7:9], wantHead: 15},
			{name: "at_head", channel: "room", after: 15, wantHead: 15},
			{name: "trimmed", channel: "room", after: 4, code: connect.CodeFailedPrecondition, frag: "history starts after seq 5"},
			{name: "beyond_head", channel: "room", after: 16, code: connect.CodeOutOfRange, frag: "after_seq 16, head 15"},
			{name: "new_channel", channel: "new"},
			{name: "new_channel_beyond_head", channel: "new", after: 1, code: connect.CodeOutOfRange, frag: "after_seq 1, head 0"},
		}
		for _, tt := range tests {
			res, err := c.client.History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: tt.channel, AfterSeq: tt.after, Limit: tt.limit}))
			if tt.code != 0 {
				checkErr(t, err, tt.code, tt.frag)
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			want := &actionsyncv1.HistoryResponse{Actions: tt.want, HeadSeq: tt.wantHead}
			if diff := cmp.Diff(want, res.Msg, protocmp.Transform()); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.name, diff)
			}
		}
	})
}

func TestService_Subscribe_echo(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
		pos := []*actionsyncv1.Position{{Channel: "room"}}
		own := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{ClientId: "me", Positions: pos})
		excl := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{ClientId: "me", ExcludeOwn: true, Positions: pos})
		anon := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: pos})
		for _, r := range []*reader{own, excl, anon} {
			if diff := diffEvents([]event{readyEv("room", 0)}, r.take(t, 1)); diff != "" {
				t.Fatalf("ready (-want +got):\n%s", diff)
			}
		}
		c.env.dispatch(t, "room", "me", act("MINE", "m1", nil))
		c.env.dispatch(t, "room", "you", act("YOURS", "y1", nil))
		h := c.env.history(t, "room")
		if diff := diffEvents(actionEvents(h...), own.take(t, 2)); diff != "" {
			t.Errorf("sender without exclude_own (-want +got):\n%s", diff)
		}
		if diff := diffEvents(actionEvents(h...), anon.take(t, 2)); diff != "" {
			t.Errorf("other subscriber (-want +got):\n%s", diff)
		}
		if diff := diffEvents(actionEvents(h[1]), excl.take(t, 1)); diff != "" {
			t.Errorf("sender with exclude_own (-want +got):\n%s", diff)
		}

		// exclude_own applies to the replay too.
		r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{ClientId: "me", ExcludeOwn: true, Positions: pos})
		if diff := diffEvents([]event{{Action: h[1]}, readyEv("room", 2)}, r.take(t, 2)); diff != "" {
			t.Errorf("replay with exclude_own (-want +got):\n%s", diff)
		}
	})
}

func TestService_Dispatch_idempotent(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
		r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room"}}})
		r.take(t, 1) // ready
		dispatch := func(actions ...*actionsyncv1.Action) (*actionsyncv1.DispatchResponse, error) {
			res, err := c.client.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "room", ClientId: "c1", Actions: actions}))
			if err != nil {
				return nil, err
			}
			return res.Msg, nil
		}
		first := act("ADD", "x-1", map[string]any{"n": 1.0})
		for i, want := range []*actionsyncv1.Ack{{Id: "x-1", Seq: 1}, {Id: "x-1", Seq: 1, Duplicate: true}} {
			res, err := dispatch(act("ADD", "x-1", map[string]any{"n": 1.0}))
			if err != nil {
				t.Fatalf("dispatch %d: %v", i, err)
			}
			if diff := cmp.Diff(want, res.GetAcks()[0], protocmp.Transform()); diff != "" {
				t.Errorf("dispatch %d ack (-want +got):\n%s", i, diff)
			}
		}
		// A batch mixing a retry and a new action.
		res, err := dispatch(first, act("ADD", "x-2", nil))
		if err != nil {
			t.Fatalf("mixed batch: %v", err)
		}
		want := []*actionsyncv1.Ack{{Id: "x-1", Seq: 1, Duplicate: true}, {Id: "x-2", Seq: 2}}
		if diff := cmp.Diff(want, res.GetAcks(), protocmp.Transform()); diff != "" {
			t.Errorf("mixed batch acks (-want +got):\n%s", diff)
		}

		// Same id, different payload: refused, nothing applied.
		_, err = dispatch(act("ADD", "x-3", nil), act("ADD", "x-1", map[string]any{"n": 2.0}))
		checkErr(t, err, connect.CodeAlreadyExists, `actions[1].id: "x-1" is seq 1`)
		if got := c.env.head(t, "room"); got != 2 {
			t.Fatalf("after the conflict: head %d, want 2", got)
		}

		c.env.dispatch(t, "room", "c1", act("ADD", "x-4", nil))
		var seqs []uint64
		for _, ev := range r.take(t, 3) {
			seqs = append(seqs, ev.Action.GetSeq())
		}
		if diff := cmp.Diff([]uint64{1, 2, 3}, seqs); diff != "" {
			t.Errorf("subscriber received seqs (-want +got):\n%s", diff)
		}
		if h := c.env.history(t, "room"); h[2].GetId() != "x-4" {
			t.Errorf("seq 3 has id %q, want x-4 (the refused x-3 must not be applied)", h[2].GetId())
		}
	})
}

// checkAppliedNothing checks that a channel's head is still want and that the server
// still serves a new client.
func checkAppliedNothing(t *testing.T, e *testEnv, channel string, want uint64) {
	t.Helper()
	if got := e.head(t, channel); got != want {
		t.Fatalf("%s: head %d after a refused request, want %d", channel, got, want)
	}
	e.checkServes(t)
}

func TestService_Dispatch_allOrNothing(t *testing.T) {
	t.Parallel()
	allow := mustAllowList(t, service.AllowRule{Channel: "room", Types: []string{"T0", "T1", "T2", "T3", "T4", "OTHER"}})
	bad := map[string]struct {
		action *actionsyncv1.Action
		code   connect.Code
		frag   string
	}{
		"invalid":     {act("", "", nil), connect.CodeInvalidArgument, "actions[3].type: required"},
		"not_allowed": {act("NOPE", "", nil), connect.CodePermissionDenied, `actions[3].type: "NOPE" is not allowed`},
		"conflicting": {act("OTHER", "old-0", nil), connect.CodeAlreadyExists, `actions[3].id: "old-0" is seq 1`},
		"repeats_id":  {act("OTHER", "b-0", nil), connect.CodeAlreadyExists, `actions[3].id: "b-0" repeats actions[0]`},
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			forEachClient(t, envConfig{svc: service.Options{AllowList: allow}}, func(t *testing.T, c clientCase) {
				c.env.dispatch(t, "room", "", acts(1, "old")...)
				r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", Live: true}}})
				r.take(t, 1) // ready
				batch := acts(5, "b")
				batch[3] = b.action
				_, err := c.client.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "room", Actions: batch}))
				checkErr(t, err, b.code, b.frag)
				checkAppliedNothing(t, c.env, "room", 1)
				c.env.dispatch(t, "room", "", act("T0", "sentinel", nil))
				if ev := r.nextNonBeat(t); ev.Action.GetId() != "sentinel" || ev.Action.GetSeq() != 2 {
					t.Fatalf("subscriber: got %+v, want only the sentinel at seq 2", ev)
				}
			})
		})
	}
}

// Ready and reset carry the channel's epoch; resuming with another epoch (the history the
// client's after_seq belonged to is gone, e.g. a restarted in-memory server) gets a reset
// even though after_seq is within the new history; a too-long epoch is refused.
func TestService_Subscribe_epoch(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
		c.env.dispatch(t, "room", "w", acts(3, "a")...)
		r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", AfterSeq: 3}}})
		epoch := r.next(t).Ready.GetEpoch()
		if epoch == "" {
			t.Fatal("ready without an epoch")
		}

		same := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", AfterSeq: 2, Epoch: epoch}}})
		h := c.env.history(t, "room")
		if diff := diffEvents(append(actionEvents(h[2]), readyEv("room", 3)), same.take(t, 2)); diff != "" {
			t.Errorf("resume in the same epoch (-want +got):\n%s", diff)
		}

		other := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", AfterSeq: 2, Epoch: "old-epoch"}}})
		got := other.take(t, 2)
		if diff := diffEvents([]event{resetEv("room", 3), readyEv("room", 3)}, got); diff != "" {
			t.Errorf("resume from another epoch (-want +got):\n%s", diff)
		}
		if got[0].Reset.GetEpoch() != epoch {
			t.Errorf("reset epoch %q, want the channel's %q", got[0].Reset.GetEpoch(), epoch)
		}

		bad := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "room", Epoch: strings.Repeat("e", 65)}}})
		bad.wantEnd(t, connect.CodeInvalidArgument, "positions[0].epoch: 65 bytes, limit 64")
	})
}
