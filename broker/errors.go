package broker

import "errors"

// Sentinel errors returned by every Broker implementation. The service maps each to one
// Connect code (service/errors.go); wrap them with fmt.Errorf("...: %w", ErrX) to add detail.
var (
	// ErrClosed is returned once the broker has been closed: publishing fails and
	// subscriptions end with it. Clients should reconnect (to another node).
	ErrClosed = errors.New("broker closed")
	// ErrUnavailable is returned while the broker cannot reach its storage (a
	// distributed backend that lost its connection): publishing fails fast and
	// subscriptions end with it. Clients should retry and resume, here or on another node.
	ErrUnavailable = errors.New("broker unavailable")
	// ErrSlowConsumer ends a subscription whose queue overflowed: the subscriber fell
	// behind the live stream. It can resume from the last seq it received.
	ErrSlowConsumer = errors.New("subscriber queue full")
	// ErrConflict is returned by Publish when an action id is already in the channel's
	// history with a different type, payload or meta.
	ErrConflict = errors.New("action id already used with a different body")
	// ErrTrimmed is returned by History when the history no longer reaches back to the
	// requested position.
	ErrTrimmed = errors.New("history trimmed")
	// ErrBeyondHead is returned by History when the requested position is after the
	// channel's head.
	ErrBeyondHead = errors.New("position beyond head")
	// ErrTooManyChannels is returned when creating a channel would pass the broker's
	// channel limit.
	ErrTooManyChannels = errors.New("too many channels")
	// ErrDuplicateChannel is returned by Subscription.Add for a channel the
	// subscription already follows.
	ErrDuplicateChannel = errors.New("channel already subscribed")
	// ErrDedupeWindow is returned by Publish with SentAfter when the history no longer
	// reaches back to where the retried actions were first sent: whether they were
	// applied then cannot be told, so they are not published again.
	ErrDedupeWindow = errors.New("dedupe window passed")
	// ErrNoSnapshot is returned when a channel holds no snapshot.
	ErrNoSnapshot = errors.New("no snapshot")
	// ErrStaleSnapshot is returned by PutSnapshot when the channel already holds a
	// snapshot at the same seq or a newer one: the newest snapshot wins.
	ErrStaleSnapshot = errors.New("snapshot not newer than the one held")
	// ErrEpochMismatch is returned by PutSnapshot when the snapshot's epoch is not the
	// channel's: its seq belongs to a history the channel no longer has.
	ErrEpochMismatch = errors.New("epoch is not the channel's")
	// ErrSnapshotTooLarge is returned by PutSnapshot when the state passes the
	// backend's size limit.
	ErrSnapshotTooLarge = errors.New("snapshot too large")
	// ErrSnapshotChanged is returned by DeleteSnapshot when the channel's snapshot is
	// no longer the one at the seq the caller named.
	ErrSnapshotChanged = errors.New("snapshot changed")
)
