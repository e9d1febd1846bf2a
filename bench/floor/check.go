package main

import "slices"

// violations counts the breaches of the promise that every subscriber gets each message
// of its board exactly once, in seq order.
type violations struct {
	Lost       int `json:"lost"`        // acknowledged messages a subscriber never got
	Duplicated int `json:"duplicated"`  // messages a subscriber got again
	Reordered  int `json:"reordered"`   // messages that came after a later seq
	Unexpected int `json:"unexpected"`  // messages never acknowledged, or of another board
	EndedEarly int `json:"ended_early"` // streams that ended before the phase did
}

// check adds what is wrong with got, the seqs one subscriber read in order, given want,
// the seqs its board's acknowledged messages were given, in ascending order.
func (v *violations) check(got, want []uint64) {
	if slices.Equal(got, want) {
		return
	}
	wanted := make(map[uint64]bool, len(want))
	for _, seq := range want {
		wanted[seq] = true
	}
	seen := make(map[uint64]bool, len(got))
	var highest uint64
	for _, seq := range got {
		switch {
		case seen[seq]:
			v.Duplicated++
			continue
		case !wanted[seq]:
			v.Unexpected++
		case seq < highest:
			v.Reordered++
		}
		seen[seq] = true
		highest = max(highest, seq)
	}
	for _, seq := range want {
		if !seen[seq] {
			v.Lost++
		}
	}
}
