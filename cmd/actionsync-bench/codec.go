package main

import (
	"errors"
	"fmt"
	"math"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Field numbers read by the lite decoder (proto/actionsync/v1/*.proto).
const (
	respActionsField protowire.Number = 1 // SubscribeResponse.actions
	actionSeqField   protowire.Number = 5 // Action.seq
	actionMetaField  protowire.Number = 8 // Action.meta (google.protobuf.Struct)
	structFields     protowire.Number = 1 // Struct.fields: map entries
	mapKeyField      protowire.Number = 1
	mapValueField    protowire.Number = 2
	valueNumberField protowire.Number = 2 // Value.number_value
)

// subCodec is the "proto" codec of one subscriber's client. It decodes a subscriber's
// stream and keeps each action's send time, read from meta.sentAt, in sentAt (index i
// for Actions[i] of the message just received).
//
// With lite set, a SubscribeResponse holding actions is not unmarshalled: only each
// action's seq and meta.sentAt are read with protowire, into Actions that carry only
// Seq, and the payload is skipped. The Actions then live in buffers the codec reuses on
// the next message, so they must not be kept past it. This keeps the client's cost per
// delivery far below the server's, so that one client core can load one server core.
// Every other message goes through proto.Unmarshal.
//
// A subCodec is used by the goroutine that calls Receive on its stream, one message at a
// time; it is not safe for concurrent use.
type subCodec struct {
	lite   bool
	sentAt []int64
	pool   []*actionsyncv1.Action // reused by the lite decoder
}

var _ connect.Codec = (*subCodec)(nil)

func (*subCodec) Name() string { return "proto" }

func (*subCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal: %T is not a proto.Message", m)
	}
	return proto.Marshal(pm)
}

func (c *subCodec) Unmarshal(data []byte, m any) error {
	c.sentAt = c.sentAt[:0]
	if res, ok := m.(*actionsyncv1.SubscribeResponse); ok && c.lite {
		ok, err := c.unmarshalActions(data, res)
		if ok || err != nil {
			return err
		}
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal: %T is not a proto.Message", m)
	}
	if err := proto.Unmarshal(data, pm); err != nil {
		return err
	}
	if res, ok := m.(*actionsyncv1.SubscribeResponse); ok {
		for _, a := range res.GetActions() {
			c.sentAt = append(c.sentAt, int64(a.GetMeta().GetFields()[sentAtKey].GetNumberValue()))
		}
	}
	return nil
}

var errMalformed = errors.New("lite decode: malformed SubscribeResponse")

// unmarshalActions decodes data into res if it holds only actions; it reports false
// (and leaves res alone) for any other message.
func (c *subCodec) unmarshalActions(data []byte, res *actionsyncv1.SubscribeResponse) (bool, error) {
	n := 0
	for b := data; len(b) > 0; {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false, errMalformed
		}
		if num != respActionsField || typ != protowire.BytesType {
			c.sentAt = c.sentAt[:0]
			return false, nil
		}
		b = b[l:]
		v, l := protowire.ConsumeBytes(b)
		if l < 0 {
			return false, errMalformed
		}
		b = b[l:]
		if n == len(c.pool) {
			c.pool = append(c.pool, new(actionsyncv1.Action))
		}
		a := c.pool[n]
		n++
		seq, sentAt, err := liteAction(v)
		if err != nil {
			return false, err
		}
		a.Seq = seq
		c.sentAt = append(c.sentAt, sentAt)
	}
	if n == 0 {
		return false, nil
	}
	res.Actions = c.pool[:n:n]
	return true, nil
}

// liteAction reads seq and meta.sentAt of one encoded Action.
func liteAction(b []byte) (seq uint64, sentAt int64, err error) {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, 0, errMalformed
		}
		b = b[l:]
		switch {
		case num == actionSeqField && typ == protowire.VarintType:
			seq, l = protowire.ConsumeVarint(b)
		case num == actionMetaField && typ == protowire.BytesType:
			var v []byte
			v, l = protowire.ConsumeBytes(b)
			if l >= 0 {
				sentAt = liteSentAt(v)
			}
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return 0, 0, errMalformed
		}
		b = b[l:]
	}
	return seq, sentAt, nil
}

// liteSentAt finds the number under sentAtKey in an encoded Struct; 0 if absent.
func liteSentAt(b []byte) int64 {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0
		}
		b = b[l:]
		if num != structFields || typ != protowire.BytesType {
			if l = protowire.ConsumeFieldValue(num, typ, b); l < 0 {
				return 0
			}
			b = b[l:]
			continue
		}
		entry, l := protowire.ConsumeBytes(b)
		if l < 0 {
			return 0
		}
		b = b[l:]
		var key, value []byte
		for len(entry) > 0 {
			num, typ, l := protowire.ConsumeTag(entry)
			if l < 0 {
				return 0
			}
			entry = entry[l:]
			if typ != protowire.BytesType {
				if l = protowire.ConsumeFieldValue(num, typ, entry); l < 0 {
					return 0
				}
				entry = entry[l:]
				continue
			}
			v, l := protowire.ConsumeBytes(entry)
			if l < 0 {
				return 0
			}
			entry = entry[l:]
			switch num {
			case mapKeyField:
				key = v
			case mapValueField:
				value = v
			}
		}
		if string(key) != sentAtKey {
			continue
		}
		for len(value) > 0 {
			num, typ, l := protowire.ConsumeTag(value)
			if l < 0 {
				return 0
			}
			value = value[l:]
			if num == valueNumberField && typ == protowire.Fixed64Type {
				bits, l := protowire.ConsumeFixed64(value)
				if l < 0 {
					return 0
				}
				return int64(math.Float64frombits(bits))
			}
			if l = protowire.ConsumeFieldValue(num, typ, value); l < 0 {
				return 0
			}
			value = value[l:]
		}
	}
	return 0
}
