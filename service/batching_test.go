package service

import (
	"testing"
	"time"
)

func TestActivity_countsStreamsPerEpoch(t *testing.T) {
	t.Parallel()
	var a activity
	t0 := time.Unix(1000, 0) // the start of an epoch
	streams := make([]int64, 3)
	for i := range streams {
		a.sent(t0, &streams[i])
		a.sent(t0.Add(time.Millisecond), &streams[i]) // counted once per epoch
	}
	if got := a.active(t0); got != 3 {
		t.Errorf("active in the epoch: got %d, want 3", got)
	}
	next := t0.Add(activityEpoch)
	if got := a.active(next); got != 3 {
		t.Errorf("active in the next epoch, nobody sent yet: got %d, want 3 (the previous epoch's)", got)
	}
	a.sent(next, &streams[0])
	if got := a.active(next); got != 3 {
		t.Errorf("active in the next epoch, one sent: got %d, want 3", got)
	}
	later := t0.Add(3 * activityEpoch)
	if got := a.active(later); got != 0 {
		t.Errorf("active two quiet epochs later: got %d, want 0", got)
	}
}

func TestService_batchDelay(t *testing.T) {
	t.Parallel()
	now := time.Unix(2000, 0)
	tests := []struct {
		name     string
		per, max time.Duration
		active   int
		width    int           // subscribers of the stream's channels; 0: unknown
		since    time.Duration // since the stream's last send; -1: never sent
		want     time.Duration
	}{
		{"never_sent", 30 * time.Microsecond, 50 * time.Millisecond, 100, 0, -1, 0},
		{"rest_of_round", 30 * time.Microsecond, 50 * time.Millisecond, 100, 0, time.Millisecond, 2 * time.Millisecond},
		{"round_over", 30 * time.Microsecond, 50 * time.Millisecond, 100, 0, 3 * time.Millisecond, 0},
		{"capped", 30 * time.Microsecond, 10 * time.Millisecond, 1000, 0, 0, 10 * time.Millisecond},
		{"off", -1, 50 * time.Millisecond, 1000, 0, 0, 0},
		// A small board among many active streams: its own fan-out sets the round.
		{"small_board", 30 * time.Microsecond, 50 * time.Millisecond, 4000, 4, 0, 120 * time.Microsecond},
		// A channel wider than the active streams: the active ones set it, as before.
		{"wide_channel", 30 * time.Microsecond, 50 * time.Millisecond, 100, 1000, time.Millisecond, 2 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &Service{opts: Options{BatchDelayPerStream: tt.per, MaxBatchDelay: tt.max}}
			for range tt.active {
				var last int64
				s.activity.sent(now, &last)
			}
			var lastSend time.Time
			if tt.since >= 0 {
				lastSend = now.Add(-tt.since)
			}
			if got := s.batchDelay(now, lastSend, tt.width); got != tt.want {
				t.Errorf("batchDelay: got %v, want %v", got, tt.want)
			}
		})
	}
}
