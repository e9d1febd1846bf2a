// Package broker defines what the actionsync service needs from a message broker: publish
// actions to a channel and get their seq, follow channels from a position (replay, then
// live, with no gap and no duplicate at the seam), and read history.
//
// Implementations live in sub-packages (memory, ...) and must pass the conformance suite
// in brokertest. This package never imports Connect.
package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Broker orders, stores and fans out actions per channel. All methods are safe for
// concurrent use.
type Broker interface {
	// Publish appends actions to channel, all or nothing, and returns one Ack per action
	// in order. It returns only once every action has its seq and is in history and in
	// the queue of every live subscriber. Actions must be valid (the service validates
	// them) with id and client_id set; Publish sets channel, seq and time and takes
	// ownership of them. An id already in history with the same type, payload and meta is
	// a duplicate (its original seq, nothing delivered); with a different body the whole
	// call fails with ErrConflict. A repeated id within one call counts the same way.
	// opts add conditions checked before anything is applied (SentAfter).
	Publish(ctx context.Context, channel string, actions []*actionsyncv1.Action, opts ...PublishOption) ([]Ack, error)
	// Subscribe creates an empty subscription for one subscriber; channels are added
	// with Subscription.Add. It fails with ErrClosed after Close.
	Subscribe(opts SubscribeOptions) (Subscription, error)
	// History returns up to limit entries with seq > afterSeq, in order, and the
	// channel's head seq (0 for a channel with no actions). It fails with ErrTrimmed if
	// history no longer reaches back to afterSeq+1 and with ErrBeyondHead if afterSeq is
	// after the head.
	History(ctx context.Context, channel string, afterSeq uint64, limit int) ([]*Entry, uint64, error)
	// PutSnapshot stores snap as its channel's snapshot. snap has channel, seq, epoch,
	// version, state and client_id set; the broker sets time and takes ownership. It is
	// accepted only if CheckSnapshot passes against the channel at the time of the call,
	// so of concurrent puts for one channel the newest seq is kept; otherwise it fails
	// with CheckSnapshot's error and changes nothing. From then on, history is never
	// trimmed by age past the snapshot's seq (history after it is bounded by the
	// history size only), and subscriptions that ask for snapshots get it (Position).
	PutSnapshot(ctx context.Context, snap *actionsyncv1.Snapshot) error
	// Snapshot returns the channel's snapshot, or fails with ErrNoSnapshot. The result
	// must not be modified.
	Snapshot(ctx context.Context, channel string) (*actionsyncv1.Snapshot, error)
	// DeleteSnapshot removes the channel's snapshot if seq is 0 or the snapshot's seq,
	// and returns the removed snapshot's seq; it fails with CheckDelete's error.
	DeleteSnapshot(ctx context.Context, channel string, seq uint64) (uint64, error)
	// Close ends every subscription with ErrClosed and refuses further work. Publish
	// calls already under way finish first. Close is idempotent.
	Close() error
}

// FanoutWidther is implemented by subscriptions that know how many subscribers share
// their channels' deliveries (the hub's): a stream writer uses it to size its batching
// to the fan-out its own channels make, not the whole server's.
type FanoutWidther interface {
	// FanoutWidth returns how many subscriptions (this one included) receive the
	// deliveries of the channels this one follows, summed over them.
	FanoutWidth() int
}

// SubscribeOptions configures a subscription.
type SubscribeOptions struct {
	// ClientID is the subscriber's client id (may be empty).
	ClientID string
	// ExcludeOwn skips actions published with ClientID (which must then be non-empty).
	ExcludeOwn bool
}

// Subscription is one subscriber's view of one or more channels: a bounded queue of
// events filled by publishers plus a replay cursor per channel still catching up.
//
// Add and Close may be called from any goroutine; Poll is for one goroutine at a time
// (the subscriber's writer).
type Subscription interface {
	// Add starts following channel from pos. For each channel, events arrive in this
	// order: replayed entries, a ready control, then live entries, in seq order with no
	// gap and no duplicate. A reset control (Seq: the head) comes first instead of a
	// replay when history does not reach back to pos.AfterSeq+1 or pos.AfterSeq is beyond
	// the head; it can also come during a replay that publishers overtook so far that
	// history moved past it. Delivery goes on after the reset's Seq. With
	// Position.Snapshots, a snapshot control comes instead of a reset, or first when the
	// position starts at 0, when the channel holds a snapshot that history continues;
	// delivery then goes on after the snapshot's seq. Adding a channel twice fails with
	// ErrDuplicateChannel.
	Add(ctx context.Context, channel string, pos Position) error
	// Poll appends to buf the events available now, at most maxActions entries (control
	// events do not count), without blocking. When nothing is left and the subscription
	// has ended it returns the reason: ErrSlowConsumer, ErrClosed, or ErrClosed after
	// Close. Events already queued are returned before the error.
	Poll(buf []Event, maxActions int) ([]Event, error)
	// Notify returns a channel that receives a value after new events are queued or the
	// subscription ends. A receive does not promise that Poll returns anything.
	Notify() <-chan struct{}
	// Close stops delivery and releases the subscription. It is idempotent.
	Close()
}

// PublishOption adds a condition to one Publish call.
type PublishOption func(*PublishOptions)

// PublishOptions are the conditions of one Publish call, as its options set them.
type PublishOptions struct {
	// SentAfter, if Set, makes Publish fail with ErrDedupeWindow unless the channel's
	// epoch is SentAfter.Epoch and its history reaches back to SentAfter.Seq+1: a retry
	// whose first attempt may have been applied in a part of history that is gone
	// cannot be deduplicated.
	SentAfter struct {
		Set   bool
		Seq   uint64
		Epoch string
	}
}

// SentAfter is the option of a retried Publish whose actions were first sent when the
// sender had applied the channel up to seq in epoch (see PublishOptions.SentAfter).
func SentAfter(seq uint64, epoch string) PublishOption {
	return func(o *PublishOptions) {
		o.SentAfter.Set, o.SentAfter.Seq, o.SentAfter.Epoch = true, seq, epoch
	}
}

// NewPublishOptions applies opts, for a backend's Publish.
func NewPublishOptions(opts []PublishOption) PublishOptions {
	if len(opts) == 0 {
		return PublishOptions{} // the common case allocates nothing
	}
	o := new(PublishOptions) // escapes into the options' closures
	for _, opt := range opts {
		opt(o)
	}
	return *o
}

// CheckSentAfter is the rule every backend applies for PublishOptions.SentAfter, under
// the channel's lock: trimmed is the highest seq no longer in history, epoch the
// channel's.
func (o PublishOptions) CheckSentAfter(channel string, trimmed uint64, epoch string) error {
	sa := o.SentAfter
	switch {
	case !sa.Set:
		return nil
	case sa.Epoch != epoch:
		return fmt.Errorf("channel %q: first sent in epoch %q, channel in epoch %q: %w", channel, sa.Epoch, epoch, ErrDedupeWindow)
	case sa.Seq < trimmed:
		return fmt.Errorf("channel %q: first sent after seq %d, history starts after seq %d: %w", channel, sa.Seq, trimmed, ErrDedupeWindow)
	}
	return nil
}

// Stats is what a broker holds and has done, for metrics.
type Stats struct {
	// Channels is how many channels the broker holds in memory (for JetStream: in this
	// node's cache).
	Channels int
	// Subscriptions is how many subscriptions are open.
	Subscriptions int
	// Replayed counts the entries handed to subscriptions from history (catching up
	// after a position), since the broker started.
	Replayed uint64
}

// StatsReporter is implemented by brokers that report Stats.
type StatsReporter interface {
	Stats() Stats
}

// ChannelStats is one channel's figures, for operators.
type ChannelStats struct {
	Channel      string
	Subscribers  int    // subscriptions following the channel
	Epoch        string // the channel's epoch
	HeadSeq      uint64 // the last action's seq
	FirstSeq     uint64 // the first seq history holds; 0: none held
	Actions      int    // actions history holds in memory
	HistoryBytes int    // their bytes
	SnapshotSeq  uint64 // the snapshot's seq; 0: none
}

// ChannelLister is implemented by brokers that can list the channels they hold.
type ChannelLister interface {
	// ListChannels returns the stats of the channels held in memory whose name starts
	// with prefix, most subscribers first (then by name), at most limit of them, and how
	// many channels matched.
	ListChannels(prefix string, limit int) (list []ChannelStats, matched int)
}

// TopChannels sorts list (most subscribers first, then by name) and cuts it to limit:
// ListChannels's order, for backends to share.
func TopChannels(list []ChannelStats, limit int) []ChannelStats {
	slices.SortFunc(list, func(a, b ChannelStats) int {
		if a.Subscribers != b.Subscribers {
			return b.Subscribers - a.Subscribers
		}
		return strings.Compare(a.Channel, b.Channel)
	})
	if len(list) > limit {
		list = list[:limit]
	}
	return list
}
