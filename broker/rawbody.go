package broker

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// An action may carry its payload and meta still encoded, as unknown fields with their
// own numbers (2 and 8): the service's binary codec leaves them so, because decoding a
// google.protobuf.Value tree only to encode it again was most of a Dispatch's decode cost.
// proto.Marshal writes unknown fields as they came, so EncodeAction relays such a body
// byte for byte; Body decodes it where the values themselves are compared.

// Body returns a's payload and meta, decoding them from a's unknown fields when they are
// kept encoded there. It does not change a.
func Body(a *actionsyncv1.Action) (*structpb.Value, *structpb.Struct, error) {
	raw := a.ProtoReflect().GetUnknown()
	if len(raw) == 0 {
		return a.GetPayload(), a.GetMeta(), nil
	}
	b := &actionsyncv1.Action{}
	if p := a.GetPayload(); p != nil {
		b.Payload = proto.CloneOf(p)
	}
	if m := a.GetMeta(); m != nil {
		b.Meta = proto.CloneOf(m)
	}
	if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(raw, b); err != nil {
		return nil, nil, err
	}
	return b.GetPayload(), b.GetMeta(), nil
}
