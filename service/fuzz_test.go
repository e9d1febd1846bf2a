package service_test

import (
	"math"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/service"
)

// FuzzDispatchRequest POSTs arbitrary bytes as a binary Dispatch request to a real server.
// Whatever the bytes, the answer is never Internal or Unknown (nor a panic), an accepted
// request is in History, and a refused one changes nothing.
//
//	go test -run '^$' -fuzz FuzzDispatchRequest -fuzztime 10s ./service/
func FuzzDispatchRequest(f *testing.F) {
	nan := structpb.NewNumberValue(math.NaN())
	seeds := []*actionsyncv1.DispatchRequest{
		{Channel: "a", Actions: []*actionsyncv1.Action{act("T", "", nil)}},
		{Channel: "board:1", ClientId: "c1", Actions: []*actionsyncv1.Action{act("ADD", "id-1", map[string]any{"k": []any{1.0, "x", nil, true}}), act("MOVE", "id-2", "s")}},
		{Channel: "a", Actions: []*actionsyncv1.Action{act("T", "dup", nil), act("T", "dup", nil)}},
		{Channel: "a", Actions: []*actionsyncv1.Action{act("T", "dup", nil), act("U", "dup", nil)}},
		{Channel: "locked:1", Actions: []*actionsyncv1.Action{act("OK", "", nil)}},
		{Channel: "locked:1", Actions: []*actionsyncv1.Action{act("NO", "", nil)}},
		{Channel: "a", Actions: []*actionsyncv1.Action{{Type: "T", Payload: nan}}},
		{Channel: "a", Actions: []*actionsyncv1.Action{{Type: "T", Payload: &structpb.Value{}}}},
		{Channel: "a", Actions: []*actionsyncv1.Action{{Type: "T", Meta: &structpb.Struct{Fields: map[string]*structpb.Value{"m": nil}}}}},
		{Channel: "a", Actions: []*actionsyncv1.Action{{Type: "T", Seq: 1, ClientId: "x", Time: timestamppb.Now(), Channel: "b"}}},
		{Channel: "a", Actions: []*actionsyncv1.Action{{Type: strings.Repeat("T", 17)}}},
		{Channel: "a", Actions: acts(5, "")},
		{Channel: "a", Actions: []*actionsyncv1.Action{{Type: "T", Payload: structpb.NewStringValue(strings.Repeat("p", 300))}}},
		{Channel: "bad channel", Actions: acts(1, "")},
		{Channel: "a", ClientId: "bad id", Actions: acts(1, "")},
		{Channel: "a", Actions: []*actionsyncv1.Action{{Type: "T", Id: "bad id"}}},
		{Channel: "a"},
		{},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{0x0a, 0x01, 0xff}) // channel with invalid UTF-8
	f.Add(make([]byte, 5000))       // over MaxReadBytes

	allow, err := service.NewAllowList(service.AllowRule{Channel: "locked*", Types: []string{"OK"}})
	if err != nil {
		f.Fatal(err)
	}
	e := newEnv(f, envConfig{svc: service.Options{AllowList: allow, Limits: service.Limits{
		MaxTypeBytes: 16, MaxPayloadBytes: 256, MaxDispatchActions: 4, MaxReadBytes: 4096,
	}},
		// A history no fuzz run fills (about 6,000 executions a second): head reads
		// History from seq 0, which a trimmed channel refuses.
		mem: memory.Options{HistorySize: 1 << 24},
	})
	channelRe := regexp.MustCompile(service.DefaultChannelPattern)
	url := e.srv.URL + "/actionsync.v1.SyncService/Dispatch"

	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(actionsyncv1.DispatchRequest)
		decoded := proto.Unmarshal(data, req) == nil
		validChannel := decoded && channelRe.MatchString(req.GetChannel())
		var before uint64
		if validChannel {
			before = e.head(t, req.GetChannel())
		}

		res, code, msg, status := rawDispatch(t, e.h2c, url, data)
		switch {
		case status >= 500 || code == connect.CodeInternal.String() || code == connect.CodeUnknown.String():
			t.Fatalf("HTTP %d %s %q for %x", status, code, msg, data)
		case status != http.StatusOK:
			if validChannel {
				if after := e.head(t, req.GetChannel()); after != before {
					t.Fatalf("refused (%s %q) but head moved %d -> %d", code, msg, before, after)
				}
			}
			return
		case !validChannel:
			t.Fatalf("accepted a request that does not decode or has a bad channel: %x", data)
		}

		if len(res.GetAcks()) != len(req.GetActions()) {
			t.Fatalf("%d acks for %d actions", len(res.GetAcks()), len(req.GetActions()))
		}
		after := e.head(t, req.GetChannel())
		fresh := uint64(0)
		for i, ack := range res.GetAcks() {
			a := req.GetActions()[i]
			if a.GetId() != "" && ack.GetId() != a.GetId() {
				t.Fatalf("ack %d: id %q, sent %q", i, ack.GetId(), a.GetId())
			}
			h, err := e.client(protocols[0], true).History(rpcCtx(t), connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: req.GetChannel(), AfterSeq: ack.GetSeq() - 1, Limit: 1}))
			if err != nil {
				t.Fatalf("ack %d seq %d: History: %v", i, ack.GetSeq(), err)
			}
			got := h.Msg.GetActions()
			if len(got) != 1 || got[0].GetSeq() != ack.GetSeq() || got[0].GetId() != ack.GetId() || got[0].GetType() != a.GetType() {
				t.Fatalf("ack %d %v: History has %v, want action %q of type %q", i, ack, got, ack.GetId(), a.GetType())
			}
			if ack.GetDuplicate() {
				if ack.GetSeq() > before && !repeatsEarlier(req, i) {
					t.Fatalf("ack %d: duplicate with new seq %d (head was %d)", i, ack.GetSeq(), before)
				}
				continue
			}
			fresh++
			if got[0].GetClientId() != req.GetClientId() {
				t.Fatalf("ack %d: client_id %q, sent %q", i, got[0].GetClientId(), req.GetClientId())
			}
			if ack.GetSeq() <= before || ack.GetSeq() > after {
				t.Fatalf("ack %d: seq %d outside (%d, %d]", i, ack.GetSeq(), before, after)
			}
		}
		if after-before != fresh {
			t.Fatalf("head moved %d -> %d for %d new actions", before, after, fresh)
		}
	})
}

// repeatsEarlier reports whether action i of req has the id of an earlier action of req.
func repeatsEarlier(req *actionsyncv1.DispatchRequest, i int) bool {
	for _, a := range req.GetActions()[:i] {
		if a.GetId() == req.GetActions()[i].GetId() {
			return true
		}
	}
	return false
}

// rawDispatch POSTs body as application/proto and returns the decoded response or the
// error code and message, with the HTTP status.
func rawDispatch(t *testing.T, hc *http.Client, url string, body []byte) (res *actionsyncv1.DispatchResponse, code, msg string, status int) {
	t.Helper()
	code, msg, status, raw := rawPostBody(t, hc, url, "application/proto", body)
	if status != http.StatusOK {
		return nil, code, msg, status
	}
	res = new(actionsyncv1.DispatchResponse)
	if err := proto.Unmarshal(raw, res); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	return res, "", "", status
}
