package presence

import (
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Watcher is one stream's view of the presence of its channels: a bounded queue of
// events, filled under the Tracker's lock and drained by the stream's writer.
//
// Add and Close may be called from any goroutine; Poll is for one goroutine at a time.
type Watcher struct {
	t      *Tracker
	notify chan struct{} // capacity 1
	// pending is set while events (or a resync) wait: Poll checks it without the lock,
	// so a stream with nothing queued does not contend for the Tracker's lock.
	pending atomic.Bool

	// Guarded by t.mu.
	channels []*channel
	queue    []*actionsyncv1.PresenceEvent
	resync   bool // the queue overflowed: the next Poll sends snapshots instead
	closed   bool
}

// Watch returns a Watcher with no channel; add channels with Add.
func (t *Tracker) Watch() *Watcher {
	return &Watcher{t: t, notify: make(chan struct{}, 1)}
}

// Add starts watching channel: the channel's snapshot is queued first, then its changes.
// Adding a channel twice is a no-op.
func (w *Watcher) Add(channel string) {
	t := w.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if w.closed || t.closed {
		return
	}
	ch := t.channelLocked(channel)
	if _, ok := ch.watchers[w]; ok {
		return
	}
	ch.watchers[w] = struct{}{}
	w.channels = append(w.channels, ch)
	w.queueLocked(snapshotEvent(ch))
}

// snapshotEvent is the event that replaces a watcher's view of ch.
func snapshotEvent(ch *channel) *actionsyncv1.PresenceEvent {
	return &actionsyncv1.PresenceEvent{Channel: ch.name, Snapshot: &actionsyncv1.PresenceSnapshot{Members: ch.listedLocked()}, Count: uint32(len(ch.members))}
}

// queueLocked appends ev to the queue, or, when the queue is full, drops it and every
// queued event in favour of fresh snapshots at the next Poll: presence is state, so a
// snapshot stands for all the events it replaces, and a slow reader costs one bounded
// queue and never the stream or anyone else.
func (w *Watcher) queueLocked(ev *actionsyncv1.PresenceEvent) {
	if w.resync {
		return
	}
	if len(w.queue) >= w.t.opts.QueueSize {
		clear(w.queue)
		w.queue, w.resync = w.queue[:0], true
	} else {
		w.queue = append(w.queue, ev)
	}
	w.pending.Store(true)
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Poll appends the queued events to buf and returns it, without blocking. The events are
// shared and must not be modified.
func (w *Watcher) Poll(buf []*actionsyncv1.PresenceEvent) []*actionsyncv1.PresenceEvent {
	if !w.pending.Load() {
		return buf
	}
	t := w.t
	t.mu.Lock()
	defer t.mu.Unlock()
	w.pending.Store(false)
	if w.closed {
		return buf
	}
	if w.resync {
		w.resync = false
		for _, ch := range w.channels {
			buf = append(buf, snapshotEvent(ch))
		}
		return buf
	}
	buf = append(buf, w.queue...)
	clear(w.queue)
	w.queue = w.queue[:0]
	return buf
}

// Notify returns a channel that receives a value after events are queued. A receive
// does not promise that Poll returns anything.
func (w *Watcher) Notify() <-chan struct{} { return w.notify }

// Close stops watching. It is idempotent.
func (w *Watcher) Close() {
	t := w.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	for _, ch := range w.channels {
		delete(ch.watchers, w)
		t.dropIfEmptyLocked(ch)
	}
	w.channels, w.queue = nil, nil
}

// protoEqual compares two infos.
func protoEqual(a, b proto.Message) bool { return proto.Equal(a, b) }
