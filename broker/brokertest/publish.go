package brokertest

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// testSeqStartsAtOne checks that a channel's seqs start at 1 and go up by one per
// accepted action, single or batched, with one ack per action in order.
//
// design.md allows a distributed backend to leave gaps between seqs; such a backend
// fails this subtest only (the others compare against acks and History, not against
// 1, 2, 3...).
func testSeqStartsAtOne(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "seq"
	var want uint64
	for i := range 5 {
		id := fmt.Sprintf("single-%d", i)
		want++
		checkAck(t, publish(t, b, ch, action("c1", id))[0], id, want, false)
	}
	for _, size := range []int{1, 2, 5} {
		batch := make([]*actionsyncv1.Action, size)
		for i := range batch {
			batch[i] = action("c2", fmt.Sprintf("batch%d-%d", size, i))
		}
		for i, ack := range publish(t, b, ch, batch...) {
			want++
			checkAck(t, ack, batch[i].GetId(), want, false)
		}
	}
	entries, head := history(t, b, ch, 0)
	if head != want {
		t.Errorf("head: got %d, want %d", head, want)
	}
	for i, e := range entries {
		if e.Seq() != uint64(i+1) {
			t.Errorf("history[%d]: got seq %d, want %d", i, e.Seq(), i+1)
		}
	}
	if uint64(len(entries)) != want {
		t.Errorf("history: got %d entries, want %d", len(entries), want)
	}
}

// testChannelsIndependent checks that each channel has its own seqs, its own dedupe
// index and its own subscribers.
func testChannelsIndependent(t *testing.T, s suite) {
	b := s.open(t, Config{})
	channels := []string{"red", "green", "blue"}
	streams := make(map[string]*stream)
	for _, ch := range channels {
		streams[ch] = follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 16)
		expectControl(t, streams[ch], broker.ControlReady, ch, 0)
	}
	last := make(map[string]uint64)
	for round := range 4 {
		for i, ch := range channels[:len(channels)-round%2] { // uneven counts per channel
			// The same id on every channel: dedupe is per channel.
			id := fmt.Sprintf("round-%d", round)
			ack := publish(t, b, ch, action("c", id))[0]
			if ack.Duplicate || ack.Seq <= last[ch] {
				t.Fatalf("channel %d %q round %d: got ack %+v after seq %d, want a new, higher seq", i, ch, round, ack, last[ch])
			}
			last[ch] = ack.Seq
			expectEntry(t, streams[ch], ch, ack.Seq)
		}
	}
	for _, ch := range channels {
		entries, head := history(t, b, ch, 0)
		if head != last[ch] {
			t.Errorf("%s: got head %d, want %d", ch, head, last[ch])
		}
		for _, e := range entries {
			if e.Channel() != ch {
				t.Errorf("%s: history holds %s", ch, describe(broker.Event{Entry: e}))
			}
		}
	}
	if _, head := history(t, b, "unused", 0); head != 0 {
		t.Errorf("unused channel: got head %d, want 0", head)
	}
}

// testPublishSetsFields checks that Publish sets channel, seq and time (overwriting what
// the caller put there) and keeps everything else.
func testPublishSetsFields(t *testing.T, s suite) {
	clock := newFakeClock(time.Date(2031, 2, 3, 4, 5, 6, 7000, time.UTC))
	b := s.open(t, Config{Now: clock.Now})
	const ch = "fields"
	live := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Live: true}, 16)
	expectControl(t, live, broker.ControlReady, ch, 0)

	a := action("client-7", "id-1")
	a.Meta = mustStruct(t, map[string]any{"origin": "brokertest", "n": 3})
	a.Channel, a.Seq, a.Time = "elsewhere", 99, timestamppb.New(time.Unix(1, 0))
	want := proto.Clone(a).(*actionsyncv1.Action)
	want.Channel, want.Seq, want.Time = ch, 1, timestamppb.New(clock.Now())

	checkAck(t, publish(t, b, ch, a)[0], "id-1", 1, false)
	got := expectEntry(t, live, ch, 1)
	if diff := cmp.Diff(want, actionOf(got), protocmp.Transform()); diff != "" {
		t.Errorf("delivered action (-want +got):\n%s", diff)
	}
	entries, _ := history(t, b, ch, 0)
	if len(entries) != 1 {
		t.Fatalf("history: got %d entries, want 1", len(entries))
	}
	if diff := cmp.Diff(want, actionOf(entries[0]), protocmp.Transform()); diff != "" {
		t.Errorf("history action (-want +got):\n%s", diff)
	}
	if got.Seq() != 1 {
		t.Errorf("Entry.Seq: got %d, want 1", got.Seq())
	}

	// The clock is the broker's: a batch shares one time, and the next publish reads the
	// clock again.
	clock.Advance(90 * time.Second)
	batch := []*actionsyncv1.Action{action("client-7", "id-2"), action("client-7", "id-3")}
	for i, ack := range publish(t, b, ch, batch...) {
		e := expectEntry(t, live, ch, ack.Seq)
		if got, want := e.Time(), clock.Now(); !got.Equal(want) {
			t.Errorf("batch action %d: got time %v, want %v", i, got, want)
		}
		if got := e.ID(); got != batch[i].GetId() {
			t.Errorf("batch action %d: got id %q, want %q", i, got, batch[i].GetId())
		}
	}
}

// testEntryEncodings checks that Entry.Proto and Entry.JSON decode to actionOf(Entry), for
// entries read from History, from a replay and from the live stream.
func testEntryEncodings(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "encodings"
	live := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 16)
	expectControl(t, live, broker.ControlReady, ch, 0)

	payloads := []any{
		nil,
		true,
		-12.5,
		"just a string with \"quotes\" and unicode: \u00e9\u4e16",
		[]any{1, "two", map[string]any{"three": []any{}}},
		map[string]any{"stageId": "s-1", "title": "Doing", "tasks": []any{"a", "b"}, "done": false, "nested": map[string]any{"x": nil}},
	}
	var acks []broker.Ack
	for i, p := range payloads {
		v, err := structpb.NewValue(p)
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		a := &actionsyncv1.Action{Type: "UPDATE_STAGE_TITLE", Payload: v, Id: fmt.Sprintf("enc-%d", i), ClientId: "c"}
		if i%2 == 0 {
			a.Meta = mustStruct(t, map[string]any{"i": i, "tag": "even"})
		}
		acks = append(acks, publish(t, b, ch, a)...)
	}
	replay := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 2)
	entries, _ := history(t, b, ch, 0)
	if len(entries) != len(payloads) {
		t.Fatalf("history: got %d entries, want %d", len(entries), len(payloads))
	}
	for i, ack := range acks {
		for _, src := range []struct {
			name string
			e    *broker.Entry
		}{
			{"history", entries[i]},
			{"live", expectEntry(t, live, ch, ack.Seq)},
			{"replay", expectEntry(t, replay, ch, ack.Seq)},
		} {
			checkEncodings(t, fmt.Sprintf("%s entry %d", src.name, i), src.e)
			if diff := cmp.Diff(actionOf(entries[i]), actionOf(src.e), protocmp.Transform()); diff != "" {
				t.Errorf("%s entry %d differs from history (-history +%s):\n%s", src.name, i, src.name, diff)
			}
		}
	}
}

// checkEncodings fails the test unless e.Proto decodes, e's fields are the decoded
// action's, and a JSONCache gives the same action in JSON, the same bytes twice.
func checkEncodings(t *testing.T, what string, e *broker.Entry) {
	t.Helper()
	var fromProto actionsyncv1.Action
	if err := proto.Unmarshal(e.Proto, &fromProto); err != nil {
		t.Errorf("%s: Proto does not decode: %v", what, err)
		return
	}
	if e.Seq() != fromProto.GetSeq() || e.ID() != fromProto.GetId() || e.ClientID() != fromProto.GetClientId() ||
		!e.Time().Equal(fromProto.GetTime().AsTime()) {
		t.Errorf("%s: entry fields seq %d id %q client %q time %v, its encoding says %v", what, e.Seq(), e.ID(), e.ClientID(), e.Time(), &fromProto)
	}
	cache := broker.NewJSONCache(0)
	js, err := cache.JSON(e)
	if err != nil {
		t.Errorf("%s: JSON: %v", what, err)
		return
	}
	var fromJSON actionsyncv1.Action
	if err := protojson.Unmarshal(js, &fromJSON); err != nil {
		t.Errorf("%s: JSON %s does not decode: %v", what, js, err)
	} else if diff := cmp.Diff(&fromProto, &fromJSON, protocmp.Transform()); diff != "" {
		t.Errorf("%s: JSON decodes to a different action (-Proto +JSON):\n%s", what, diff)
	}
	if again, err := cache.JSON(e); err != nil || string(again) != string(js) {
		t.Errorf("%s: second JSON call: got %s, %v, want %s", what, again, err, js)
	}
}

// mustStruct converts m to a structpb.Struct.
func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	st, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatalf("NewStruct(%v): %v", m, err)
	}
	return st
}
