package brokertest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// epochOf returns channel's epoch, as a live subscription's ready reports it.
func epochOf(t *testing.T, b broker.Broker, channel string) string {
	t.Helper()
	st := follow(t, b, broker.SubscribeOptions{}, channel, broker.Position{Live: true}, 1)
	ev := mustNext(t, st)
	if ev.Control == nil || ev.Control.Kind != broker.ControlReady || ev.Control.Epoch == "" {
		t.Fatalf("live subscription to %q: got %s, want ready with an epoch", channel, describe(ev))
	}
	return ev.Control.Epoch
}

// snapshotAt returns a snapshot of channel at seq in epoch, whose state names the seq.
func snapshotAt(channel string, seq uint64, epoch string) *actionsyncv1.Snapshot {
	return &actionsyncv1.Snapshot{
		Channel: channel, Seq: seq, Epoch: epoch, Version: "v1",
		State: fmt.Appendf(nil, `{"upTo":%d}`, seq), ClientId: "snapshotter",
	}
}

// putSnapshot stores a snapshot of channel at seq and fails the test on an error.
func putSnapshot(t *testing.T, b broker.Broker, channel string, seq uint64, epoch string) {
	t.Helper()
	if err := b.PutSnapshot(t.Context(), snapshotAt(channel, seq, epoch)); err != nil {
		t.Fatalf("PutSnapshot(%q at %d): %v", channel, seq, err)
	}
}

// wantSnapshotSeq fails the test unless channel holds a snapshot at seq (0: none).
func wantSnapshotSeq(t *testing.T, b broker.Broker, channel string, seq uint64) {
	t.Helper()
	got, err := b.Snapshot(t.Context(), channel)
	switch {
	case seq == 0 && !errors.Is(err, broker.ErrNoSnapshot):
		t.Fatalf("Snapshot(%q): got %v, %v, want ErrNoSnapshot", channel, got, err)
	case seq != 0 && err != nil:
		t.Fatalf("Snapshot(%q): %v, want the snapshot at %d", channel, err, seq)
	case seq != 0 && got.GetSeq() != seq:
		t.Fatalf("Snapshot(%q): got seq %d, want %d", channel, got.GetSeq(), seq)
	}
}

// expectSnapshot fails the test unless the next event of s is channel's snapshot at seq
// with the state snapshotAt gives it.
func expectSnapshot(t *testing.T, s *stream, channel string, seq uint64) {
	t.Helper()
	ev := mustNext(t, s)
	if !isControl(ev, broker.ControlSnapshot, channel, seq) {
		t.Fatalf("got %s, want snapshot %s@%d", describe(ev), channel, seq)
	}
	snap := ev.Control.Snapshot
	if snap.GetSeq() != seq || snap.GetEpoch() != ev.Control.Epoch || !bytes.Equal(snap.GetState(), snapshotAt(channel, seq, "").GetState()) {
		t.Fatalf("snapshot control %s@%d carries seq %d epoch %q state %q", channel, seq, snap.GetSeq(), snap.GetEpoch(), snap.GetState())
	}
}

// testSnapshotPutGet checks that a stored snapshot comes back with every field, the
// time set by the broker, and that Snapshot fails with ErrNoSnapshot before that.
func testSnapshotPutGet(t *testing.T, s suite) {
	clock := newFakeClock(time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC))
	b := s.open(t, Config{Now: clock.Now})
	const ch = "snap-put-get"
	seqs := publishN(t, b, ch, "writer", "w", 5)
	wantSnapshotSeq(t, b, ch, 0)
	epoch := epochOf(t, b, ch)
	clock.Advance(time.Second)
	putSnapshot(t, b, ch, seqs[2], epoch)
	got, err := b.Snapshot(t.Context(), ch)
	if err != nil {
		t.Fatal(err)
	}
	want := snapshotAt(ch, seqs[2], epoch)
	if got.GetChannel() != ch || got.GetSeq() != want.GetSeq() || got.GetEpoch() != epoch || got.GetVersion() != "v1" ||
		got.GetClientId() != "snapshotter" || !bytes.Equal(got.GetState(), want.GetState()) || !got.GetTime().AsTime().Equal(clock.Now()) {
		t.Errorf("Snapshot: got %v, want %v with time %v", got, want, clock.Now())
	}
	putSnapshot(t, b, ch, seqs[4], epoch) // newer: replaces it
	wantSnapshotSeq(t, b, ch, seqs[4])
	wantSnapshotSeq(t, b, "snap-no-such-channel", 0)
}

// testSnapshotRefusals checks that every snapshot CheckSnapshot refuses fails with its
// error and leaves the held snapshot as it was.
func testSnapshotRefusals(t *testing.T, s suite) {
	b := s.open(t, Config{HistorySize: 4})
	const ch = "snap-refusals"
	seqs := publishN(t, b, ch, "writer", "w", 10) // history keeps 7..10
	epoch := epochOf(t, b, ch)
	putSnapshot(t, b, ch, seqs[7], epoch) // at 8
	for _, tc := range []struct {
		name string
		snap *actionsyncv1.Snapshot
		want error
	}{
		{"wrong_epoch", snapshotAt(ch, seqs[9], epoch+"x"), broker.ErrEpochMismatch},
		{"empty_epoch", snapshotAt(ch, seqs[9], ""), broker.ErrEpochMismatch},
		{"seq_zero", snapshotAt(ch, 0, epoch), broker.ErrBeyondHead},
		{"beyond_head", snapshotAt(ch, seqs[9]+1, epoch), broker.ErrBeyondHead},
		{"same_seq", snapshotAt(ch, seqs[7], epoch), broker.ErrStaleSnapshot},
		{"older_seq", snapshotAt(ch, seqs[6], epoch), broker.ErrStaleSnapshot},
		{"no_such_channel", snapshotAt("snap-refusals-none", 1, epoch), broker.ErrBeyondHead},
	} {
		if err := b.PutSnapshot(t.Context(), tc.snap); !errors.Is(err, tc.want) {
			t.Errorf("%s: PutSnapshot(seq %d, epoch %q): got %v, want %v", tc.name, tc.snap.GetSeq(), tc.snap.GetEpoch(), err, tc.want)
		}
		wantSnapshotSeq(t, b, ch, seqs[7])
	}
	wantSnapshotSeq(t, b, "snap-refusals-none", 0)

	// A first snapshot whose following history is gone cannot be rebuilt from.
	const bare = "snap-refusals-trimmed"
	bareSeqs := publishN(t, b, bare, "writer", "w", 10) // history keeps 7..10: trimmed 6
	bareEpoch := epochOf(t, b, bare)
	if err := b.PutSnapshot(t.Context(), snapshotAt(bare, bareSeqs[4], bareEpoch)); !errors.Is(err, broker.ErrTrimmed) {
		t.Errorf("PutSnapshot at %d, history after 6: got %v, want ErrTrimmed", bareSeqs[4], err)
	}
	wantSnapshotSeq(t, b, bare, 0)
	putSnapshot(t, b, bare, bareSeqs[5], bareEpoch) // at the edge: history continues at 7
}

// testSnapshotSizeLimit checks Config.MaxSnapshotBytes at N-1, N and N+1 bytes.
func testSnapshotSizeLimit(t *testing.T, s suite) {
	const limit = 1000
	b := s.open(t, Config{MaxSnapshotBytes: limit})
	const ch = "snap-size"
	seqs := publishN(t, b, ch, "writer", "w", 3)
	epoch := epochOf(t, b, ch)
	for i, size := range []int{limit - 1, limit, limit + 1} {
		snap := snapshotAt(ch, seqs[i], epoch)
		snap.State = bytes.Repeat([]byte("x"), size)
		err := b.PutSnapshot(t.Context(), snap)
		if size <= limit && err != nil {
			t.Errorf("PutSnapshot of %d bytes, limit %d: %v", size, limit, err)
		}
		if size > limit {
			if !errors.Is(err, broker.ErrSnapshotTooLarge) {
				t.Errorf("PutSnapshot of %d bytes, limit %d: got %v, want ErrSnapshotTooLarge", size, limit, err)
			}
			wantSnapshotSeq(t, b, ch, seqs[1])
		}
	}
}

// testSnapshotFromZero checks that a position at 0 that takes snapshots gets the
// snapshot, then the entries after it, ready and live entries; one that does not take
// them replays from 1 as before.
func testSnapshotFromZero(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "snap-zero"
	seqs := publishN(t, b, ch, "writer", "w", 6)
	// No snapshot yet: a replay from 1, even for a position that takes them.
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Snapshots: true}, 4)
	expectEntries(t, st, ch, seqs...)
	expectControl(t, st, broker.ControlReady, ch, seqs[5])

	putSnapshot(t, b, ch, seqs[3], epochOf(t, b, ch))
	with := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Snapshots: true}, 4)
	expectSnapshot(t, with, ch, seqs[3])
	expectEntries(t, with, ch, seqs[4:]...)
	expectControl(t, with, broker.ControlReady, ch, seqs[5])
	without := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 4)
	expectEntries(t, without, ch, seqs...)
	expectControl(t, without, broker.ControlReady, ch, seqs[5])
	// A position that can resume is resumed, snapshot or not.
	resume := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: seqs[1], Snapshots: true}, 4)
	expectEntries(t, resume, ch, seqs[2:]...)
	expectControl(t, resume, broker.ControlReady, ch, seqs[5])
	live := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Live: true, Snapshots: true}, 4)
	expectControl(t, live, broker.ControlReady, ch, seqs[5])

	more := publishN(t, b, ch, "writer", "more", 2)
	for _, st := range []*stream{st, with, without, resume, live} {
		expectEntries(t, st, ch, more...)
	}
}

// testSnapshotReplacesReset checks that every position that would get a reset (history
// trimmed past it, beyond the head, another epoch) gets the snapshot instead when it
// takes them, and that a snapshot history no longer continues gives a reset again.
func testSnapshotReplacesReset(t *testing.T, s suite) {
	b := s.open(t, Config{HistorySize: 4})
	const ch = "snap-reset"
	seqs := publishN(t, b, ch, "writer", "w", 10) // history keeps 7..10
	epoch := epochOf(t, b, ch)
	putSnapshot(t, b, ch, seqs[7], epoch) // at 8
	for _, pos := range []broker.Position{
		{AfterSeq: seqs[2], Snapshots: true},                 // trimmed
		{AfterSeq: seqs[9] + 5, Snapshots: true},             // beyond the head
		{AfterSeq: seqs[8], Epoch: "other", Snapshots: true}, // another epoch
	} {
		st := follow(t, b, broker.SubscribeOptions{}, ch, pos, 4)
		expectSnapshot(t, st, ch, seqs[7])
		expectEntries(t, st, ch, seqs[8:]...)
		expectControl(t, st, broker.ControlReady, ch, seqs[9])
		pos.Snapshots = false
		old := follow(t, b, broker.SubscribeOptions{}, ch, pos, 4)
		expectControl(t, old, broker.ControlReset, ch, seqs[9])
		expectControl(t, old, broker.ControlReady, ch, seqs[9])
	}
	// Five more actions trim history past the snapshot (history keeps 12..15): it
	// cannot be rebuilt from any more, and a reset comes instead.
	more := publishN(t, b, ch, "writer", "more", 5)
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Snapshots: true}, 4)
	expectControl(t, st, broker.ControlReset, ch, more[4])
	expectControl(t, st, broker.ControlReady, ch, more[4])
}

// testSnapshotRacingPublishers checks the seam after a snapshot while publishers race:
// subscribers that start from 0 while snapshots are put and actions published each get
// a contiguous run of seqs after the snapshot they got (or from 1), then everything up
// to the end, in order, with no gap and no duplicate, equal to History.
func testSnapshotRacingPublishers(t *testing.T, s suite) {
	const (
		ch         = "snap-race"
		publishers = 3
		per        = 80
		readers    = 6
	)
	b := s.open(t, Config{QueueSize: 1 << 12})
	var wg sync.WaitGroup
	waitOnExit(t, b, &wg)
	epoch := epochOf(t, b, ch)
	publishN(t, b, ch, "writer", "initial", 20)
	errs := make(chan error, publishers+readers+1)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if _, err := b.Publish(t.Context(), ch, []*actionsyncv1.Action{action("writer", fmt.Sprintf("p%d-%d", p, i))}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // snapshots at whatever the head is, now and then
		defer wg.Done()
		for range 20 {
			_, head, err := b.History(t.Context(), ch, 0, 0)
			if err != nil {
				errs <- err
				return
			}
			err = b.PutSnapshot(t.Context(), snapshotAt(ch, head, epoch))
			if err != nil && !errors.Is(err, broker.ErrStaleSnapshot) {
				errs <- err
				return
			}
		}
	}()
	streams := make([]*stream, readers)
	for i := range streams {
		streams[i] = follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Snapshots: true}, 3+i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	end := publish(t, b, ch, action("writer", "end"))[0]
	want, _ := history(t, b, ch, 0)
	for i, st := range streams {
		events, err := readUntil(st, "end")
		if err != nil {
			t.Fatalf("reader %d: %v", i, err)
		}
		after := uint64(0)
		if c := events[0].Control; c != nil && c.Kind == broker.ControlSnapshot {
			after, events = c.Seq, events[1:]
		}
		if err := checkSeam(events, after, false, want); err != nil {
			t.Errorf("reader %d (from snapshot at %d): %v", i, after, err)
		}
	}
	if end.Seq != want[len(want)-1].Seq() {
		t.Fatalf("end at %d, history ends at %d", end.Seq, want[len(want)-1].Seq())
	}
}

// testSnapshotHoldsHistory checks that history after the snapshot is not trimmed by
// age (history behind it is), so that a new client can always rebuild; and that a
// deleted snapshot lifts the hold.
func testSnapshotHoldsHistory(t *testing.T, s suite) {
	const maxAge = time.Minute
	clock := newFakeClock(time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC))
	b := s.open(t, Config{MaxAge: maxAge, Now: clock.Now})
	const ch = "snap-hold"
	seqs := publishN(t, b, ch, "writer", "w", 6)
	putSnapshot(t, b, ch, seqs[2], epochOf(t, b, ch)) // at 3
	clock.Advance(2 * maxAge)                         // everything is old
	wantHistoryErr(t, b, ch, seqs[1], broker.ErrTrimmed)
	entries, head := history(t, b, ch, seqs[2])
	if head != seqs[5] || !slices.Equal(seqsOf(entries), seqs[3:]) {
		t.Fatalf("History after the snapshot's seq %d, all old: got %v head %d, want %v", seqs[2], seqsOf(entries), head, seqs[3:])
	}
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Snapshots: true}, 8)
	expectSnapshot(t, st, ch, seqs[2])
	expectEntries(t, st, ch, seqs[3:]...)
	expectControl(t, st, broker.ControlReady, ch, seqs[5])

	if _, err := b.DeleteSnapshot(t.Context(), ch, 0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	wantHistoryErr(t, b, ch, seqs[2], broker.ErrTrimmed)
}

// testSnapshotConcurrentPuts checks that of concurrent puts for one channel the newest
// seq is kept: each put succeeds or fails with ErrStaleSnapshot, and the held snapshot
// ends at the highest seq put.
func testSnapshotConcurrentPuts(t *testing.T, s suite) {
	const (
		ch      = "snap-concurrent"
		n       = 40
		writers = 4
	)
	b := s.open(t, Config{})
	seqs := publishN(t, b, ch, "writer", "w", n)
	epoch := epochOf(t, b, ch)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Writer w puts seqs w, w+writers, ...: interleaved, racing the others.
			for i := w; i < n; i += writers {
				if err := b.PutSnapshot(t.Context(), snapshotAt(ch, seqs[i], epoch)); err != nil && !errors.Is(err, broker.ErrStaleSnapshot) {
					errs <- fmt.Errorf("PutSnapshot at %d: %w", seqs[i], err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	wantSnapshotSeq(t, b, ch, seqs[n-1])
	got, err := b.Snapshot(t.Context(), ch)
	if err != nil || !bytes.Equal(got.GetState(), snapshotAt(ch, seqs[n-1], "").GetState()) {
		t.Errorf("Snapshot: got state %q (%v), want the one put at %d", got.GetState(), err, seqs[n-1])
	}
}

// testSnapshotDelete checks DeleteSnapshot: with the wrong seq it changes nothing, with
// the right one (or 0) it removes the snapshot, and then positions at 0 replay again.
func testSnapshotDelete(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "snap-delete"
	seqs := publishN(t, b, ch, "writer", "w", 4)
	if _, err := b.DeleteSnapshot(t.Context(), ch, 0); !errors.Is(err, broker.ErrNoSnapshot) {
		t.Errorf("DeleteSnapshot with none held: got %v, want ErrNoSnapshot", err)
	}
	putSnapshot(t, b, ch, seqs[2], epochOf(t, b, ch))
	if _, err := b.DeleteSnapshot(t.Context(), ch, seqs[1]); !errors.Is(err, broker.ErrSnapshotChanged) {
		t.Errorf("DeleteSnapshot at %d, held at %d: got %v, want ErrSnapshotChanged", seqs[1], seqs[2], err)
	}
	wantSnapshotSeq(t, b, ch, seqs[2])
	deleted, err := b.DeleteSnapshot(t.Context(), ch, seqs[2])
	if err != nil || deleted != seqs[2] {
		t.Fatalf("DeleteSnapshot at %d: got %d, %v", seqs[2], deleted, err)
	}
	wantSnapshotSeq(t, b, ch, 0)
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Snapshots: true}, 8)
	expectEntries(t, st, ch, seqs...)
	expectControl(t, st, broker.ControlReady, ch, seqs[3])
	// After a delete, any seq newer than nothing is accepted again, even an older one.
	putSnapshot(t, b, ch, seqs[0], epochOf(t, b, ch))
	wantSnapshotSeq(t, b, ch, seqs[0])
}
