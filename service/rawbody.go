package service

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// The binary codec decodes a DispatchRequest (alone or inside a SyncRequest) like
// proto.Unmarshal, except each action's payload and meta: those stay encoded, as the
// action's unknown fields with their own numbers (see broker.Body). The server never
// reads a payload, and a google.protobuf.Value tree cost more to decode (a map and a
// message per value) and then to encode again than the rest of a Dispatch's decode.
// checkRawBody validates them on the wire as jsonValue does decoded values.

// Field numbers read here; rawbody_test.go checks them against the descriptors.
const (
	syncDispatchField    protowire.Number = 2 // SyncRequest.dispatch
	dispatchActionsField protowire.Number = 2 // DispatchRequest.actions
	actionPayloadField   protowire.Number = 2 // Action.payload
	actionMetaField      protowire.Number = 8 // Action.meta
	valueNullField       protowire.Number = 1 // Value.null_value
	valueNumberField     protowire.Number = 2 // Value.number_value
	valueStringField     protowire.Number = 3 // Value.string_value
	valueBoolField       protowire.Number = 4 // Value.bool_value
	valueStructField     protowire.Number = 5 // Value.struct_value
	valueListField       protowire.Number = 6 // Value.list_value
	structFieldsField    protowire.Number = 1 // Struct.fields
	mapKeyField          protowire.Number = 1 // a map entry's key
	mapValueField        protowire.Number = 2 // a map entry's value
	listValuesField      protowire.Number = 1 // ListValue.values
)

// errMalformed is what proto.Unmarshal would say of bytes that are not protobuf.
var errMalformed = errors.New("malformed protobuf encoding")

// nextField splits the first field off b: its number, wire type, the whole field (tag
// included) and its value (for a length-delimited field, without the length).
func nextField(b []byte) (num protowire.Number, typ protowire.Type, field, value []byte, err error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, nil, nil, errMalformed
	}
	m := protowire.ConsumeFieldValue(num, typ, b[n:])
	if m < 0 {
		return 0, 0, nil, nil, errMalformed
	}
	value = b[n : n+m]
	if typ == protowire.BytesType {
		value, _ = protowire.ConsumeBytes(value)
	}
	return num, typ, b[:n+m], value, nil
}

// unmarshalSyncRequest decodes a binary SyncRequest into req (reset first).
func unmarshalSyncRequest(data []byte, req *actionsyncv1.SyncRequest) error {
	var rest []byte
	var dispatch *actionsyncv1.DispatchRequest
	for b := data; len(b) > 0; {
		num, typ, field, value, err := nextField(b)
		if err != nil {
			return err
		}
		b = b[len(field):]
		if num == syncDispatchField && typ == protowire.BytesType {
			// checkOneRequest has made sure that it comes once.
			dispatch = &actionsyncv1.DispatchRequest{}
			if err := unmarshalDispatchRequest(value, dispatch); err != nil {
				return err
			}
			continue
		}
		rest = append(rest, field...)
	}
	if err := proto.Unmarshal(rest, req); err != nil {
		return err
	}
	if dispatch != nil {
		req.Request = &actionsyncv1.SyncRequest_Dispatch{Dispatch: dispatch}
	}
	return nil
}

// unmarshalDispatchRequest decodes a binary DispatchRequest into req (reset first),
// leaving each action's payload and meta encoded.
func unmarshalDispatchRequest(data []byte, req *actionsyncv1.DispatchRequest) error {
	var rest []byte
	var actions []*actionsyncv1.Action
	for b := data; len(b) > 0; {
		num, typ, field, value, err := nextField(b)
		if err != nil {
			return err
		}
		b = b[len(field):]
		if num == dispatchActionsField && typ == protowire.BytesType {
			a, err := unmarshalAction(value)
			if err != nil {
				return err
			}
			actions = append(actions, a)
			continue
		}
		rest = append(rest, field...)
	}
	if err := proto.Unmarshal(rest, req); err != nil {
		return err
	}
	req.Actions = actions
	return nil
}

// unmarshalAction decodes an action but its payload and meta, which it keeps, copied,
// as the action's only unknown fields. Other unknown fields are dropped: the server
// relays only the fields it knows.
func unmarshalAction(data []byte) (*actionsyncv1.Action, error) {
	var rest, body []byte
	for b := data; len(b) > 0; {
		num, typ, field, _, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = b[len(field):]
		if (num == actionPayloadField || num == actionMetaField) && typ == protowire.BytesType {
			body = append(body, field...)
			continue
		}
		rest = append(rest, field...)
	}
	a := &actionsyncv1.Action{}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(rest, a); err != nil {
		return nil, err
	}
	if len(body) > 0 {
		a.ProtoReflect().SetUnknown(body)
	}
	return a, nil
}

// checkRawBody checks the payload and meta kept encoded in an action's unknown fields
// (unmarshalAction): it returns their encoded size and, if they cannot be relayed as
// JSON, which one and why.
func checkRawBody(raw []byte) (size int, field, reason string) {
	for len(raw) > 0 {
		num, _, f, value, err := nextField(raw)
		if err != nil {
			return size, "payload", errMalformed.Error()
		}
		raw = raw[len(f):]
		size += len(value)
		switch num {
		case actionPayloadField:
			if why := rawValue(value, 0); why != "" {
				return size, "payload", why
			}
		case actionMetaField:
			if why := rawStruct(value, 0); why != "" {
				return size, "meta", why
			}
		}
	}
	return size, "", ""
}

// notValue is the reason given for bytes that are not a google.protobuf.Value.
const notValue = "not a google.protobuf.Value encoding"

// rawValue is jsonValue for an encoded google.protobuf.Value. It is stricter than
// proto.Unmarshal in one way: a field Value, Struct or ListValue does not define is
// refused rather than kept as unknown (they are well-known types that never grow).
func rawValue(b []byte, depth int) string {
	if depth > maxJSONDepth {
		return fmt.Sprintf("nested deeper than %d levels", maxJSONDepth)
	}
	kind := false
	for len(b) > 0 {
		num, typ, f, value, err := nextField(b)
		if err != nil {
			return notValue
		}
		b = b[len(f):]
		kind = true
		switch {
		case (num == valueNullField || num == valueBoolField) && typ == protowire.VarintType:
		case num == valueNumberField && typ == protowire.Fixed64Type:
			bits, _ := protowire.ConsumeFixed64(value)
			if x := math.Float64frombits(bits); math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Sprintf("number %v is not valid JSON", x)
			}
		case num == valueStringField && typ == protowire.BytesType:
			if !utf8.Valid(value) {
				return "a string is not valid UTF-8"
			}
		case num == valueStructField && typ == protowire.BytesType:
			if why := rawStruct(value, depth); why != "" {
				return why
			}
		case num == valueListField && typ == protowire.BytesType:
			for l := value; len(l) > 0; {
				num, typ, f, elem, err := nextField(l)
				if err != nil || num != listValuesField || typ != protowire.BytesType {
					return notValue
				}
				l = l[len(f):]
				if why := rawValue(elem, depth+1); why != "" {
					return why
				}
			}
		default:
			return notValue
		}
	}
	if !kind {
		return "a value has no kind set (null must be null_value)"
	}
	return ""
}

// rawStruct checks an encoded google.protobuf.Struct whose fields are at depth+1.
func rawStruct(b []byte, depth int) string {
	for len(b) > 0 {
		num, typ, f, entry, err := nextField(b)
		if err != nil || num != structFieldsField || typ != protowire.BytesType {
			return notValue
		}
		b = b[len(f):]
		hasValue := false
		for len(entry) > 0 {
			num, typ, f, v, err := nextField(entry)
			if err != nil || typ != protowire.BytesType {
				return notValue
			}
			entry = entry[len(f):]
			switch num {
			case mapKeyField:
				if !utf8.Valid(v) {
					return "a key is not valid UTF-8"
				}
			case mapValueField:
				// Repeated values merge: each must be valid on its own.
				hasValue = true
				if why := rawValue(v, depth+1); why != "" {
					return why
				}
			default:
				return notValue
			}
		}
		if !hasValue { // proto.Unmarshal makes an empty Value of a missing one
			if why := rawValue(nil, depth+1); why != "" {
				return why
			}
		}
	}
	return ""
}
