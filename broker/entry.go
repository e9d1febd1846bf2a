package broker

import (
	"sync"

	"google.golang.org/protobuf/encoding/protojson"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Entry is one accepted action as it is stored and delivered. An Entry is immutable once
// a broker returns it and is shared by every subscriber: its encodings are computed once.
type Entry struct {
	// Action is the accepted action with channel, seq, client_id and time set. It must
	// not be modified.
	Action *actionsyncv1.Action
	// Proto is Action in protobuf binary encoding. It must not be modified.
	Proto []byte

	jsonOnce sync.Once
	json     []byte
	jsonErr  error
}

// Seq returns the entry's seq.
func (e *Entry) Seq() uint64 { return e.Action.GetSeq() }

// JSON returns Action in protobuf JSON encoding, computed on first use and then shared.
// It must not be modified.
func (e *Entry) JSON() ([]byte, error) {
	e.jsonOnce.Do(func() {
		e.json, e.jsonErr = protojson.Marshal(e.Action)
	})
	return e.json, e.jsonErr
}

// Ack is the broker's answer for one published action.
type Ack struct {
	// ID is the action id.
	ID string
	// Seq is the action's seq: the original one for a duplicate.
	Seq uint64
	// Duplicate is true when the id was already in the channel's history.
	Duplicate bool
}

// Position says where a subscription starts following a channel.
type Position struct {
	// AfterSeq is the last seq the subscriber has applied; delivery starts after it.
	AfterSeq uint64
	// Live starts at the channel's head instead, with no replay and no reset.
	Live bool
	// Epoch is the channel epoch AfterSeq belongs to; if set and different from the
	// channel's, the subscription starts with a reset. Empty: not checked.
	Epoch string
	// Snapshots says the subscriber can rebuild from a snapshot: where a reset would
	// come, or when AfterSeq is 0 (and not Live), a snapshot control comes instead if
	// the channel holds one that history continues.
	Snapshots bool
}

// ControlKind says what a Control event means.
type ControlKind uint8

const (
	// ControlReset says the channel could not be resumed at the requested position
	// (history trimmed, or the position is beyond the head). Delivery continues after Seq.
	ControlReset ControlKind = iota + 1
	// ControlReady says the channel's replay is done; Seq is the last seq replayed (or
	// the start position). What follows is live.
	ControlReady
	// ControlSnapshot carries the channel's snapshot (Control.Snapshot): the
	// subscriber's state for the channel is replaced by it, and delivery continues
	// after Seq, the snapshot's seq.
	ControlSnapshot
)

// Control is a subscription event that is not an action.
type Control struct {
	Kind    ControlKind
	Channel string
	Seq     uint64
	// Epoch identifies the channel's history: seqs are comparable only within one epoch.
	// A backend whose channels can lose their history (memory, on restart) gives each
	// incarnation a new epoch.
	Epoch string
	// Snapshot is the snapshot of a ControlSnapshot (nil otherwise). It must not be
	// modified.
	Snapshot *actionsyncv1.Snapshot
}

// Event is one item of a subscription: exactly one of Entry and Control is set.
type Event struct {
	Entry   *Entry
	Control *Control
}
