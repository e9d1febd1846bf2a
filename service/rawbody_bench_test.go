package service

import (
	"regexp"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// BenchmarkDecodeDispatch is the server's work on one binary Dispatch request of one
// action between the bytes and the broker: decode, validate, encode for history. The
// action is actionsync-bench's: a 200-byte JSON object payload and a meta.sentAt.
// "decoded" is the path JSON requests take (and binary ones took before rawbody.go):
// the payload decoded into a google.protobuf.Value tree; "kept_encoded" is the binary
// codec's path.
//
//	go test -run '^$' -bench DecodeDispatch -benchmem -count 5 ./service/
func BenchmarkDecodeDispatch(b *testing.B) {
	title := "Stage title for the relay benchmark - lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. "[:158]
	req := &actionsyncv1.DispatchRequest{Channel: "board-17", ClientId: "c1", Actions: []*actionsyncv1.Action{{
		Type: "UPDATE_STAGE_TITLE",
		Id:   "a12345",
		Payload: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"stageId":    structpb.NewStringValue("stage-012345"),
			"stageTitle": structpb.NewStringValue(title),
		}}),
		Meta: &structpb.Struct{Fields: map[string]*structpb.Value{"sentAt": structpb.NewNumberValue(1.7e18)}},
	}}}
	data, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	v := &validator{limits: Limits{}.withDefaults(), channelRe: regexp.MustCompile(DefaultChannelPattern)}
	for _, c := range []struct {
		name      string
		unmarshal func([]byte, *actionsyncv1.DispatchRequest) error
	}{
		{"decoded", func(d []byte, r *actionsyncv1.DispatchRequest) error { return proto.Unmarshal(d, r) }},
		{"kept_encoded", func(d []byte, r *actionsyncv1.DispatchRequest) error { return protoCodec{}.Unmarshal(d, r) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := &actionsyncv1.DispatchRequest{}
				if err := c.unmarshal(data, r); err != nil {
					b.Fatal(err)
				}
				if err := v.dispatch(r); err != nil {
					b.Fatal(err)
				}
				a := r.GetActions()[0]
				out := &actionsyncv1.Action{Type: a.GetType(), Payload: a.GetPayload(), Id: a.GetId(), ClientId: r.GetClientId(), Meta: a.GetMeta()}
				out.ProtoReflect().SetUnknown(a.ProtoReflect().GetUnknown())
				if _, err := broker.EncodeAction(out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
