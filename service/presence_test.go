package service_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"math"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/auth"
	"github.com/actionsync/actionsync/broker/presence"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/service"
)

// presenceCfg is an environment whose tracker has the given grace and listed members.
func presenceCfg(t *testing.T, grace time.Duration, maxMembers int) envConfig {
	t.Helper()
	return envConfig{svc: service.Options{PresenceOptions: presence.Options{Grace: grace, MaxMembers: maxMembers}}}
}

func info(t *testing.T, name string) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(map[string]any{"name": name, "color": "#e91e63"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withPresence is a subscribe request for channel from clientID with presence.
func withPresence(t *testing.T, channel, clientID string) *actionsyncv1.SubscribeRequest {
	return &actionsyncv1.SubscribeRequest{
		Positions: []*actionsyncv1.Position{{Channel: channel, Live: true}},
		ClientId:  clientID,
		Presence:  &actionsyncv1.Presence{Info: info(t, strings.ToUpper(clientID))},
	}
}

// describe renders a presence event compactly: "snapshot a,b #2", "join a #1", "leave a #0", "count #5".
func describe(e *actionsyncv1.PresenceEvent) string {
	ids := func(ms ...*actionsyncv1.PresenceMember) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.GetClientId())
		}
		return strings.Join(s, ",")
	}
	switch {
	case e.GetSnapshot() != nil:
		return fmt.Sprintf("snapshot %s #%d", ids(e.GetSnapshot().GetMembers()...), e.GetCount())
	case e.GetJoin() != nil:
		return fmt.Sprintf("join %s #%d", ids(e.GetJoin()), e.GetCount())
	case e.GetLeave() != nil:
		return fmt.Sprintf("leave %s #%d", ids(e.GetLeave()), e.GetCount())
	}
	return fmt.Sprintf("count #%d", e.GetCount())
}

// nextPresence returns the next presence event of r, skipping everything else.
func (r *reader) nextPresence(t *testing.T) *actionsyncv1.PresenceEvent {
	t.Helper()
	for {
		if ev := r.next(t); ev.Presence != nil {
			return ev.Presence
		}
	}
}

// wantPresence reads the next presence events of r and compares them with want.
func (r *reader) wantPresence(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for range want {
		got = append(got, describe(r.nextPresence(t)))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("presence events (-want +got):\n%s", diff)
	}
}

func TestService_Presence(t *testing.T) {
	t.Parallel()
	const grace = 100 * time.Millisecond
	forEachClient(t, presenceCfg(t, grace, 0), func(t *testing.T, c clientCase) {
		a := subscribe(t, c.client, withPresence(t, "board", "a"))
		a.wantPresence(t, "snapshot  #0", "join a #1")
		b := subscribe(t, c.client, withPresence(t, "board", "b"))
		b.wantPresence(t, "snapshot a #1", "join b #2")
		ev := a.nextPresence(t)
		want := &actionsyncv1.PresenceEvent{Channel: "board", Join: &actionsyncv1.PresenceMember{ClientId: "b", Info: info(t, "B")}, Count: 2}
		if diff := cmp.Diff(want, ev, protocmp.Transform()); diff != "" {
			t.Fatalf("a's event for b's join (-want +got):\n%s", diff)
		}

		res, err := c.client.GetPresence(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetPresenceRequest{Channel: "board"}))
		if err != nil {
			t.Fatal(err)
		}
		wantRes := &actionsyncv1.GetPresenceResponse{Count: 2, Members: []*actionsyncv1.PresenceMember{
			{ClientId: "a", Info: info(t, "A")}, {ClientId: "b", Info: info(t, "B")}}}
		if diff := cmp.Diff(wantRes, res.Msg, protocmp.Transform()); diff != "" {
			t.Fatalf("GetPresence (-want +got):\n%s", diff)
		}

		// b's stream ends: a sees b leave once the grace period is over, not before.
		ended := time.Now()
		b.cancel()
		a.wantPresence(t, "leave b #1")
		if d := time.Since(ended); d < grace {
			t.Fatalf("b left %v after its stream ended, want at least the grace period %v", d, grace)
		}
		// Presence does not touch the actions of the stream.
		c.env.dispatch(t, "board", "a", act("T", "x1", 1))
		if ev := a.nextNonBeat(t); ev.Action == nil || ev.Action.GetSeq() != 1 {
			t.Fatalf("after presence: got %+v, want action seq 1", ev)
		}
	})
}

// TestService_Presence_reconnectWithinGrace: a client that subscribes again within the
// grace period causes no leave and no join; one that does not, leaves.
func TestService_Presence_reconnectWithinGrace(t *testing.T) {
	t.Parallel()
	const grace = 400 * time.Millisecond
	forEachH2Client(t, presenceCfg(t, grace, 0), func(t *testing.T, c clientCase) {
		a := subscribe(t, c.client, withPresence(t, "board", "a"))
		a.wantPresence(t, "snapshot  #0", "join a #1")
		b := subscribe(t, c.client, withPresence(t, "board", "b"))
		a.wantPresence(t, "join b #2")
		b.cancel()
		time.Sleep(grace / 4)
		b = subscribe(t, c.client, withPresence(t, "board", "b"))
		b.wantPresence(t, "snapshot a,b #2")
		// Two streams of one client id are one member: a second one joins nothing.
		b2 := subscribe(t, c.client, withPresence(t, "board", "b"))
		b2.wantPresence(t, "snapshot a,b #2")
		b2.cancel()
		time.Sleep(2 * grace)
		// a has seen nothing since b's join: its next presence event is c's join.
		subscribe(t, c.client, withPresence(t, "board", "c"))
		a.wantPresence(t, "join c #3")
		b.cancel()
		a.wantPresence(t, "leave b #2")
	})
}

// TestService_Presence_limits checks presence.info at N-1, N and N+1 bytes, the
// required client id, and the listed members at N-1, N and N+1 members.
func TestService_Presence_limits(t *testing.T) {
	t.Parallel()
	sized := func(t *testing.T, n int) *structpb.Struct { // protobuf size n
		empty, _ := structpb.NewStruct(map[string]any{"name": ""})
		s, _ := structpb.NewStruct(map[string]any{"name": strings.Repeat("x", n-proto.Size(empty))})
		if got := proto.Size(s); got != n {
			t.Fatalf("sized(%d) has %d bytes", n, got)
		}
		return s
	}
	const limit, listed = 100, 3
	cfg := presenceCfg(t, -1, listed)
	cfg.svc.Limits.MaxPresenceInfoBytes = limit
	forEachClient(t, cfg, func(t *testing.T, c clientCase) {
		for _, size := range []int{limit - 1, limit, limit + 1} {
			req := withPresence(t, fmt.Sprint("info", size), "a")
			req.Presence.Info = sized(t, size)
			r := subscribe(t, c.client, req)
			if size > limit {
				r.wantEnd(t, connect.CodeInvalidArgument, fmt.Sprintf("presence.info: %d bytes, limit %d", size, limit))
				continue
			}
			r.wantPresence(t, "snapshot  #0", "join a #1")
		}

		noID := withPresence(t, "board", "")
		subscribe(t, c.client, noID).wantEnd(t, connect.CodeInvalidArgument, "presence: requires client_id")
		nan := withPresence(t, "board", "a")
		nan.Presence.Info.Fields["x"] = structpb.NewNumberValue(mathNaN())
		if c.proto.binary { // JSON cannot even carry it
			subscribe(t, c.client, nan).wantEnd(t, connect.CodeInvalidArgument, "presence.info: number NaN")
		}

		// Members listed at N-1, N, N+1: listing stops at N, the count goes on.
		watcher := subscribe(t, c.client, withPresence(t, "board", "w"))
		watcher.wantPresence(t, "snapshot  #0", "join w #1")
		for i, want := range []string{"join m1 #2", "join m2 #3", "count #4"} {
			subscribe(t, c.client, withPresence(t, "board", fmt.Sprint("m", i+1)))
			watcher.wantPresence(t, want)
			res, err := c.client.GetPresence(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetPresenceRequest{Channel: "board"}))
			if err != nil {
				t.Fatal(err)
			}
			if got, wantListed := len(res.Msg.GetMembers()), min(i+2, listed); got != wantListed || res.Msg.GetCount() != uint32(i+2) {
				t.Fatalf("%d members: GetPresence lists %d, count %d; want %d, count %d", i+2, got, res.Msg.GetCount(), wantListed, i+2)
			}
		}
		fresh := subscribe(t, c.client, withPresence(t, "board", "late"))
		fresh.wantPresence(t, "snapshot w,m1,m2 #4", "count #5") // its own join is beyond the listed members

		_, err := c.client.GetPresence(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetPresenceRequest{Channel: "no spaces"}))
		checkErr(t, err, connect.CodeInvalidArgument, "channel:")
	})
}

// TestService_Presence_sync: presence on Sync streams, a second subscribe adding a
// channel with presence, and the stream's end leaving both.
func TestService_Presence_sync(t *testing.T) {
	t.Parallel()
	forEachSyncClient(t, presenceCfg(t, -1, 0), func(t *testing.T, e *testEnv, open func(t *testing.T) *syncer) {
		watch := subscribe(t, e.fresh(t), &actionsyncv1.SubscribeRequest{
			Positions: []*actionsyncv1.Position{{Channel: "one", Live: true}, {Channel: "two", Live: true}},
			ClientId:  "w", Presence: &actionsyncv1.Presence{}})
		watch.wantPresence(t, "snapshot  #0", "join w #1", "snapshot  #0", "join w #1")
		s := open(t)
		s.subscribe(t, withPresence(t, "one", "a"))
		s.wantPresence(t, "snapshot w #1", "join a #2")
		watch.wantPresence(t, "join a #2")
		second := withPresence(t, "two", "")
		s.subscribe(t, second) // the client id is the stream's
		s.wantPresence(t, "snapshot w #1", "join a #2")
		watch.wantPresence(t, "join a #2")
		s.cancel()
		if cs, ok := s.s.(connectSync); ok {
			// A cancelled connect-go bidi stream goes on until its response is closed.
			_ = cs.s.CloseResponse()
		}
		got := []string{describe(watch.nextPresence(t)), describe(watch.nextPresence(t))}
		if got[0] != "leave a #1" || got[1] != "leave a #1" {
			t.Fatalf("after the Sync stream ended: got %q, want a's leave on both channels", got)
		}
	})
}

// TestService_Presence_auth: the member's subject is the token's; GetPresence needs the
// subscribe right.
func TestService_Presence_auth(t *testing.T) {
	t.Parallel()
	tr, err := presence.New(presence.Options{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	e := authEnvWith(t, service.Options{Presence: tr})
	sub := []auth.Grant{{Channels: []string{"board:*"}, Allow: []auth.Right{auth.RightSubscribe}}}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			channel := "board:" + p.name
			alice := e.as(p, token(t, "alice", time.Hour, sub...))
			r := subscribe(t, alice, withPresence(t, channel, "alice:phone"))
			ev := r.nextPresence(t)
			ev = r.nextPresence(t)
			if got := ev.GetJoin(); got.GetClientId() != "alice:phone" || got.GetSubject() != "alice" {
				t.Fatalf("join: got client id %q, subject %q; want alice:phone, alice", got.GetClientId(), got.GetSubject())
			}
			res, err := alice.GetPresence(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetPresenceRequest{Channel: channel}))
			if err != nil || res.Msg.GetCount() != 1 || res.Msg.GetMembers()[0].GetSubject() != "alice" {
				t.Fatalf("GetPresence: %v, %v; want alice", res, err)
			}
			// Another user's client id is refused, as for actions.
			subscribe(t, alice, withPresence(t, channel, "bob")).wantEnd(t, connect.CodePermissionDenied, "client_id")
			// No subscribe right on the channel: no presence either.
			_, err = alice.GetPresence(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetPresenceRequest{Channel: "other"}))
			checkErr(t, err, connect.CodePermissionDenied, `channel "other"`)
			_, err = e.as(p, "").GetPresence(rpcCtx(t), connect.NewRequest(&actionsyncv1.GetPresenceRequest{Channel: channel}))
			checkErr(t, err, connect.CodeUnauthenticated, "")
		})
	}
}

func mathNaN() float64 { return math.NaN() }
