package history

import "github.com/actionsync/actionsync/broker"

// ring is a channel's ring buffer of entries with contiguous seqs. It grows on demand
// up to its capacity, then overwrites the oldest entry. Not safe for concurrent use: the
// channel's mutex guards it.
type ring struct {
	buf   []*broker.Entry // len(buf) <= max; ring once full
	start int             // index of the oldest entry
	n     int             // entries held
	max   int
}

func newRing(max int) ring { return ring{max: max} }

// len returns the number of entries held.
func (h *ring) len() int { return h.n }

// at returns the i-th oldest entry (0 <= i < len).
func (h *ring) at(i int) *broker.Entry {
	j := h.start + i
	if j >= len(h.buf) {
		j -= len(h.buf)
	}
	return h.buf[j]
}

// oldest returns the oldest entry, or nil.
func (h *ring) oldest() *broker.Entry {
	if h.n == 0 {
		return nil
	}
	return h.buf[h.start]
}

// push appends e and returns the entry it evicted, if any.
func (h *ring) push(e *broker.Entry) (evicted *broker.Entry) {
	if h.n == len(h.buf) {
		if len(h.buf) < h.max {
			if h.start != 0 { // wrapped at a smaller size: straighten before growing
				nb := make([]*broker.Entry, h.n, h.n+1)
				for i := range h.n {
					nb[i] = h.at(i)
				}
				h.buf, h.start = nb, 0
			}
			h.buf = append(h.buf, e)
			h.n++
			return nil
		}
		evicted = h.buf[h.start]
		h.buf[h.start] = e
		h.start = (h.start + 1) % len(h.buf)
		return evicted
	}
	h.buf[(h.start+h.n)%len(h.buf)] = e
	h.n++
	return nil
}

// popOldest removes and returns the oldest entry, or nil.
func (h *ring) popOldest() *broker.Entry {
	if h.n == 0 {
		return nil
	}
	e := h.buf[h.start]
	h.buf[h.start] = nil
	h.start = (h.start + 1) % len(h.buf)
	h.n--
	if h.n == 0 {
		h.start = 0
		h.buf = h.buf[:0]
	}
	return e
}
