package service_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/auth"
	"github.com/actionsync/actionsync/broker/presence"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

func updatePresence(t *testing.T, c actionsyncv1connect.SyncServiceClient, channel, clientID string, info *structpb.Struct) error {
	t.Helper()
	_, err := c.UpdatePresence(rpcCtx(t), connect.NewRequest(&actionsyncv1.UpdatePresenceRequest{
		Channel: channel, ClientId: clientID, Presence: &actionsyncv1.Presence{Info: info}}))
	return err
}

// TestService_UpdatePresence: an update reaches every watcher as a join with the new
// info (on Subscribe streams of every protocol, the member's own included) and
// GetPresence; the same info again is silent; the member's next event is its leave.
func TestService_UpdatePresence(t *testing.T) {
	t.Parallel()
	forEachClient(t, presenceCfg(t, -1, 0), func(t *testing.T, c clientCase) {
		a := subscribe(t, c.client, withPresence(t, "board", "a"))
		a.wantPresence(t, "snapshot  #0", "join a #1")
		b := subscribe(t, c.client, withPresence(t, "board", "b"))
		b.wantPresence(t, "snapshot a #1", "join b #2")
		a.wantPresence(t, "join b #2")

		editing := info(t, "A")
		editing.Fields["editing"] = structpb.NewStringValue("task-7")
		if err := updatePresence(t, c.client, "board", "a", editing); err != nil {
			t.Fatalf("UpdatePresence: %v", err)
		}
		want := &actionsyncv1.PresenceEvent{Channel: "board", Join: &actionsyncv1.PresenceMember{ClientId: "a", Info: editing}, Count: 2}
		for name, r := range map[string]*reader{"a": a, "b": b} {
			if diff := cmp.Diff(want, r.nextPresence(t), protocmp.Transform()); diff != "" {
				t.Fatalf("%s's event for a's update (-want +got):\n%s", name, diff)
			}
		}
		res, err := c.client.GetPresence(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetPresenceRequest{Channel: "board"}))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Msg.GetMembers()[0]; !proto.Equal(got.GetInfo(), editing) {
			t.Fatalf("GetPresence after the update: a's info %v, want %v", got.GetInfo(), editing)
		}
		// The same info again changes nothing; an empty info clears it.
		if err := updatePresence(t, c.client, "board", "a", editing); err != nil {
			t.Fatal(err)
		}
		if err := updatePresence(t, c.client, "board", "a", nil); err != nil {
			t.Fatal(err)
		}
		ev := b.nextPresence(t)
		if describe(ev) != "join a #2" || ev.GetJoin().GetInfo() != nil {
			t.Fatalf("after the same info, then none: got %q with info %v, want join a #2 without info", describe(ev), ev.GetJoin().GetInfo())
		}
		a.cancel()
		b.wantPresence(t, "leave a #1")
	})
}

// TestService_UpdatePresence_errors: the info limit at N-1, N and N+1 bytes and its JSON
// check, required fields, and NOT_FOUND for a client id that is no member: never
// subscribed, subscribed without presence, another channel, or gone after its leave.
func TestService_UpdatePresence_errors(t *testing.T) {
	t.Parallel()
	sized := func(t *testing.T, n int) *structpb.Struct {
		empty, _ := structpb.NewStruct(map[string]any{"name": ""})
		s, _ := structpb.NewStruct(map[string]any{"name": strings.Repeat("x", n-proto.Size(empty))})
		if got := proto.Size(s); got != n {
			t.Fatalf("sized(%d) has %d bytes", n, got)
		}
		return s
	}
	const limit = 100
	cfg := presenceCfg(t, -1, 0)
	cfg.svc.Limits.MaxPresenceInfoBytes = limit
	forEachClient(t, cfg, func(t *testing.T, c clientCase) {
		a := subscribe(t, c.client, withPresence(t, "board", "a"))
		a.wantPresence(t, "snapshot  #0", "join a #1")
		for _, size := range []int{limit - 1, limit, limit + 1} {
			err := updatePresence(t, c.client, "board", "a", sized(t, size))
			if size > limit {
				checkErr(t, err, connect.CodeInvalidArgument, fmt.Sprintf("presence.info: %d bytes, limit %d", size, limit))
				continue
			}
			if err != nil {
				t.Fatalf("info of %d bytes: %v", size, err)
			}
			a.wantPresence(t, "join a #1")
		}
		if c.proto.binary {
			nan := info(t, "A")
			nan.Fields["x"] = structpb.NewNumberValue(mathNaN())
			checkErr(t, updatePresence(t, c.client, "board", "a", nan), connect.CodeInvalidArgument, "presence.info: number NaN")
		}
		checkErr(t, updatePresence(t, c.client, "board", "", info(t, "A")), connect.CodeInvalidArgument, "client_id: required")
		checkErr(t, updatePresence(t, c.client, "board", "not valid", info(t, "A")), connect.CodeInvalidArgument, "client_id:")
		checkErr(t, updatePresence(t, c.client, "", "a", info(t, "A")), connect.CodeInvalidArgument, "channel:")
		_, err := c.client.UpdatePresence(rpcCtx(t), connect.NewRequest(&actionsyncv1.UpdatePresenceRequest{Channel: "board", ClientId: "a"}))
		checkErr(t, err, connect.CodeInvalidArgument, "presence: required")

		// Subscribed without presence: no member to update.
		plain := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "board", Live: true}}, ClientId: "p"})
		defer plain.cancel()
		for _, tc := range []struct{ channel, id string }{{"board", "nobody"}, {"board", "p"}, {"other", "a"}} {
			checkErr(t, updatePresence(t, c.client, tc.channel, tc.id, info(t, "X")), connect.CodeNotFound,
				fmt.Sprintf("presence: client_id %q on channel %q: not a member", tc.id, tc.channel))
		}
		a.cancel()
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := updatePresence(t, c.client, "board", "a", info(t, "A"))
			if connect.CodeOf(err) == connect.CodeNotFound {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("UpdatePresence after a's stream ended (no grace): got %v, want not_found", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestService_UpdatePresence_sync: a member of a Sync stream is updated; its watchers on
// the stream see the join.
func TestService_UpdatePresence_sync(t *testing.T) {
	t.Parallel()
	forEachSyncClient(t, presenceCfg(t, -1, 0), func(t *testing.T, e *testEnv, open func(t *testing.T) *syncer) {
		s := open(t)
		s.subscribe(t, withPresence(t, "board", "a"))
		s.wantPresence(t, "snapshot  #0", "join a #1")
		if err := updatePresence(t, e.fresh(t), "board", "a", info(t, "Alice")); err != nil {
			t.Fatal(err)
		}
		ev := s.nextPresence(t)
		if describe(ev) != "join a #1" || !proto.Equal(ev.GetJoin().GetInfo(), info(t, "Alice")) {
			t.Fatalf("after the update: got %q with %v, want join a #1 with the new info", describe(ev), ev.GetJoin().GetInfo())
		}
	})
}

// TestService_UpdatePresence_auth: the client id must be the token's, the subscribe
// right is needed, the subject stays the token's, and updates count against the
// identity's dispatch rate.
func TestService_UpdatePresence_auth(t *testing.T) {
	t.Parallel()
	tr, err := presence.New(presence.Options{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	e := authEnvWith(t, service.Options{Presence: tr, Quotas: service.Quotas{DispatchRate: 0.001, DispatchBurst: 2}})
	sub := []auth.Grant{{Channels: []string{"board:*"}, Allow: []auth.Right{auth.RightSubscribe}}}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			channel := "board:" + p.name
			// A subject per protocol: each has its own dispatch rate.
			alice := e.as(p, token(t, "alice-"+p.name, time.Hour, sub...))
			id := "alice-" + p.name + ":phone"
			r := subscribe(t, alice, withPresence(t, channel, id))
			r.wantPresence(t, "snapshot  #0", "join "+id+" #1")
			bob := e.as(p, token(t, "bob-"+p.name, time.Hour, sub...))
			checkErr(t, updatePresence(t, bob, channel, id, info(t, "B")), connect.CodePermissionDenied, "client_id")
			checkErr(t, updatePresence(t, alice, "other", id, info(t, "A")), connect.CodePermissionDenied, `channel "other"`)
			checkErr(t, updatePresence(t, e.as(p, ""), channel, id, info(t, "A")), connect.CodeUnauthenticated, "")
			// The refused call to "other" and this one spend alice's burst of 2: the next waits.
			if err := updatePresence(t, alice, channel, id, info(t, "Alice")); err != nil {
				t.Fatalf("UpdatePresence of alice's own member: %v", err)
			}
			if ev := r.nextPresence(t); ev.GetJoin().GetSubject() != "alice-"+p.name || !proto.Equal(ev.GetJoin().GetInfo(), info(t, "Alice")) {
				t.Fatalf("after alice's update: got %v, want her join with her subject and the new info", ev)
			}
			checkErr(t, updatePresence(t, alice, channel, id, info(t, "A")), connect.CodeResourceExhausted, "dispatch rate")

			carol := e.as(p, token(t, "carol-"+p.name, time.Hour, sub...))
			cid := "carol-" + p.name
			r2 := subscribe(t, carol, withPresence(t, channel, cid))
			r2.wantPresence(t, "snapshot "+id+" #1", "join "+cid+" #2")
			if err := updatePresence(t, carol, channel, "", info(t, "Carol")); err != nil { // the client id is the token's
				t.Fatalf("UpdatePresence with the token's client id: %v", err)
			}
			ev := r.nextPresence(t)
			ev = r.nextPresence(t)
			if got := ev.GetJoin(); got.GetClientId() != cid || got.GetSubject() != cid || !proto.Equal(got.GetInfo(), info(t, "Carol")) {
				t.Fatalf("after carol's update: got %v, want a join of %s with subject %s and the new info", ev, cid, cid)
			}
		})
	}
}
