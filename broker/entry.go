package broker

import (
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Entry is one accepted action as it is stored and delivered. An Entry is immutable once
// a broker returns it and is shared by every subscriber: it keeps the action's protobuf
// encoding, computed once, and the few fields brokers and subscriptions look at, but not
// the decoded action: a decoded google.protobuf.Value tree costs many times the bytes it
// came from, and history holds thousands of entries per channel. Decode when the action
// itself is needed (History, dedupe of a repeated id).
type Entry struct {
	// Proto is the action in protobuf binary encoding, with channel, seq, client_id and
	// time set. It must not be modified.
	Proto []byte

	seq      uint64
	channel  string
	id       string
	clientID string
	unixNano int64

	// json is the action's protobuf JSON encoding while a JSONCache holds it.
	json atomic.Pointer[[]byte]
	// dropped is set once history no longer holds the entry.
	dropped atomic.Bool
}

// NewEntry returns the entry of a, an accepted action (seq, id, client id and time set),
// whose protobuf encoding is encoded. It keeps encoded and a's small fields, not a.
func NewEntry(a *actionsyncv1.Action, encoded []byte) *Entry {
	return &Entry{Proto: encoded, seq: a.GetSeq(), channel: a.GetChannel(), id: a.GetId(), clientID: a.GetClientId(), unixNano: a.GetTime().AsTime().UnixNano()}
}

// Seq returns the entry's seq.
func (e *Entry) Seq() uint64 { return e.seq }

// Channel returns the channel the action was published on.
func (e *Entry) Channel() string { return e.channel }

// ID returns the action id.
func (e *Entry) ID() string { return e.id }

// ClientID returns the sender's client id.
func (e *Entry) ClientID() string { return e.clientID }

// Time returns when the broker accepted the action.
func (e *Entry) Time() time.Time { return time.Unix(0, e.unixNano) }

// Size returns the bytes the entry holds: its encoding and its fields.
func (e *Entry) Size() int { return len(e.Proto) + len(e.id) + len(e.clientID) + entryOverhead }

// entryOverhead is an Entry's size without its variable parts, for budgets.
const entryOverhead = 96

// MarkDropped records that history no longer holds e (history.Log calls it).
func (e *Entry) MarkDropped() { e.dropped.Store(true) }

// Dropped reports whether history no longer holds e.
func (e *Entry) Dropped() bool { return e.dropped.Load() }

// Decode returns the action, decoded from Proto: a new message the caller owns.
func (e *Entry) Decode() (*actionsyncv1.Action, error) {
	a := &actionsyncv1.Action{}
	if err := proto.Unmarshal(e.Proto, a); err != nil {
		return nil, fmt.Errorf("decode action seq %d: %w", e.seq, err)
	}
	return a, nil
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
