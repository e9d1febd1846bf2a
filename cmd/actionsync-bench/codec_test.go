package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

func TestSubCodec_Unmarshal(t *testing.T) {
	t.Parallel()
	p := newPayloads(200)
	sent := time.Unix(1_790_000_000, 123_456_789)
	batch := &actionsyncv1.SubscribeResponse{}
	for i := range int64(3) {
		a := p.action(i, sent.Add(time.Duration(i)*time.Millisecond))
		a.Seq, a.Channel, a.ClientId, a.Time = uint64(40+i), "bench.x", "pub", timestamppb.New(sent)
		if i == 1 { // meta with another field before sentAt
			a.Meta.Fields["aaa"] = structpb.NewStringValue("x")
		}
		batch.Actions = append(batch.Actions, a)
	}
	batch.Actions = append(batch.Actions, &actionsyncv1.Action{Type: "NO_META", Seq: 43})
	data, err := proto.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	wantSent := []int64{
		int64(float64(sent.UnixNano())),
		int64(float64(sent.Add(time.Millisecond).UnixNano())),
		int64(float64(sent.Add(2 * time.Millisecond).UnixNano())),
		0,
	}
	for _, lite := range []bool{true, false} {
		c := &subCodec{lite: lite}
		for round := range 2 { // the lite decoder reuses its buffers
			var got actionsyncv1.SubscribeResponse
			if err := c.Unmarshal(data, &got); err != nil {
				t.Fatalf("lite=%v: %v", lite, err)
			}
			if len(got.Actions) != 4 {
				t.Fatalf("lite=%v round %d: got %d actions, want 4", lite, round, len(got.Actions))
			}
			for i, a := range got.Actions {
				if a.GetSeq() != uint64(40+i) {
					t.Errorf("lite=%v: action %d: got seq %d, want %d", lite, i, a.GetSeq(), 40+i)
				}
			}
			if diff := cmp.Diff(wantSent, c.sentAt); diff != "" {
				t.Errorf("lite=%v: sentAt (-want +got):\n%s", lite, diff)
			}
			if !lite {
				if diff := cmp.Diff(batch, &got, protocmp.Transform()); diff != "" {
					t.Errorf("full decode (-want +got):\n%s", diff)
				}
			}
		}
	}
}

func TestSubCodec_controlMessages(t *testing.T) {
	t.Parallel()
	for _, msg := range []*actionsyncv1.SubscribeResponse{
		{Ready: &actionsyncv1.Ready{Channel: "c", HeadSeq: 7}},
		{Reset_: &actionsyncv1.Reset{Channel: "c", HeadSeq: 9}},
		{Heartbeat: &actionsyncv1.Heartbeat{}},
	} {
		data, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		c := &subCodec{lite: true}
		var got actionsyncv1.SubscribeResponse
		if err := c.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(msg, &got, protocmp.Transform()); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if len(c.sentAt) != 0 {
			t.Errorf("sentAt: got %v, want none", c.sentAt)
		}
	}
}

func TestSubCodec_malformed(t *testing.T) {
	t.Parallel()
	for name, data := range map[string][]byte{
		"truncated_length": {0x0a, 0x05, 0x01},
		"bad_tag":          {0x0a, 0x02, 0xff, 0xff},
		"truncated_seq":    {0x0a, 0x02, 0x28, 0xff},
	} {
		c := &subCodec{lite: true}
		var got actionsyncv1.SubscribeResponse
		if err := c.Unmarshal(data, &got); err == nil {
			t.Errorf("%s: got nil error, want one", name)
		}
	}
}

func TestPayloads_size(t *testing.T) {
	t.Parallel()
	for _, size := range []int{minPayloadBytes, 200, 1000} {
		a := newPayloads(size).action(42, time.Now())
		b, err := a.GetPayload().MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		// protojson may add spaces; compact it the way JSON.stringify writes it.
		got := len(compactJSON(t, b))
		if got != size {
			t.Errorf("payload-bytes %d: got %d bytes of JSON, want %d", size, got, size)
		}
		if id := a.GetPayload().GetStructValue().GetFields()["stageId"].GetStringValue(); id != "stage-000042" {
			t.Errorf("stageId: got %q, want stage-000042", id)
		}
	}
}

func compactJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
