package service_test

import (
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestDispatch_BodyKeptEncoded covers what depends on the body of an action that the
// binary codec keeps encoded (payload and meta, rawbody.go), over every protocol: it
// reaches History as sent, and an id repeated with the same body is a duplicate while one
// with another body is refused, across requests and within one.
func TestDispatch_BodyKeptEncoded(t *testing.T) {
	forEachClient(t, envConfig{}, func(t *testing.T, c clientCase) {
		meta, _ := structpb.NewStruct(map[string]any{"sentAt": 12.5, "by": "me"})
		action := func(id string, payload any) *actionsyncv1.Action {
			a := act("ADD_TASK", id, payload)
			a.Meta = meta
			return a
		}
		body := map[string]any{"title": "née", "tags": []any{"a", 1.0, true, nil}, "nested": map[string]any{"k": map[string]any{}}}
		dispatch := func(actions ...*actionsyncv1.Action) ([]*actionsyncv1.Ack, error) {
			res, err := c.client.Dispatch(rpcCtx(t), connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: "raw", ClientId: "c1", Actions: actions}))
			if err != nil {
				return nil, err
			}
			return res.Msg.GetAcks(), nil
		}
		if acks, err := dispatch(action("x", body)); err != nil || acks[0].GetSeq() != 1 || acks[0].GetDuplicate() {
			t.Fatalf("first dispatch: acks %v, err %v", acks, err)
		}
		if acks, err := dispatch(action("x", body)); err != nil || acks[0].GetSeq() != 1 || !acks[0].GetDuplicate() {
			t.Fatalf("same id, same body: acks %v, err %v; want a duplicate of seq 1", acks, err)
		}
		if _, err := dispatch(action("x", map[string]any{"title": "other"})); connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Fatalf("same id, another payload: %v, want AlreadyExists", err)
		}
		other := action("x", body)
		other.Meta = nil
		if _, err := dispatch(other); connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Fatalf("same id, without its meta: %v, want AlreadyExists", err)
		}
		if acks, err := dispatch(action("y", "s"), action("y", "s")); err != nil || acks[0].GetSeq() != 2 || !acks[1].GetDuplicate() {
			t.Fatalf("an id twice in one request, same body: acks %v, err %v", acks, err)
		}
		if _, err := dispatch(action("z", "s"), action("z", "t")); connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Fatalf("an id twice in one request, other bodies: %v, want AlreadyExists", err)
		}
		h := c.env.history(t, "raw")
		if len(h) != 2 {
			t.Fatalf("history holds %d actions, want 2: %v", len(h), h)
		}
		want, _ := structpb.NewValue(body)
		if !proto.Equal(h[0].GetPayload(), want) || !proto.Equal(h[0].GetMeta(), meta) || h[0].GetClientId() != "c1" || h[0].GetSeq() != 1 {
			t.Errorf("history[0] = %v, want payload %v and meta %v from c1 at seq 1", h[0], want, meta)
		}
		if len(h[0].ProtoReflect().GetUnknown()) != 0 {
			t.Errorf("history[0] has unknown fields %x: the relayed encoding is not a plain Action", h[0].ProtoReflect().GetUnknown())
		}
	})
}
