package service

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"
)

// Defaults for Quotas.
const (
	DefaultDispatchRate          = 100
	DefaultDispatchBurst         = 200
	DefaultMaxStreamsPerIdentity = 100
)

// Quotas bound what one authenticated identity (a token's sub) may do, so that no
// client can take the server from the others. They apply only when Options.Auth is
// set: anonymous access is for loopback and trusted networks, where clients cannot be
// told apart anyway. The zero value of a field means its default; negative: no limit.
type Quotas struct {
	// DispatchRate is the dispatches per second an identity may sustain (default 100),
	// over all its connections; past it (and its burst) a dispatch fails with
	// RESOURCE_EXHAUSTED and a retry hint, and nothing else slows down.
	DispatchRate float64
	// DispatchBurst is how many dispatches an identity may send at once (default 200).
	DispatchBurst int
	// MaxStreams is the most Subscribe and Sync streams an identity may hold open at
	// once (default 100); one more fails with RESOURCE_EXHAUSTED.
	MaxStreams int
}

func (q Quotas) withDefaults() Quotas {
	if q.DispatchRate == 0 {
		q.DispatchRate = DefaultDispatchRate
	}
	if q.DispatchBurst == 0 {
		q.DispatchBurst = DefaultDispatchBurst
	}
	if q.MaxStreams == 0 {
		q.MaxStreams = DefaultMaxStreamsPerIdentity
	}
	return q
}

// retryAfterHeader is the response header (and gRPC trailer) of a rate-limited dispatch:
// the seconds to wait before sending again, as in HTTP, but with a fraction ("0.125") so
// that sub-second waits are not rounded up to a second.
const retryAfterHeader = "Retry-After"

// quotas tracks every identity's dispatch rate and open streams. Identities unseen for
// quotaIdle are forgotten (swept when the table grows), so the table stays bounded by
// the identities active recently.
type quotas struct {
	q   Quotas
	now func() time.Time

	mu        sync.Mutex
	byID      map[string]*quota
	nextSweep int // sweep when the table reaches this size
}

// quota is one identity's state.
type quota struct {
	dispatch *rate.Limiter
	streams  int
	lastUsed time.Time
}

// quotaIdle is how long an identity with no stream is remembered after its last call.
const quotaIdle = 10 * time.Minute

func newQuotas(q Quotas) *quotas {
	return &quotas{q: q.withDefaults(), now: time.Now, byID: make(map[string]*quota), nextSweep: 1024}
}

// get returns subject's quota, creating it. Callers hold qs.mu.
func (qs *quotas) getLocked(subject string, now time.Time) *quota {
	q := qs.byID[subject]
	if q == nil {
		if len(qs.byID) >= qs.nextSweep {
			for id, old := range qs.byID {
				if old.streams == 0 && now.Sub(old.lastUsed) > quotaIdle {
					delete(qs.byID, id)
				}
			}
			qs.nextSweep = max(1024, 2*len(qs.byID))
		}
		limit := rate.Limit(qs.q.DispatchRate)
		if qs.q.DispatchRate < 0 {
			limit = rate.Inf
		}
		q = &quota{dispatch: rate.NewLimiter(limit, max(qs.q.DispatchBurst, 1))}
		qs.byID[subject] = q
	}
	q.lastUsed = now
	return q
}

// dispatch takes one dispatch from subject's rate, or returns RESOURCE_EXHAUSTED with
// how long to wait (in the message and the Retry-After header).
func (qs *quotas) dispatch(subject string) *connect.Error {
	now := qs.now()
	qs.mu.Lock()
	q := qs.getLocked(subject, now)
	qs.mu.Unlock()
	r := q.dispatch.ReserveN(now, 1)
	delay := r.DelayFrom(now)
	if r.OK() && delay == 0 {
		return nil
	}
	r.CancelAt(now)
	wait := max(delay, time.Millisecond).Round(time.Millisecond)
	err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("dispatch rate of %q above %g per second (burst %d): retry in %v",
		subject, qs.q.DispatchRate, qs.q.DispatchBurst, wait))
	err.Meta().Set(retryAfterHeader, strconv.FormatFloat(wait.Seconds(), 'f', 3, 64))
	return err
}

// openStream counts one more stream of subject, or returns RESOURCE_EXHAUSTED. The
// caller calls the returned release when the stream ends.
func (qs *quotas) openStream(subject string) (release func(), cerr *connect.Error) {
	now := qs.now()
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q := qs.getLocked(subject, now)
	if qs.q.MaxStreams >= 0 && q.streams >= qs.q.MaxStreams {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%q has %d streams open, limit %d: close one first",
			subject, q.streams, qs.q.MaxStreams))
	}
	q.streams++
	return func() {
		qs.mu.Lock()
		defer qs.mu.Unlock()
		q.streams--
		q.lastUsed = qs.now()
	}, nil
}
