package broker_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/google/go-cmp/cmp"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestAppendSeq checks that an encoding with a spliced seq decodes to the action with
// that seq, for seqs of every varint length, and that the splice does not reallocate.
func TestAppendSeq(t *testing.T) {
	t.Parallel()
	a := &actionsyncv1.Action{Type: "T", Id: "id-1", ClientId: "c", Channel: "ch",
		Payload: structpb.NewStringValue("hello")}
	enc, err := broker.EncodeAction(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{1, 127, 128, 1 << 20, 1<<63 - 1, 1<<64 - 1} {
		got := &actionsyncv1.Action{}
		b := broker.AppendSeq(enc[:len(enc):len(enc)], seq)
		if err := proto.Unmarshal(b, got); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		want := proto.Clone(a).(*actionsyncv1.Action)
		want.Seq = seq
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("seq %d: decoded action differs (-want +got):\n%s", seq, diff)
		}
	}
	if b := broker.AppendSeq(enc, 1<<64-1); &b[0] != &enc[0] {
		t.Error("AppendSeq reallocated: EncodeAction left too little room")
	}
	if _, err := broker.EncodeAction(&actionsyncv1.Action{Seq: 3}); err == nil {
		t.Error("EncodeAction of an action with a seq: got nil error")
	}
}
