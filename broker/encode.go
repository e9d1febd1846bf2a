package broker

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

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

// EncodeActions stamps each action with channel and ts (clearing its seq) and encodes it
// with EncodeAction into dst[i] (len(dst) must be len(actions)): what a backend's Publish
// does before it takes its channel lock. The caller makes dst, so that a small one can
// stay on its stack.
func EncodeActions(dst [][]byte, channel string, ts *timestamppb.Timestamp, actions []*actionsyncv1.Action) error {
	for i, a := range actions {
		a.Channel, a.Seq, a.Time = channel, 0, ts
		var err error
		if dst[i], err = EncodeAction(a); err != nil {
			return fmt.Errorf("actions[%d]: %w", i, err)
		}
	}
	return nil
}

// AppendSeq appends the seq field to an encoding made by EncodeAction and returns the
// result, which shares encoded's array when it has room (EncodeAction leaves it). To
// splice several seqs into one encoding, pass encoded[:len(encoded):len(encoded)] to
// get a copy each time.
func AppendSeq(encoded []byte, seq uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(encoded, seqField, protowire.VarintType), seq)
}
