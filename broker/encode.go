package broker

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// seqField is the field number of actionsyncv1.Action.seq.
const seqField = 5

// EncodeAction returns a's protobuf encoding without its seq (a.Seq must be 0), with
// room left at the end for AppendSeq. A backend encodes an action once, outside its
// channel lock, and appends the seq when it knows it: protobuf accepts fields in any
// order, so the result is a valid Action.
func EncodeAction(a *actionsyncv1.Action) ([]byte, error) {
	if a.GetSeq() != 0 {
		return nil, fmt.Errorf("encode action %q: seq %d already set", a.GetId(), a.GetSeq())
	}
	// Size caches the sizes, so the marshal does not walk the payload a second time.
	size := proto.Size(a) + protowire.SizeTag(seqField) + protowire.SizeVarint(1<<63)
	buf, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(make([]byte, 0, size), a)
	if err != nil {
		return nil, fmt.Errorf("encode action %q: %w", a.GetId(), err)
	}
	return buf, nil
}

// AppendSeq appends the seq field to an encoding made by EncodeAction and returns the
// result, which shares encoded's array when it has room (EncodeAction leaves it). To
// splice several seqs into one encoding, pass encoded[:len(encoded):len(encoded)] to
// get a copy each time.
func AppendSeq(encoded []byte, seq uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(encoded, seqField, protowire.VarintType), seq)
}
