package brokertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// testResumeEverySeam checks promise 4 at every position: with K actions in history, a
// subscription from each after_seq in 0..K gets exactly the entries after it, then ready
// at the head, then live entries with no gap and no duplicate. Polling two entries at a
// time puts the seam at every offset of a Poll.
func testResumeEverySeam(t *testing.T, s suite) {
	const k = 10
	b := s.open(t, Config{})
	for i := 0; i <= k; i++ {
		t.Run(fmt.Sprintf("after_%d_of_%d", i, k), func(t *testing.T) {
			t.Parallel()
			ch := fmt.Sprintf("seam-%d", i)
			seqs := publishN(t, b, ch, "writer", "w", k)
			var after uint64
			if i > 0 {
				after = seqs[i-1]
			}
			replay, head := history(t, b, ch, after)
			if got := seqsOf(replay); fmt.Sprint(got) != fmt.Sprint(seqs[i:]) {
				t.Errorf("History(after %d): got seqs %v, want %v", after, got, seqs[i:])
			}
			if head != seqs[k-1] {
				t.Errorf("History: got head %d, want %d", head, seqs[k-1])
			}
			for _, maxActions := range []int{1, 2, k + 1} {
				st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: after}, maxActions)
				expectEntries(t, st, ch, seqs[i:]...)
				expectControl(t, st, broker.ControlReady, ch, head)
				live := publishN(t, b, ch, "writer", fmt.Sprintf("live%d", maxActions), 2)
				expectEntries(t, st, ch, live...)
				head = live[1]
				// The next subscription replays these too; seqs[i:] must cover them.
				seqs = append(seqs, live...)
			}
		})
	}
}

// testResumePublishBeforePoll checks the seam when actions are published after Add but
// before the subscriber's first Poll: whether they are replayed or delivered live, each
// arrives once, in order, with ready in between at the last replayed seq.
func testResumePublishBeforePoll(t *testing.T, s suite) {
	const k = 6
	b := s.open(t, Config{})
	for i := 0; i <= k; i++ {
		t.Run(fmt.Sprintf("after_%d_of_%d", i, k), func(t *testing.T) {
			t.Parallel()
			ch := fmt.Sprintf("before-poll-%d", i)
			seqs := publishN(t, b, ch, "writer", "w", k)
			var after uint64
			if i > 0 {
				after = seqs[i-1]
			}
			st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: after}, 2)
			publishN(t, b, ch, "writer", "racing", 3)
			end := publish(t, b, ch, action("writer", "end"))[0]
			events, err := readUntil(st, "end")
			if err != nil {
				t.Fatal(err)
			}
			want, head := history(t, b, ch, 0)
			if head != end.Seq {
				t.Fatalf("head: got %d, want %d", head, end.Seq)
			}
			if err := checkSeam(events, after, false, want); err != nil {
				t.Error(err)
			}
			for _, ev := range events {
				if ev.Control != nil && ev.Control.Seq < seqs[k-1] {
					t.Errorf("got %s, want ready no earlier than the head at Add, %d", describe(ev), seqs[k-1])
				}
			}
		})
	}
}

// testResumeRacingReplay checks the seam while publishers race the replay: a replay much
// longer than one Poll, read a few entries at a time while four publishers keep
// appending, must join the live stream with no gap and no duplicate.
func testResumeRacingReplay(t *testing.T, s suite) {
	const (
		initial      = 300
		publishers   = 4
		perPublisher = 60
		ch           = "racing-replay"
		endID        = "racing-replay-end"
	)
	b := s.open(t, Config{HistorySize: 1 << 12, QueueSize: 1 << 12})
	var wg, readersWG sync.WaitGroup
	waitOnExit(t, b, &wg, &readersWG)
	for i := 0; i < initial; i += 5 {
		batch := make([]*actionsyncv1.Action, 5)
		for j := range batch {
			batch[j] = action("writer", fmt.Sprintf("initial-%d", i+j))
		}
		publish(t, b, ch, batch...)
	}

	type reader struct {
		after  uint64
		events []broker.Event
		err    error
	}
	var readers []*reader
	var streams []*stream
	for i, after := range []uint64{0, 1, initial / 2, initial - 7, initial - 1, initial} {
		st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: after}, 3+i)
		readers = append(readers, &reader{after: after})
		streams = append(streams, st)
	}

	for p := range publishers {
		wg.Go(func() {
			client := fmt.Sprintf("racer-%d", p)
			for n := 0; n < perPublisher; n += 2 {
				batch := []*actionsyncv1.Action{action(client, fmt.Sprintf("%s-%d", client, n)), action(client, fmt.Sprintf("%s-%d", client, n+1))}
				if _, err := b.Publish(t.Context(), ch, batch); err != nil {
					t.Errorf("%s: Publish: %v", client, err)
					return
				}
			}
		})
	}
	for i, r := range readers {
		readersWG.Go(func() { r.events, r.err = readUntil(streams[i], endID) })
	}
	wg.Wait()
	publish(t, b, ch, action("writer", endID))
	readersWG.Wait()

	want, _ := history(t, b, ch, 0)
	if n := initial + publishers*perPublisher + 1; len(want) != n {
		t.Fatalf("history: got %d entries, want %d", len(want), n)
	}
	for _, r := range readers {
		if r.err != nil {
			t.Errorf("reader after %d: %v", r.after, r.err)
			continue
		}
		if err := checkSeam(r.events, r.after, false, want); err != nil {
			t.Errorf("reader after %d: %v", r.after, err)
		}
	}
}

// testResetTrimmed checks the reset of promise 4 against size-trimmed history: a
// position that history no longer reaches gets reset at the head, then ready, then live
// entries; a position just inside history is replayed without a reset; History agrees.
func testResetTrimmed(t *testing.T, s suite) {
	const (
		size      = 5
		published = 12
	)
	b := s.open(t, Config{HistorySize: size})
	// With 12 published and 5 kept, history holds 8..12: after_seq 7 is the oldest
	// position it still serves.
	tests := []struct {
		name      string
		after     uint64
		wantReset bool
		wantErr   error // from History(after)
	}{
		{"after_zero", 0, true, broker.ErrTrimmed},
		{"long_trimmed", 3, true, broker.ErrTrimmed},
		{"one_before_oldest_position", published - size - 1, true, broker.ErrTrimmed},
		{"oldest_position", published - size, false, nil},
		{"one_after_oldest_position", published - size + 1, false, nil},
		{"at_head", published, false, nil},
		{"one_beyond_head", published + 1, true, broker.ErrBeyondHead},
		{"far_beyond_head", 1 << 40, true, broker.ErrBeyondHead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ch := "trimmed-" + tt.name
			seqs := publishN(t, b, ch, "writer", "w", published)
			if seqs[published-1] != published {
				t.Fatalf("got seqs %v, want 1..%d", seqs, published)
			}
			if err := historyErr(t, b, ch, tt.after); tt.wantErr != nil {
				wantHistoryErr(t, b, ch, tt.after, tt.wantErr)
			} else if err != nil {
				t.Errorf("History(after %d): %v", tt.after, err)
			}
			st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: tt.after}, 2)
			if tt.wantReset {
				expectControl(t, st, broker.ControlReset, ch, published)
			} else {
				for seq := tt.after + 1; seq <= published; seq++ {
					expectEntry(t, st, ch, seq)
				}
			}
			expectControl(t, st, broker.ControlReady, ch, published)
			live := publishN(t, b, ch, "writer", "live", 2)
			expectEntries(t, st, ch, live...)
		})
	}
}

// testResetReplayOvertaken checks a replay that trimming overtakes: a subscription that
// started inside history, and whose replay falls behind while publishers push its
// position out of history, must not skip silently. Either the replay goes on with no
// gap, or a reset says where delivery continues; then ready and live entries follow.
//
// (Subscription.Add documents the reset as coming first; a backend that cannot keep
// what a replay still needs can only announce the loss when it happens.)
func testResetReplayOvertaken(t *testing.T, s suite) {
	const size = 5
	b := s.open(t, Config{HistorySize: size})
	const ch = "overtaken"
	seqs := publishN(t, b, ch, "writer", "w", 2*size) // history holds the last 5
	after := seqs[len(seqs)-size+1]                   // inside history, 3 to replay
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: after}, 1)
	first := expectEntry(t, st, ch, seqs[len(seqs)-size+2])
	more := publishN(t, b, ch, "writer", "overtake", 2*size)
	head := more[len(more)-1]
	all := append(seqs, more...)
	pos := first.Seq()
	for {
		ev := mustNext(t, st)
		if ev.Control != nil && ev.Control.Kind == broker.ControlReset {
			if ev.Control.Seq < head {
				t.Fatalf("got %s, want a reset at the head, %d, or later", describe(ev), head)
			}
			pos = ev.Control.Seq
			continue
		}
		if ev.Control != nil && ev.Control.Kind == broker.ControlReady {
			if ev.Control.Seq != pos || pos != head {
				t.Fatalf("got %s at position %d, want ready at the head, %d", describe(ev), pos, head)
			}
			break
		}
		i := slices.Index(all, pos)
		if ev.Entry == nil || i < 0 || i+1 >= len(all) || ev.Entry.Seq() != all[i+1] {
			t.Fatalf("got %s after position %d, want the next seq or a reset", describe(ev), pos)
		}
		pos = ev.Entry.Seq()
	}
	live := publishN(t, b, ch, "writer", "live", 1)
	expectEntries(t, st, ch, live...)
}

// testResetBeyondHead checks the reset for positions after the head, on a channel with
// actions and on one that has none.
func testResetBeyondHead(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "beyond"
	publishN(t, b, ch, "writer", "w", 3)
	var streams []*stream
	for _, after := range []uint64{4, 5, 1 << 63} {
		wantHistoryErr(t, b, ch, after, broker.ErrBeyondHead)
		st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: after}, 8)
		expectControl(t, st, broker.ControlReset, ch, 3)
		expectControl(t, st, broker.ControlReady, ch, 3)
		streams = append(streams, st)
	}
	// At the head: no reset, no replay.
	at := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: 3}, 8)
	expectControl(t, at, broker.ControlReady, ch, 3)
	streams = append(streams, at)

	// A channel nobody published to has head 0: any after_seq > 0 is beyond it.
	const empty = "beyond-empty"
	wantHistoryErr(t, b, empty, 1, broker.ErrBeyondHead)
	st := follow(t, b, broker.SubscribeOptions{}, empty, broker.Position{AfterSeq: 1}, 8)
	expectControl(t, st, broker.ControlReset, empty, 0)
	expectControl(t, st, broker.ControlReady, empty, 0)
	zero := follow(t, b, broker.SubscribeOptions{}, empty, broker.Position{}, 8)
	expectControl(t, zero, broker.ControlReady, empty, 0)
	first := publish(t, b, empty, action("writer", "first"))[0]
	expectEntry(t, st, empty, first.Seq)
	expectEntry(t, zero, empty, first.Seq)

	live := publishN(t, b, ch, "writer", "live", 1)[0]
	for _, st := range streams {
		expectEntry(t, st, ch, live)
	}
}

// testLivePosition checks Position.Live: ready at the head, no replay and no reset, even
// on a trimmed channel, then live entries.
func testLivePosition(t *testing.T, s suite) {
	b := s.open(t, Config{HistorySize: 2})
	for _, n := range []int{0, 1, 2, 3, 10} {
		t.Run(fmt.Sprintf("head_%d", n), func(t *testing.T) {
			t.Parallel()
			ch := fmt.Sprintf("live-%d", n)
			var head uint64
			if n > 0 {
				head = publishN(t, b, ch, "writer", "w", n)[n-1]
			}
			// AfterSeq is ignored for a live start.
			st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{Live: true, AfterSeq: 1 << 50}, 8)
			expectControl(t, st, broker.ControlReady, ch, head)
			live := publishN(t, b, ch, "writer", "live", 3)
			expectEntries(t, st, ch, live...)
		})
	}
}

// testEpoch: every control of a channel carries the same non-empty epoch; a position
// with the channel's epoch resumes normally, one with another epoch gets a reset even
// when its after_seq is within history (the history it belonged to is gone).
func testEpoch(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "epoch"
	publishN(t, b, ch, "writer", "e", 3)
	first := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{}, 8)
	expectEntries(t, first, ch, 1, 2, 3)
	ready := mustNext(t, first)
	if !isControl(ready, broker.ControlReady, ch, 3) {
		t.Fatalf("got %s, want ready %s@3", describe(ready), ch)
	}
	epoch := ready.Control.Epoch

	same := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: 1, Epoch: epoch}, 8)
	expectEntries(t, same, ch, 2, 3)
	if ev := mustNext(t, same); !isControl(ev, broker.ControlReady, ch, 3) || ev.Control.Epoch != epoch {
		t.Fatalf("resume in the same epoch: got %s (epoch %q), want ready %s@3 in epoch %q", describe(ev), ev.Control.Epoch, ch, epoch)
	}

	other := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: 1, Epoch: "not-" + epoch}, 8)
	if ev := mustNext(t, other); !isControl(ev, broker.ControlReset, ch, 3) || ev.Control.Epoch != epoch {
		t.Fatalf("resume from another epoch: got %s, want reset %s@3 in epoch %q", describe(ev), ch, epoch)
	}
	expectControl(t, other, broker.ControlReady, ch, 3)
	live := publishN(t, b, ch, "writer", "live", 1)[0]
	for _, st := range []*stream{first, same, other} {
		expectEntry(t, st, ch, live)
	}
}
