package service

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// actionBatch is a streamed response made of actions the broker has already encoded:
// field 1 (actions) of SubscribeResponse and of SyncResponse. The codecs below write it
// by concatenating each entry's shared bytes, so an action is encoded once however many
// subscribers receive it.
type actionBatch struct {
	entries []*broker.Entry
}

// Both response messages must keep actions as field 1 for actionBatch to fit them.
const actionsField protowire.Number = 1

// protoCodec is connect's binary protobuf codec plus actionBatch.
type protoCodec struct{}

var _ connect.Codec = protoCodec{}

// Name implements connect.Codec.
func (protoCodec) Name() string { return "proto" }

// IsBinary reports that the encoding is binary.
func (protoCodec) IsBinary() bool { return true }

// Marshal implements connect.Codec.
func (c protoCodec) Marshal(m any) ([]byte, error) { return c.MarshalAppend(nil, m) }

// MarshalAppend appends m's encoding to dst.
func (protoCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	switch m := m.(type) {
	case *actionBatch:
		for _, e := range m.entries {
			dst = protowire.AppendTag(dst, actionsField, protowire.BytesType)
			dst = protowire.AppendBytes(dst, e.Proto)
		}
		return dst, nil
	case proto.Message:
		return proto.MarshalOptions{}.MarshalAppend(dst, m)
	default:
		return nil, fmt.Errorf("proto codec: cannot marshal %T", m)
	}
}

// MarshalStable implements connect's stable codec (used for GET requests and errors).
func (protoCodec) MarshalStable(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("proto codec: cannot marshal %T", m)
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(pm)
}

// Unmarshal implements connect.Codec.
func (protoCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("proto codec: cannot unmarshal into %T", m)
	}
	switch m := m.(type) {
	case *actionsyncv1.SyncRequest:
		if err := checkOneRequest(data); err != nil {
			return err
		}
		return unmarshalSyncRequest(data, m)
	case *actionsyncv1.DispatchRequest:
		return unmarshalDispatchRequest(data, m)
	}
	return proto.Unmarshal(data, pm)
}

// checkOneRequest refuses a binary SyncRequest that sets its oneof more than once (both
// subscribe and dispatch, or either twice): protobuf would keep the last silently, and a
// client that sent both would never learn that one was ignored. JSON needs no such check:
// protojson refuses a oneof set twice.
func checkOneRequest(data []byte) error {
	seen := 0
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return nil // malformed: proto.Unmarshal says why
		}
		data = data[n:]
		if num == 1 || num == 2 {
			if seen++; seen > 1 {
				return errors.New("request: set exactly one of subscribe and dispatch, once")
			}
		}
		if n = protowire.ConsumeFieldValue(num, typ, data); n < 0 {
			return nil
		}
		data = data[n:]
	}
	return nil
}

// jsonCodec is protobuf JSON plus actionBatch. Unlike connect's default JSON codec it
// refuses unknown fields: a misspelt field must not be silently dropped. Streamed actions
// are encoded through cache, so that JSON subscribers share each action's encoding.
type jsonCodec struct {
	name  string
	cache *broker.JSONCache
}

var _ connect.Codec = jsonCodec{}

// Name implements connect.Codec.
func (c jsonCodec) Name() string { return c.name }

// IsBinary reports that the encoding is text.
func (jsonCodec) IsBinary() bool { return false }

// Marshal implements connect.Codec.
func (c jsonCodec) Marshal(m any) ([]byte, error) { return c.MarshalAppend(nil, m) }

// MarshalAppend appends m's encoding to dst.
func (c jsonCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	switch m := m.(type) {
	case *actionBatch:
		dst = append(dst, `{"actions":[`...)
		for i, e := range m.entries {
			js, err := c.cache.JSON(e)
			if err != nil {
				return nil, fmt.Errorf("json codec: action seq %d: %w", e.Seq(), err)
			}
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, js...)
		}
		return append(dst, "]}"...), nil
	case proto.Message:
		return protojson.MarshalOptions{}.MarshalAppend(dst, m)
	default:
		return nil, fmt.Errorf("json codec: cannot marshal %T", m)
	}
}

// MarshalStable implements connect's stable codec.
func (c jsonCodec) MarshalStable(m any) ([]byte, error) { return c.Marshal(m) }

// Unmarshal implements connect.Codec.
func (jsonCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("json codec: cannot unmarshal into %T", m)
	}
	if len(data) == 0 {
		return errors.New("empty JSON body: send {} for an empty message")
	}
	return protojson.UnmarshalOptions{RecursionLimit: jsonRecursionLimit}.Unmarshal(data, pm)
}

// jsonRecursionLimit bounds the nesting protojson parses, before validation sees a
// payload: deeper JSON is refused while it is parsed (protojson counts one level per
// object or array, and a few for the request around the payload). The margin over
// maxJSONDepth lets validation name the field of a payload just past it. Without it
// protojson parses 10,000 levels: the stress suite's hostile bytes found a 200 KB body
// of nested brackets costing about 80 MB of stack and tree per request.
const jsonRecursionLimit = maxJSONDepth + 16

// codecOptions registers the codecs for every name connect uses; JSON subscribers share
// cache.
func codecOptions(cache *broker.JSONCache) []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(protoCodec{}),
		connect.WithCodec(jsonCodec{name: "json", cache: cache}),
		connect.WithCodec(jsonCodec{name: "json; charset=utf-8", cache: cache}),
	}
}
