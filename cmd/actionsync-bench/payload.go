package main

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// actionType is the type of every action the benchmark dispatches, as in the peer.
const actionType = "UPDATE_STAGE_TITLE"

// sentAtKey is the meta field holding an action's send time: Unix nanoseconds as a JSON
// number (a float64, so exact to 256 ns, far below what is measured).
const sentAtKey = "sentAt"

// titleBase is the peer's TITLE_BASE, repeated for payloads over 200 bytes.
const titleBase = "Stage title for the relay benchmark - lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. "

// payloadFixed is the JSON size of {"stageId":"stage-000000","stageTitle":""}.
const payloadFixed = len(`{"stageId":"stage-000000","stageTitle":""}`)

// minPayloadBytes is the smallest --payload-bytes: the payload with an empty title.
const minPayloadBytes = payloadFixed

// payloads builds the benchmark's actions: the peer's makePayload, i.e. a JSON object
// {"stageId":"stage-000042","stageTitle":"..."} of exactly size bytes.
type payloads struct {
	title string
}

func newPayloads(size int) payloads {
	n := size - payloadFixed
	return payloads{title: strings.Repeat(titleBase, n/len(titleBase)+1)[:n]}
}

// action returns the i-th action, stamped with sentAt in its meta.
func (p payloads) action(i int64, sentAt time.Time) *actionsyncv1.Action {
	return &actionsyncv1.Action{
		Type: actionType,
		Id:   fmt.Sprintf("a%d", i),
		Payload: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"stageId":    structpb.NewStringValue(fmt.Sprintf("stage-%06d", i%1_000_000)),
			"stageTitle": structpb.NewStringValue(p.title),
		}}),
		Meta: &structpb.Struct{Fields: map[string]*structpb.Value{
			sentAtKey: structpb.NewNumberValue(float64(sentAt.UnixNano())),
		}},
	}
}
