package service_test

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

// sizedPayload returns a string payload whose protobuf size plus meta's is exactly n.
func sizedPayload(t *testing.T, n int, meta *structpb.Struct) *structpb.Value {
	t.Helper()
	for l := max(0, n-proto.Size(meta)-8); l <= n; l++ {
		v := structpb.NewStringValue(strings.Repeat("p", l))
		if proto.Size(v)+proto.Size(meta) == n {
			return v
		}
	}
	t.Fatalf("no string payload has size %d with meta", n)
	return nil
}

// sizedRequest returns a one-action dispatch whose protobuf encoding is exactly n bytes.
func sizedRequest(t *testing.T, n int) *actionsyncv1.DispatchRequest {
	t.Helper()
	for l := max(0, n-16); l <= n; l++ {
		req := &actionsyncv1.DispatchRequest{Channel: "a", Actions: []*actionsyncv1.Action{{Type: "T", Payload: structpb.NewStringValue(strings.Repeat("r", l))}}}
		if proto.Size(req) == n {
			return req
		}
	}
	t.Fatalf("no request has size %d", n)
	return nil
}

// one wraps actions into a dispatch request on channel "a".
func one(actions ...*actionsyncv1.Action) *actionsyncv1.DispatchRequest {
	return &actionsyncv1.DispatchRequest{Channel: "a", Actions: actions}
}

func withPayload(v *structpb.Value) *actionsyncv1.Action {
	return &actionsyncv1.Action{Type: "T", Payload: v}
}

func withMeta(v *structpb.Value, meta *structpb.Struct) *actionsyncv1.Action {
	return &actionsyncv1.Action{Type: "T", Payload: v, Meta: meta}
}

func typed(typ string) *actionsyncv1.DispatchRequest { return one(&actionsyncv1.Action{Type: typ}) }

func nested(depth int) *structpb.Value {
	v := structpb.NewNumberValue(1)
	for range depth {
		v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
	}
	return v
}

type dispatchCase struct {
	name       string
	limits     service.Limits
	allow      []service.AllowRule
	req        func(t *testing.T) *actionsyncv1.DispatchRequest
	code       connect.Code // 0: accepted
	frag       string
	binaryOnly bool // JSON cannot carry the request
}

func dispatchCases() []dispatchCase {
	req := func(r *actionsyncv1.DispatchRequest) func(*testing.T) *actionsyncv1.DispatchRequest {
		return func(*testing.T) *actionsyncv1.DispatchRequest { return r }
	}
	small := service.Limits{MaxTypeBytes: 8, MaxPayloadBytes: 100, MaxDispatchActions: 5}
	meta := &structpb.Struct{Fields: map[string]*structpb.Value{"origin": structpb.NewStringValue("tab-1"), "n": structpb.NewNumberValue(3)}}
	inv, denied := connect.CodeInvalidArgument, connect.CodePermissionDenied
	withActions := func(n int) func(*testing.T) *actionsyncv1.DispatchRequest {
		return req(one(acts(n, "")...))
	}
	id := func(s string) func(*testing.T) *actionsyncv1.DispatchRequest {
		return req(one(&actionsyncv1.Action{Type: "T", Id: s}))
	}
	channel := func(s string) func(*testing.T) *actionsyncv1.DispatchRequest {
		return req(&actionsyncv1.DispatchRequest{Channel: s, Actions: acts(1, "")})
	}
	clientID := func(s string) func(*testing.T) *actionsyncv1.DispatchRequest {
		return req(&actionsyncv1.DispatchRequest{Channel: "a", ClientId: s, Actions: acts(1, "")})
	}
	payload := func(n int, meta *structpb.Struct) func(*testing.T) *actionsyncv1.DispatchRequest {
		return func(t *testing.T) *actionsyncv1.DispatchRequest { return one(withMeta(sizedPayload(t, n, meta), meta)) }
	}
	allow := []service.AllowRule{
		{Channel: "board:*", Types: []string{"ADD_TASK", "MOVE_TASK"}},
		{Channel: "locked", Types: []string{}},
		{Channel: "open*", Types: []string{"*"}},
	}
	onChannel := func(ch, typ string) func(*testing.T) *actionsyncv1.DispatchRequest {
		return req(&actionsyncv1.DispatchRequest{Channel: ch, Actions: []*actionsyncv1.Action{{Type: typ}}})
	}
	return []dispatchCase{
		{name: "type_7_of_8", limits: small, req: req(typed("ABCDEFG"))},
		{name: "type_8_of_8", limits: small, req: req(typed("ABCDEFGH"))},
		{name: "type_9_of_8", limits: small, req: req(typed("ABCDEFGHI")), code: inv, frag: "actions[0].type: 9 bytes, limit 8"},
		{name: "type_8_bytes_4_runes", limits: small, req: req(typed("éééé"))},
		{name: "type_9_bytes_5_runes", limits: small, req: req(typed("ééééx")), code: inv, frag: "actions[0].type: 9 bytes, limit 8"},
		{name: "type_127", req: req(typed(strings.Repeat("T", 127)))},
		{name: "type_128", req: req(typed(strings.Repeat("T", 128)))},
		{name: "type_129", req: req(typed(strings.Repeat("T", 129))), code: inv, frag: "actions[0].type: 129 bytes, limit 128"},
		{name: "type_empty", req: req(typed("")), code: inv, frag: "actions[0].type: required"},

		{name: "payload_99_of_100", limits: small, req: payload(99, nil)},
		{name: "payload_100_of_100", limits: small, req: payload(100, nil)},
		{name: "payload_101_of_100", limits: small, req: payload(101, nil), code: inv, frag: "actions[0].payload: 101 bytes with meta, limit 100"},
		{name: "payload_meta_99_of_100", limits: small, req: payload(99, meta)},
		{name: "payload_meta_100_of_100", limits: small, req: payload(100, meta)},
		{name: "payload_meta_101_of_100", limits: small, req: payload(101, meta), code: inv, frag: "actions[0].payload: 101 bytes with meta, limit 100"},
		{name: "payload_65535", req: payload(65535, meta)},
		{name: "payload_65536", req: payload(65536, meta)},
		{name: "payload_65537", req: payload(65537, meta), code: inv, frag: "actions[0].payload: 65537 bytes with meta, limit 65536"},

		{name: "actions_4_of_5", limits: small, req: withActions(4)},
		{name: "actions_5_of_5", limits: small, req: withActions(5)},
		{name: "actions_6_of_5", limits: small, req: withActions(6), code: inv, frag: "actions: 6 actions, limit 5"},
		{name: "actions_99", req: withActions(99)},
		{name: "actions_100", req: withActions(100)},
		{name: "actions_101", req: withActions(101), code: inv, frag: "actions: 101 actions, limit 100"},
		{name: "actions_0", req: withActions(0), code: inv, frag: "actions: at least 1 action required"},

		{name: "channel_127", req: channel(strings.Repeat("c", 127))},
		{name: "channel_128", req: channel(strings.Repeat("c", 128))},
		{name: "channel_129", req: channel(strings.Repeat("c", 129)), code: inv, frag: "channel: \"" + strings.Repeat("c", 129) + "\" must match"},
		{name: "channel_empty", req: channel(""), code: inv, frag: `channel: "" must match`},
		{name: "channel_space", req: channel("bad channel"), code: inv, frag: `channel: "bad channel" must match`},
		{name: "channel_unicode", req: channel("bürø"), code: inv, frag: "channel:"},
		{name: "channel_custom_pattern_ok", limits: service.Limits{ChannelPattern: `^[a-z]+-[0-9]+$`}, req: channel("board-42")},
		{name: "channel_custom_pattern", limits: service.Limits{ChannelPattern: `^[a-z]+-[0-9]+$`}, req: channel("board:42"), code: inv, frag: `channel: "board:42" must match ^[a-z]+-[0-9]+$`},

		{name: "client_id_63", req: clientID(strings.Repeat("k", 63))},
		{name: "client_id_64", req: clientID(strings.Repeat("k", 64))},
		{name: "client_id_65", req: clientID(strings.Repeat("k", 65)), code: inv, frag: "client_id: \"" + strings.Repeat("k", 65) + "\" must match"},
		{name: "client_id_format", req: clientID("me/you"), code: inv, frag: `client_id: "me/you" must match`},

		{name: "action_id_63", req: id(strings.Repeat("i", 63))},
		{name: "action_id_64", req: id(strings.Repeat("i", 64))},
		{name: "action_id_65", req: id(strings.Repeat("i", 65)), code: inv, frag: "actions[0].id: \"" + strings.Repeat("i", 65) + "\" must match"},
		{name: "action_id_format", req: id("a b"), code: inv, frag: `actions[0].id: "a b" must match`},

		{name: "server_set_seq", req: req(one(&actionsyncv1.Action{Type: "T", Seq: 7})), code: inv, frag: "actions[0].seq: set by the server"},
		{name: "server_set_client_id", req: req(one(&actionsyncv1.Action{Type: "T", ClientId: "x"})), code: inv, frag: "actions[0].client_id: set by the server"},
		{name: "server_set_time", req: req(one(&actionsyncv1.Action{Type: "T", Time: timestamppb.Now()})), code: inv, frag: "actions[0].time: set by the server"},
		{name: "server_set_channel_other", req: req(one(&actionsyncv1.Action{Type: "T", Channel: "b"})), code: inv, frag: `actions[0].channel: "b" differs`},
		{name: "server_set_channel_same", req: req(one(&actionsyncv1.Action{Type: "T", Channel: "a"}))},

		{name: "payload_nan", req: req(one(withPayload(structpb.NewNumberValue(math.NaN())))), code: inv, frag: "actions[0].payload: number NaN", binaryOnly: true},
		{name: "payload_inf", req: req(one(withPayload(structpb.NewNumberValue(math.Inf(1))))), code: inv, frag: "actions[0].payload: number +Inf", binaryOnly: true},
		{name: "payload_nested_neg_inf", req: req(one(withPayload(structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(math.Inf(-1))}})))), code: inv, frag: "actions[0].payload: number -Inf", binaryOnly: true},
		{name: "payload_no_kind", req: req(one(withPayload(&structpb.Value{}))), code: inv, frag: "actions[0].payload: a value has no kind set", binaryOnly: true},
		{name: "payload_nested_no_kind", req: req(one(withPayload(structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"k": {}}})))), code: inv, frag: "actions[0].payload: a value has no kind set", binaryOnly: true},
		{name: "meta_nan", req: req(one(withMeta(nil, &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.NaN())}}))), code: inv, frag: "actions[0].meta: number NaN", binaryOnly: true},
		{name: "meta_no_kind", req: req(one(withMeta(nil, &structpb.Struct{Fields: map[string]*structpb.Value{"n": {}}}))), code: inv, frag: "actions[0].meta: a value has no kind set", binaryOnly: true},
		{name: "payload_null", req: req(one(withPayload(structpb.NewNullValue())))},
		{name: "payload_depth_100", req: req(one(withPayload(nested(100))))},
		{name: "payload_depth_101", req: req(one(withPayload(nested(101)))), code: inv, frag: "actions[0].payload: nested deeper than 100 levels"},

		{name: "allowed_type", allow: allow, req: onChannel("board:1", "MOVE_TASK")},
		{name: "type_not_allowed", allow: allow, req: onChannel("board:1", "DELETE"), code: denied, frag: `actions[0].type: "DELETE" is not allowed on channel "board:1"`},
		{name: "channel_allows_none", allow: allow, req: onChannel("locked", "ADD_TASK"), code: denied, frag: `actions[0].type: "ADD_TASK" is not allowed on channel "locked"`},
		{name: "channel_allows_all", allow: allow, req: onChannel("open:9", "ANYTHING")},
		{name: "channel_without_rule", allow: allow, req: onChannel("free", "ANYTHING")},

		{name: "read_999_of_1000", limits: service.Limits{MaxReadBytes: 1000, MaxPayloadBytes: 4096}, binaryOnly: true,
			req: func(t *testing.T) *actionsyncv1.DispatchRequest { return sizedRequest(t, 999) }},
		{name: "read_1000_of_1000", limits: service.Limits{MaxReadBytes: 1000, MaxPayloadBytes: 4096}, binaryOnly: true,
			req: func(t *testing.T) *actionsyncv1.DispatchRequest { return sizedRequest(t, 1000) }},
		{name: "read_1001_of_1000", limits: service.Limits{MaxReadBytes: 1000, MaxPayloadBytes: 4096}, binaryOnly: true,
			req:  func(t *testing.T) *actionsyncv1.DispatchRequest { return sizedRequest(t, 1001) },
			code: connect.CodeResourceExhausted, frag: "message size 1001 is larger than configured max 1000"},
		{name: "read_over_limit_any_encoding", limits: service.Limits{MaxReadBytes: 1000, MaxPayloadBytes: 4096},
			req:  func(t *testing.T) *actionsyncv1.DispatchRequest { return sizedRequest(t, 2000) },
			code: connect.CodeResourceExhausted, frag: "larger than configured max 1000"},
	}
}

func TestService_Dispatch_limits(t *testing.T) {
	t.Parallel()
	for _, tc := range dispatchCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var allow *service.AllowList
			if tc.allow != nil {
				allow = mustAllowList(t, tc.allow...)
			}
			e := newEnv(t, envConfig{svc: service.Options{Limits: tc.limits, AllowList: allow}})
			applied := uint64(0)
			for _, p := range protocols {
				if tc.binaryOnly && !p.binary {
					continue
				}
				req := tc.req(t)
				res, err := e.client(p, true).Dispatch(rpcCtx(t), connect.NewRequest(req))
				validChannel := !strings.Contains(tc.frag, "channel:")
				if tc.code == 0 {
					if err != nil {
						t.Fatalf("%s: Dispatch: %v", p.name, err)
					}
					for _, a := range res.Msg.GetAcks() {
						if !a.GetDuplicate() { // ids repeat over the protocols
							applied++
						}
					}
					if got := e.head(t, req.GetChannel()); got != applied {
						t.Fatalf("%s: head %d, want %d", p.name, got, applied)
					}
					continue
				}
				if err == nil {
					t.Fatalf("%s: Dispatch accepted, want %v %q", p.name, tc.code, tc.frag)
				}
				checkErr(t, err, tc.code, tc.frag)
				if validChannel {
					checkAppliedNothing(t, e, req.GetChannel(), 0)
				} else {
					e.checkServes(t)
				}
			}
		})
	}
}

type subscribeCase struct {
	name   string
	limits service.Limits
	req    *actionsyncv1.SubscribeRequest
	code   connect.Code
	frag   string
}

func positions(n int) []*actionsyncv1.Position {
	out := make([]*actionsyncv1.Position, n)
	for i := range out {
		out[i] = &actionsyncv1.Position{Channel: fmt.Sprintf("ch-%d", i)}
	}
	return out
}

func subscribeCases() []subscribeCase {
	three := service.Limits{MaxPositions: 3}
	inv := connect.CodeInvalidArgument
	pos := func(ps ...*actionsyncv1.Position) *actionsyncv1.SubscribeRequest {
		return &actionsyncv1.SubscribeRequest{Positions: ps}
	}
	return []subscribeCase{
		{name: "positions_2_of_3", limits: three, req: pos(positions(2)...)},
		{name: "positions_3_of_3", limits: three, req: pos(positions(3)...)},
		{name: "positions_4_of_3", limits: three, req: pos(positions(4)...), code: inv, frag: "positions: 4 positions, limit 3"},
		{name: "positions_63", req: pos(positions(63)...)},
		{name: "positions_64", req: pos(positions(64)...)},
		{name: "positions_65", req: pos(positions(65)...), code: inv, frag: "positions: 65 positions, limit 64"},
		{name: "positions_0", req: pos(), code: inv, frag: "positions: at least 1 position required"},
		{name: "channel_128", req: pos(&actionsyncv1.Position{Channel: strings.Repeat("c", 128)})},
		{name: "channel_129", req: pos(&actionsyncv1.Position{Channel: "ok"}, &actionsyncv1.Position{Channel: strings.Repeat("c", 129)}), code: inv, frag: "positions[1].channel: \"" + strings.Repeat("c", 129) + "\" must match"},
		{name: "channel_empty", req: pos(&actionsyncv1.Position{}), code: inv, frag: `positions[0].channel: "" must match`},
		{name: "client_id_64", req: &actionsyncv1.SubscribeRequest{ClientId: strings.Repeat("k", 64), ExcludeOwn: true, Positions: positions(1)}},
		{name: "client_id_65", req: &actionsyncv1.SubscribeRequest{ClientId: strings.Repeat("k", 65), Positions: positions(1)}, code: inv, frag: "client_id: \"" + strings.Repeat("k", 65) + "\" must match"},
		{name: "client_id_format", req: &actionsyncv1.SubscribeRequest{ClientId: "a b", Positions: positions(1)}, code: inv, frag: `client_id: "a b" must match`},
		{name: "live_and_after_seq", req: pos(&actionsyncv1.Position{Channel: "a", Live: true, AfterSeq: 3}), code: inv, frag: "positions[0]: live and after_seq 3 exclude each other"},
		{name: "live", req: pos(&actionsyncv1.Position{Channel: "a", Live: true})},
		{name: "duplicate_channel", req: pos(&actionsyncv1.Position{Channel: "a"}, &actionsyncv1.Position{Channel: "b"}, &actionsyncv1.Position{Channel: "a", AfterSeq: 1}), code: inv, frag: `positions[2].channel: "a" repeats positions[0]`},
		{name: "exclude_own_without_client_id", req: &actionsyncv1.SubscribeRequest{ExcludeOwn: true, Positions: positions(1)}, code: inv, frag: "exclude_own: requires client_id"},
	}
}

func TestService_Subscribe_limits(t *testing.T) {
	t.Parallel()
	for _, tc := range subscribeCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envConfig{svc: service.Options{Limits: tc.limits}})
			for _, p := range protocols {
				r := subscribe(t, e.client(p, true), tc.req)
				if tc.code != 0 {
					r.wantEnd(t, tc.code, tc.frag)
					e.checkServes(t)
					continue
				}
				want := map[string][]event{}
				for _, pos := range tc.req.GetPositions() {
					want[pos.GetChannel()] = []event{readyEv(pos.GetChannel(), 0)}
				}
				if diff := cmp.Diff(want, byChannel(r.take(t, len(tc.req.GetPositions()))), eventCmp); diff != "" {
					t.Fatalf("%s (-want +got):\n%s", p.name, diff)
				}
				r.cancel()
			}
		})
	}
}

// On Sync, the limit on positions counts every subscribe of the stream.
func TestService_Sync_positionsLimit(t *testing.T) {
	t.Parallel()
	cfg := envConfig{svc: service.Options{Limits: service.Limits{MaxPositions: 3}}}
	forEachSyncClient(t, cfg, func(t *testing.T, e *testEnv, open func(*testing.T) *syncer) {
		for _, more := range []int{1, 2, 3} { // 2, 3 and 4 channels in total
			s := open(t)
			s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "first"}}})
			s.take(t, 1)
			s.subscribe(t, &actionsyncv1.SubscribeRequest{Positions: positions(more)})
			if 1+more <= 3 {
				if got := len(s.take(t, more)); got != more {
					t.Fatalf("total %d: got %d ready events, want %d", 1+more, got, more)
				}
				s.dispatch(t, one(act("T", "", nil)))
				if ev := s.nextNonBeat(t); ev.Dispatched == nil {
					t.Fatalf("total %d: the stream should go on, got %+v", 1+more, ev)
				}
				continue
			}
			s.wantEnd(t, connect.CodeInvalidArgument, "positions: 3 more on a stream following 1 channels, limit 3")
		}
		e.checkServes(t)
	})
}

func TestService_History_limits(t *testing.T) {
	t.Parallel()
	inv := connect.CodeInvalidArgument
	tests := []struct {
		name   string
		limits service.Limits
		req    *actionsyncv1.HistoryRequest
		want   int
		code   connect.Code
		frag   string
	}{
		{name: "limit_4_of_5", limits: service.Limits{MaxHistoryLimit: 5}, req: &actionsyncv1.HistoryRequest{Channel: "a", Limit: 4}, want: 4},
		{name: "limit_5_of_5", limits: service.Limits{MaxHistoryLimit: 5}, req: &actionsyncv1.HistoryRequest{Channel: "a", Limit: 5}, want: 5},
		{name: "limit_6_of_5", limits: service.Limits{MaxHistoryLimit: 5}, req: &actionsyncv1.HistoryRequest{Channel: "a", Limit: 6}, code: inv, frag: "limit: 6, maximum 5"},
		{name: "limit_0_of_5_is_5", limits: service.Limits{MaxHistoryLimit: 5}, req: &actionsyncv1.HistoryRequest{Channel: "a"}, want: 5},
		{name: "limit_999", req: &actionsyncv1.HistoryRequest{Channel: "a", Limit: 999}, want: 7},
		{name: "limit_1000", req: &actionsyncv1.HistoryRequest{Channel: "a", Limit: 1000}, want: 7},
		{name: "limit_1001", req: &actionsyncv1.HistoryRequest{Channel: "a", Limit: 1001}, code: inv, frag: "limit: 1001, maximum 1000"},
		{name: "channel_129", req: &actionsyncv1.HistoryRequest{Channel: strings.Repeat("c", 129)}, code: inv, frag: "channel: \"" + strings.Repeat("c", 129) + "\" must match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envConfig{svc: service.Options{Limits: tt.limits}})
			e.dispatch(t, "a", "", acts(7, "")...)
			for _, p := range protocols {
				res, err := e.client(p, true).History(rpcCtx(t), connect.NewRequest(tt.req))
				if tt.code != 0 {
					checkErr(t, err, tt.code, tt.frag)
					e.checkServes(t)
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", p.name, err)
				}
				if got := len(res.Msg.GetActions()); got != tt.want || res.Msg.GetHeadSeq() != 7 {
					t.Fatalf("%s: got %d actions and head %d, want %d and 7", p.name, got, res.Msg.GetHeadSeq(), tt.want)
				}
			}
		})
	}
}

// Requests that no generated client would send, POSTed by hand over the Connect protocol.
func TestService_Dispatch_malformed(t *testing.T) {
	t.Parallel()
	valid, err := proto.Marshal(one(act("T", "", nil)))
	if err != nil {
		t.Fatal(err)
	}
	badUTF8 := append([]byte(nil), valid...)
	badUTF8[bytes.IndexByte(badUTF8, 'T')] = 0xff // the type string
	tests := []struct {
		name        string
		contentType string
		body        []byte
		frag        string // "": accepted
	}{
		{name: "proto_valid", contentType: "application/proto", body: valid},
		{name: "json_valid", contentType: "application/json", body: []byte(`{"channel":"a","actions":[{"type":"T","payload":{"k":[1,null]}}]}`)},
		{name: "proto_garbage", contentType: "application/proto", body: []byte{0xff, 0xff, 0xff, 0xff}, frag: "unmarshal"},
		{name: "proto_truncated", contentType: "application/proto", body: valid[:len(valid)-1], frag: "unmarshal"},
		{name: "proto_bad_utf8", contentType: "application/proto", body: badUTF8, frag: "UTF-8"},
		{name: "json_truncated", contentType: "application/json", body: []byte(`{"channel":"a","actions":[`), frag: "unmarshal"},
		{name: "json_not_json", contentType: "application/json", body: []byte(`channel=a`), frag: "unmarshal"},
		{name: "json_empty", contentType: "application/json", body: nil, frag: "empty JSON body"},
		{name: "json_unknown_field", contentType: "application/json", body: []byte(`{"channel":"a","actions":[{"type":"T"}],"chanel":"b"}`), frag: `unknown field "chanel"`},
		{name: "json_unknown_action_field", contentType: "application/json", body: []byte(`{"channel":"a","actions":[{"type":"T","paylaod":1}]}`), frag: `unknown field "paylaod"`},
		{name: "json_wrong_type", contentType: "application/json", body: []byte(`{"channel":"a","actions":{"type":"T"}}`), frag: "unmarshal"},
		{name: "json_charset_valid", contentType: "application/json; charset=utf-8", body: []byte(`{"channel":"a","actions":[{"type":"T"}]}`)},
		{name: "json_charset_unknown_field", contentType: "application/json; charset=utf-8", body: []byte(`{"channel":"a","actions":[{"type":"T"}],"clientId":"x","chanel":"b"}`), frag: `unknown field "chanel"`},
	}
	for _, h2 := range []bool{true, false} {
		t.Run(map[bool]string{true: "h2c", false: "http1"}[h2], func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envConfig{})
			hc := e.h1
			if h2 {
				hc = e.h2c
			}
			applied := uint64(0)
			for _, tt := range tests {
				code, msg, status := rawPost(t, hc, e.srv.URL+"/actionsync.v1.SyncService/Dispatch", tt.contentType, tt.body)
				if tt.frag == "" {
					if status != http.StatusOK {
						t.Fatalf("%s: HTTP %d %s: %s", tt.name, status, code, msg)
					}
					applied++
				} else {
					if status != http.StatusBadRequest || code != "invalid_argument" || !strings.Contains(msg, tt.frag) {
						t.Fatalf("%s: got HTTP %d %s %q, want 400 invalid_argument containing %q", tt.name, status, code, msg, tt.frag)
					}
				}
				if got := e.head(t, "a"); got != applied {
					t.Fatalf("%s: head %d, want %d", tt.name, got, applied)
				}
			}
			e.checkServes(t)
		})
	}
}

// rawPost sends a Connect unary request and returns the error code and message (empty
// for a success) and the HTTP status.
func rawPost(t *testing.T, hc *http.Client, url, contentType string, body []byte) (code, msg string, status int) {
	t.Helper()
	code, msg, status, _ = rawPostBody(t, hc, url, contentType, body)
	return code, msg, status
}

// rawPostBody is rawPost that also returns the body of a success.
func rawPostBody(t *testing.T, hc *http.Client, url, contentType string, body []byte) (code, msg string, status int, raw []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(rpcCtx(t), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Connect-Protocol-Version", "1")
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if res.StatusCode == http.StatusOK {
		return "", "", res.StatusCode, b
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("HTTP %d: error body %q: %v", res.StatusCode, b, err)
	}
	return e.Code, e.Message, res.StatusCode, nil
}

// The read limit applies to the decompressed message: a small gzip body that inflates
// past it is refused.
func TestService_Dispatch_gzipReadLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{svc: service.Options{Limits: service.Limits{MaxReadBytes: 1000, MaxPayloadBytes: 4096}}})
	for _, p := range protocols {
		c := actionsyncv1connect.NewSyncServiceClient(e.h2c, e.srv.URL, append(p.opts, connect.WithSendGzip())...)
		_, err := c.Dispatch(rpcCtx(t), connect.NewRequest(sizedRequest(t, 3000)))
		checkErr(t, err, connect.CodeResourceExhausted, "larger than configured max 1000")
		if _, err := c.Dispatch(rpcCtx(t), connect.NewRequest(sizedRequest(t, 900))); err != nil {
			t.Fatalf("%s: gzip request under the limit: %v", p.name, err)
		}
	}
	checkAppliedNothing(t, e, "a", uint64(len(protocols)))
}

// A gzip bomb (64 MiB of zeros in about 64 KiB) is refused after inflating the read
// limit + 1 byte, not all of it: the refusal says the size could not be determined, and
// takes far less than inflating 64 MiB.
func TestService_Dispatch_gzipBomb(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{svc: service.Options{Limits: service.Limits{MaxReadBytes: 1 << 20}}})
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	if _, err := zw.Write(make([]byte, 64<<20)); err != nil {
		t.Fatal(err)
	}
	_ = zw.Close()
	for _, p := range []string{"connect", "grpc"} {
		req, _ := http.NewRequestWithContext(rpcCtx(t), http.MethodPost, e.srv.URL+"/actionsync.v1.SyncService/Dispatch", nil)
		body := bomb.Bytes()
		switch p {
		case "connect":
			req.Header.Set("Content-Type", "application/proto")
			req.Header.Set("Content-Encoding", "gzip")
		case "grpc":
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Grpc-Encoding", "gzip")
			env := make([]byte, 5, 5+len(body))
			env[0] = 1 // compressed
			binary.BigEndian.PutUint32(env[1:], uint32(len(body)))
			body = append(env, body...)
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		start := time.Now()
		resp, err := e.h2c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		msg := string(out) + resp.Header.Get("Grpc-Message") + resp.Trailer.Get("Grpc-Message")
		if !strings.Contains(msg, "larger than configured max") && !strings.Contains(msg, "unable to determine message size") {
			t.Errorf("%s: got %d %q, want a refusal at the read limit", p, resp.StatusCode, msg)
		}
		if strings.Contains(msg, "67108864") {
			t.Errorf("%s: the server inflated the whole bomb to count it: %q", p, msg)
		}
		t.Logf("%s: refused in %v: %d %q", p, took, resp.StatusCode, msg)
	}
	checkAppliedNothing(t, e, "a", 0)
}

// A History page stops growing past MaxHistoryBytes, and the client reads on from the
// last action it got: every action arrives once, in order.
func TestService_History_bytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{svc: service.Options{Limits: service.Limits{MaxHistoryBytes: 10_000}}})
	payload := strings.Repeat("x", 3_000)
	for range 10 {
		e.dispatch(t, "h", "", act("T", "", payload))
	}
	c := e.fresh(t)
	var after uint64
	pages := 0
	for after < 10 {
		res, err := c.History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: "h", AfterSeq: after, Limit: 100}))
		if err != nil {
			t.Fatal(err)
		}
		got := res.Msg.GetActions()
		if n := len(got); n == 0 || n > 3 {
			t.Fatalf("page after %d: %d actions of about 3 KB, want 1..3 for 10 KB", after, n)
		}
		for _, a := range got {
			if a.GetSeq() != after+1 {
				t.Fatalf("page: seq %d after %d", a.GetSeq(), after)
			}
			after = a.GetSeq()
		}
		pages++
	}
	if pages < 4 {
		t.Errorf("%d pages for 30 KB at 10 KB a page", pages)
	}
	big := strings.Repeat("y", 20_000) // one action larger than a page still comes back
	e.dispatch(t, "h", "", act("T", "", big))
	res, err := c.History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: "h", AfterSeq: 10}))
	if err != nil || len(res.Msg.GetActions()) != 1 {
		t.Errorf("an action larger than a page: %v, %v", res, err)
	}
}

// A broker refusing to create one more channel is RESOURCE_EXHAUSTED, for Dispatch and
// Subscribe alike; History of an unknown channel does not create it.
func TestService_tooManyChannels(t *testing.T) {
	t.Parallel()
	forEachClient(t, envConfig{mem: memory.Options{MaxChannels: 2}}, func(t *testing.T, c clientCase) {
		c.env.dispatch(t, "one", "", acts(1, "")...)
		if h := c.env.head(t, "never"); h != 0 {
			t.Fatalf("History of an unknown channel: head %d", h)
		}
		c.env.dispatch(t, "two", "", acts(1, "")...)
		_, err := c.client.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "three", Actions: acts(1, "")}))
		checkErr(t, err, connect.CodeResourceExhausted, "too many channels")
		r := subscribe(t, c.client, &actionsyncv1.SubscribeRequest{Positions: []*actionsyncv1.Position{{Channel: "one"}, {Channel: "four"}}})
		evs, err := r.end(t)
		checkErr(t, err, connect.CodeResourceExhausted, "too many channels")
		if len(evs) != 0 {
			t.Errorf("events before the refusal: %+v", evs)
		}
		if h := c.env.head(t, "one"); h != 1 {
			t.Errorf("head of one: %d, want 1", h)
		}
	})
}

// TestService_Dispatch_deepJSON: JSON nested far past maxJSONDepth is refused while it
// is parsed, with INVALID_ARGUMENT, and just past it validation names the field.
func TestService_Dispatch_deepJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	for _, depth := range []int{101, 105, 120, 1_000, 9_999, 100_000} {
		body := `{"channel":"deep","actions":[{"type":"T","payload":` + strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth) + `}]}`
		req, err := http.NewRequestWithContext(rpcCtx(t), http.MethodPost, e.srv.URL+"/actionsync.v1.SyncService/Dispatch", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.h1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "exceeded max recursion depth"
		if depth <= 105 {
			want = "actions[0].payload: nested deeper than 100 levels"
		}
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(got), `"code":"invalid_argument"`) || !strings.Contains(string(got), want) {
			t.Errorf("payload nested %d deep: got %d %s, want 400 invalid_argument naming %q", depth, resp.StatusCode, got, want)
		}
	}
}
