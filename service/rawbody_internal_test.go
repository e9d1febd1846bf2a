package service

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestRawBody_FieldNumbers checks rawbody.go's field numbers and wire types against the
// descriptors they are copied from.
func TestRawBody_FieldNumbers(t *testing.T) {
	field := func(m proto.Message, name string) protoreflect.FieldDescriptor {
		f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
		if f == nil {
			t.Fatalf("%s has no field %s", m.ProtoReflect().Descriptor().FullName(), name)
		}
		return f
	}
	entry := field(&structpb.Struct{}, "fields").MapValue().ContainingMessage()
	for _, c := range []struct {
		f    protoreflect.FieldDescriptor
		num  protowire.Number
		kind protoreflect.Kind
	}{
		{field(&actionsyncv1.SyncRequest{}, "dispatch"), syncDispatchField, protoreflect.MessageKind},
		{field(&actionsyncv1.DispatchRequest{}, "actions"), dispatchActionsField, protoreflect.MessageKind},
		{field(&actionsyncv1.Action{}, "payload"), actionPayloadField, protoreflect.MessageKind},
		{field(&actionsyncv1.Action{}, "meta"), actionMetaField, protoreflect.MessageKind},
		{field(&structpb.Value{}, "null_value"), valueNullField, protoreflect.EnumKind},
		{field(&structpb.Value{}, "number_value"), valueNumberField, protoreflect.DoubleKind},
		{field(&structpb.Value{}, "string_value"), valueStringField, protoreflect.StringKind},
		{field(&structpb.Value{}, "bool_value"), valueBoolField, protoreflect.BoolKind},
		{field(&structpb.Value{}, "struct_value"), valueStructField, protoreflect.MessageKind},
		{field(&structpb.Value{}, "list_value"), valueListField, protoreflect.MessageKind},
		{field(&structpb.Struct{}, "fields"), structFieldsField, protoreflect.MessageKind},
		{entry.Fields().ByName("key"), mapKeyField, protoreflect.StringKind},
		{entry.Fields().ByName("value"), mapValueField, protoreflect.MessageKind},
		{field(&structpb.ListValue{}, "values"), listValuesField, protoreflect.MessageKind},
	} {
		if c.f.Number() != c.num || c.f.Kind() != c.kind {
			t.Errorf("%s: number %d kind %v, rawbody.go has %d %v", c.f.FullName(), c.f.Number(), c.f.Kind(), c.num, c.kind)
		}
	}
}

// rawValueSeeds are encodings rawValue must judge as the decoded path does.
func rawValueSeeds() [][]byte {
	deep := structpb.NewNullValue()
	for range maxJSONDepth {
		deep = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{deep}})
	}
	tooDeep := structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{deep}})
	values := []*structpb.Value{
		structpb.NewNullValue(), structpb.NewBoolValue(true), structpb.NewNumberValue(1.5),
		structpb.NewNumberValue(math.NaN()), structpb.NewNumberValue(math.Inf(-1)),
		structpb.NewStringValue("héllo"), structpb.NewStringValue(""), {},
		structpb.NewStructValue(&structpb.Struct{}),
		structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewNumberValue(2), "b": {}}}),
		structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.NaN())}}),
		structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("x"), structpb.NewNullValue()}}),
		structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{{}}}),
		deep, tooDeep,
	}
	var out [][]byte
	for _, v := range values {
		b, err := proto.Marshal(v)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	// Not canonical, or not Values at all.
	str := func(s string) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, valueStringField, protowire.BytesType), []byte(s))
	}
	entry := func(key, value []byte) []byte {
		e := protowire.AppendBytes(protowire.AppendTag(nil, mapKeyField, protowire.BytesType), key)
		if value != nil {
			e = protowire.AppendBytes(protowire.AppendTag(e, mapValueField, protowire.BytesType), value)
		}
		return protowire.AppendBytes(protowire.AppendTag(nil, valueStructField, protowire.BytesType),
			protowire.AppendBytes(protowire.AppendTag(nil, structFieldsField, protowire.BytesType), e))
	}
	out = append(out,
		str("\xff"),                     // invalid UTF-8
		append(str("a"), str("b")...),   // the oneof set twice
		entry([]byte("k"), nil),         // a map entry without its value
		entry([]byte("\xfe"), str("v")), // a key that is not UTF-8
		entry([]byte("k"), str("v")),    // a canonical entry
		protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 1),                // unknown field
		protowire.AppendVarint(protowire.AppendTag(nil, valueStringField, protowire.VarintType), 1), // wrong wire type
		[]byte{0x1a, 0x05, 'a'},                       // truncated
		[]byte(strings.Repeat("\x32\x02\x0a\x00", 3)), // lists of an empty Value
	)
	return out
}

// FuzzRawValue checks rawValue against the decoded path (proto.Unmarshal, then jsonValue,
// then protojson, which is what a JSON subscriber's stream needs): whatever rawValue
// accepts decodes, passes jsonValue and encodes as JSON; and whatever proto.Marshal
// makes of a value jsonValue accepts (unknown fields left out), rawValue accepts too.
//
//	go test -run '^$' -fuzz FuzzRawValue -fuzztime 30s ./service/
func FuzzRawValue(f *testing.F) {
	for _, s := range rawValueSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		why := rawValue(b, 0)
		v := &structpb.Value{}
		err := proto.Unmarshal(b, v)
		if why == "" {
			if err != nil {
				t.Fatalf("rawValue accepts %x, proto.Unmarshal: %v", b, err)
			}
			if jwhy := jsonValue(v, 0); jwhy != "" {
				t.Fatalf("rawValue accepts %x, jsonValue: %s", b, jwhy)
			}
			if _, err := protojson.Marshal(v); err != nil {
				t.Fatalf("rawValue accepts %x, protojson: %v", b, err)
			}
		}
		// rawValue refuses unknown fields in a Value on purpose: compare without them.
		v = &structpb.Value{}
		if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, v); err != nil || jsonValue(v, 0) != "" {
			return
		}
		canonical, err := proto.Marshal(v)
		if err != nil {
			t.Fatalf("proto.Marshal: %v", err)
		}
		if why := rawValue(canonical, 0); why != "" {
			t.Fatalf("jsonValue accepts %v, rawValue of its encoding %x: %s", v, canonical, why)
		}
	})
}

// TestRawValue_Reasons checks the reasons given, which reach clients.
func TestRawValue_Reasons(t *testing.T) {
	enc := func(v *structpb.Value) []byte { b, _ := proto.Marshal(v); return b }
	for _, c := range []struct {
		b    []byte
		want string
	}{
		{enc(structpb.NewNumberValue(math.NaN())), "number NaN is not valid JSON"},
		{enc(&structpb.Value{}), "a value has no kind set"},
		{rawValueSeeds()[14], "nested deeper than 100 levels"},
		{[]byte{0x1a, 0x01, 0xff}, "a string is not valid UTF-8"},
		{[]byte{0x48, 0x01}, notValue},
		{[]byte{0x1a, 0x05, 'a'}, notValue},
	} {
		if got := rawValue(c.b, 0); !strings.HasPrefix(got, c.want) {
			t.Errorf("rawValue(%x) = %q, want %q", c.b, got, c.want)
		}
	}
}
