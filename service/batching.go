package service

import (
	"sync/atomic"
	"time"
)

// activityEpoch is the period over which streams that send count as active.
const activityEpoch = 250 * time.Millisecond

// activity estimates how many streams are sending: those that sent in the current or the
// previous epoch. It is a heuristic for batching, cheap enough for every send: a stream
// touches the shared counters at most once per epoch.
type activity struct {
	slots [2]activitySlot // by epoch parity
}

// activitySlot counts the streams that sent in one epoch.
type activitySlot struct {
	epoch atomic.Int64
	count atomic.Int64
}

// sent records that a stream sent at now; last is the stream's own record of the epoch it
// last counted itself in.
func (a *activity) sent(now time.Time, last *int64) {
	e := now.UnixNano() / int64(activityEpoch)
	if *last == e {
		return
	}
	*last = e
	slot := &a.slots[e%2]
	if old := slot.epoch.Load(); old != e && slot.epoch.CompareAndSwap(old, e) {
		slot.count.Store(0) // the slot held an older epoch: start counting afresh
	}
	slot.count.Add(1)
}

// active returns the number of streams that sent in the current or the previous epoch.
func (a *activity) active(now time.Time) int64 {
	e := now.UnixNano() / int64(activityEpoch)
	var n int64
	for _, ep := range []int64{e, e - 1} {
		if slot := &a.slots[ep%2]; slot.epoch.Load() == ep {
			n = max(n, slot.count.Load())
		}
	}
	return n
}

// batchDelay is how long a stream that last sent at lastSend waits, at now, before it
// sends again: the rest of one fan-out round of its channels (streams × perStream, at
// most max), where streams is the server's active streams or, when width > 0, the
// subscribers of the stream's own channels if fewer. A stream on a board of 4 waits
// microseconds, not the round of the server's 4,000 other streams: they are not in its
// fan-out, and waiting for them only delays it. Zero when the stream has been quiet for
// a round or batching is off.
func (s *Service) batchDelay(now, lastSend time.Time, width int) time.Duration {
	per := s.opts.BatchDelayPerStream
	if per <= 0 || lastSend.IsZero() {
		return 0
	}
	streams := s.activity.active(now)
	if width > 0 {
		streams = min(streams, int64(width))
	}
	round := min(s.opts.MaxBatchDelay, time.Duration(streams)*per)
	if wait := round - now.Sub(lastSend); wait > 0 {
		return wait
	}
	return 0
}
