package brokertest

import (
	"fmt"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker"
)

// testHistoryTrimmedBySize checks Config.HistorySize: a channel keeps exactly its last
// HistorySize actions; History serves positions from the one before the oldest kept
// action up to the head and refuses older ones with ErrTrimmed.
func testHistoryTrimmedBySize(t *testing.T, s suite) {
	const size = 4
	b := s.open(t, Config{HistorySize: size})
	for _, n := range []int{size - 1, size, size + 1, 3*size + 1} {
		t.Run(fmt.Sprintf("published_%d", n), func(t *testing.T) {
			t.Parallel()
			ch := fmt.Sprintf("size-%d", n)
			seqs := publishN(t, b, ch, "writer", "w", n)
			head := seqs[n-1]
			kept := seqs[max(0, n-size):]
			var oldestPos uint64 // the oldest position History still serves
			if n > size {
				oldestPos = seqs[n-size-1]
			}
			entries, gotHead := history(t, b, ch, oldestPos)
			if gotHead != head || fmt.Sprint(seqsOf(entries)) != fmt.Sprint(kept) {
				t.Errorf("History(after %d): got seqs %v and head %d, want %v and head %d", oldestPos, seqsOf(entries), gotHead, kept, head)
			}
			if n > size {
				wantHistoryErr(t, b, ch, oldestPos-1, broker.ErrTrimmed)
				wantHistoryErr(t, b, ch, 0, broker.ErrTrimmed)
			}
			wantHistoryErr(t, b, ch, head+1, broker.ErrBeyondHead)
			// A subscription from the oldest position replays exactly what is kept.
			st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: oldestPos}, 2)
			expectEntries(t, st, ch, kept...)
			expectControl(t, st, broker.ControlReady, ch, head)
		})
	}
}

// testHistoryTrimmedByAge checks Config.MaxAge with a fake clock: actions older than
// MaxAge leave history (even with no publish to trigger it), positions before them get
// ErrTrimmed and a reset, and their ids are accepted as new.
func testHistoryTrimmedByAge(t *testing.T, s suite) {
	const maxAge = time.Minute
	clock := newFakeClock(time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC))
	b := s.open(t, Config{MaxAge: maxAge, Now: clock.Now})
	const ch = "age"
	old := publishN(t, b, ch, "writer", "old", 3) // at t0
	clock.Advance(30 * time.Second)
	young := publishN(t, b, ch, "writer", "young", 2) // at t0+30s
	head := young[1]

	// At t0+MaxAge-1ms nothing is old enough to go.
	clock.Advance(maxAge - 30*time.Second - time.Millisecond)
	if entries, _ := history(t, b, ch, 0); len(entries) != 5 {
		t.Fatalf("just under MaxAge: got %d entries, want 5", len(entries))
	}
	// At t0+MaxAge+1ms the first three are too old.
	clock.Advance(2 * time.Millisecond)
	wantHistoryErr(t, b, ch, 0, broker.ErrTrimmed)
	wantHistoryErr(t, b, ch, old[1], broker.ErrTrimmed)
	entries, gotHead := history(t, b, ch, old[2])
	if gotHead != head || fmt.Sprint(seqsOf(entries)) != fmt.Sprint(young) {
		t.Errorf("History(after %d): got seqs %v and head %d, want %v and head %d", old[2], seqsOf(entries), gotHead, young, head)
	}
	st := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: old[0]}, 8)
	expectControl(t, st, broker.ControlReset, ch, head)
	expectControl(t, st, broker.ControlReady, ch, head)
	replay := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: old[2]}, 8)
	expectEntries(t, replay, ch, young...)
	expectControl(t, replay, broker.ControlReady, ch, head)

	// Everything ages out: the channel keeps its head, serves only the head position,
	// and a trimmed id is new again.
	clock.Advance(maxAge)
	entries, gotHead = history(t, b, ch, head)
	if gotHead != head || len(entries) != 0 {
		t.Errorf("History(after head %d): got seqs %v and head %d, want none and head %d", head, seqsOf(entries), gotHead, head)
	}
	wantHistoryErr(t, b, ch, head-1, broker.ErrTrimmed)
	atHead := follow(t, b, broker.SubscribeOptions{}, ch, broker.Position{AfterSeq: head}, 8)
	expectControl(t, atHead, broker.ControlReady, ch, head)
	again := publish(t, b, ch, action("writer", "old-0"))[0]
	if again.Duplicate || again.Seq <= head {
		t.Errorf("id of an aged-out action: got ack %+v, want a new seq after %d", again, head)
	}
	for _, s := range []*stream{st, replay, atHead} {
		expectEntry(t, s, ch, again.Seq)
	}
	if e := historyOnly(t, b, ch, head, again.Seq); !e.Time().Equal(clock.Now()) {
		t.Errorf("new action: got time %v, want %v", e.Time(), clock.Now())
	}
}

// historyOnly fails the test unless History after `after` is exactly the entry
// seq, and returns it.
func historyOnly(t *testing.T, b broker.Broker, ch string, after, seq uint64) *broker.Entry {
	t.Helper()
	entries, head := history(t, b, ch, after)
	if len(entries) != 1 || entries[0].Seq() != seq || head != seq {
		t.Fatalf("History(after %d): got seqs %v and head %d, want [%d]", after, seqsOf(entries), head, seq)
	}
	return entries[0]
}

// testHistoryPaging checks History's limit and head: at most limit entries in order,
// paging from the last seq returned, and an empty answer with head 0 for a channel
// nobody has published to.
func testHistoryPaging(t *testing.T, s suite) {
	b := s.open(t, Config{})
	const ch = "paging"
	seqs := publishN(t, b, ch, "writer", "w", 10)
	head := seqs[9]
	for _, limit := range []int{1, 3, 9, 10, 11, 1000} {
		var got []uint64
		after := uint64(0)
		for range 20 {
			page, h, err := b.History(t.Context(), ch, after, limit)
			if err != nil {
				t.Fatalf("History(after %d, limit %d): %v", after, limit, err)
			}
			if h != head {
				t.Errorf("History(after %d, limit %d): got head %d, want %d", after, limit, h, head)
			}
			if len(page) > limit {
				t.Fatalf("History(after %d, limit %d): got %d entries", after, limit, len(page))
			}
			if len(page) == 0 {
				break
			}
			if len(page) < limit && page[len(page)-1].Seq() != head {
				t.Errorf("History(after %d, limit %d): short page %v before the head", after, limit, seqsOf(page))
			}
			got = append(got, seqsOf(page)...)
			after = page[len(page)-1].Seq()
		}
		if fmt.Sprint(got) != fmt.Sprint(seqs) {
			t.Errorf("limit %d: got seqs %v, want %v", limit, got, seqs)
		}
	}
	// The head position: nothing after it.
	if page, h, err := b.History(t.Context(), ch, head, 5); err != nil || len(page) != 0 || h != head {
		t.Errorf("History(after head): got %d entries, head %d, %v; want none, head %d", len(page), h, err, head)
	}
	// A channel nobody published to.
	if page, h, err := b.History(t.Context(), "paging-none", 0, 5); err != nil || len(page) != 0 || h != 0 {
		t.Errorf("History(unknown channel): got %d entries, head %d, %v; want none, head 0", len(page), h, err)
	}
	wantHistoryErr(t, b, "paging-none", 1, broker.ErrBeyondHead)
}
