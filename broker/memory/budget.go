package memory

import (
	"sync"
	"sync/atomic"

	"github.com/actionsync/actionsync/broker"
)

// budget bounds the bytes of history across every channel. Entries are queued in publish
// order; when a publish takes the total over max, the oldest entries of all channels go
// first, whichever channel they are in, until the total is under max again. Clients
// behind them get the reset or snapshot path, as with any trimmed history.
type budget struct {
	max   int64
	total atomic.Int64 // Size of the entries history holds
	live  atomic.Int64 // entries history holds

	mu    sync.Mutex
	queue []budgetRec // publish order; dropped entries are skipped (and compacted away)
	start int
}

// budgetRec is one entry in the budget's queue.
type budgetRec struct {
	ch *channel
	e  *broker.Entry
}

// add counts e, just appended to ch's history. Callers hold ch.mu.
func (bu *budget) add(ch *channel, e *broker.Entry) {
	bu.total.Add(int64(e.Size()))
	bu.live.Add(1)
	bu.mu.Lock()
	bu.queue = append(bu.queue, budgetRec{ch: ch, e: e})
	// Entries dropped by their channel (count, age, its byte cap) stay queued until
	// popped, and a queued entry keeps its bytes in memory: compact once they are more
	// than a quarter of the live ones (and 1,024), so that what they hold stays a small
	// part of history's own (with "outnumber the live ones", a full history kept up to
	// as much again: the stress suite's churn saw +22 MiB over 60,000 live actions).
	// Each compaction scans the queue and removes at least a fifth of it: a few steps
	// per add.
	live := bu.live.Load()
	if dropped := int64(len(bu.queue)-bu.start) - live; dropped > 1024 && dropped > live/4 {
		kept := bu.queue[:0]
		for _, r := range bu.queue[bu.start:] {
			if !r.e.Dropped() {
				kept = append(kept, r)
			}
		}
		clear(bu.queue[len(kept):])
		bu.queue, bu.start = kept, 0
	}
	bu.mu.Unlock()
}

// dropped uncounts e, dropped from history. Callers hold its channel's mu.
func (bu *budget) dropped(e *broker.Entry) {
	bu.total.Add(-int64(e.Size()))
	bu.live.Add(-1)
}

// oldest pops the oldest entry history still holds, if any.
func (bu *budget) oldest() (budgetRec, bool) {
	bu.mu.Lock()
	defer bu.mu.Unlock()
	for bu.start < len(bu.queue) {
		r := bu.queue[bu.start]
		bu.queue[bu.start] = budgetRec{}
		bu.start++
		if !r.e.Dropped() {
			return r, true
		}
	}
	bu.queue, bu.start = bu.queue[:0], 0
	return budgetRec{}, false
}

// enforce drops the oldest history of any channel while the total is over max. It takes
// one channel's lock at a time: callers hold none.
func (b *Broker) enforceBudget() {
	bu := &b.budget
	for bu.total.Load() > bu.max {
		r, ok := bu.oldest()
		if !ok {
			return
		}
		r.ch.mu.Lock()
		if !r.e.Dropped() {
			r.ch.log.TrimThrough(r.e.Seq())
		}
		r.ch.mu.Unlock()
	}
}
