package brokertest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// testRacingPublishers checks promise 1 under load: publishers racing on one channel
// with batches of 1-5 actions, and subscribers joining before and during the race (from
// the start, live, and from a seq in the middle), all see the channel's one order with
// no gap and no duplicate, and that order is History. It also checks promise 2: every
// ack's seq is in history with its id, and a sender's later calls get later seqs.
func testRacingPublishers(t *testing.T, s suite) {
	const (
		publishers   = 8
		perPublisher = 200
		ch           = "race"
		endID        = "race-end"
	)
	b := s.open(t, Config{HistorySize: 1 << 14, QueueSize: 1 << 14})
	var readersWG, pubWG sync.WaitGroup
	waitOnExit(t, b, &readersWG, &pubWG)

	type reader struct {
		name   string
		after  uint64
		live   bool
		events []broker.Event
		err    error
	}
	var readers []*reader
	startReader := func(name string, pos broker.Position, maxActions int) {
		st := follow(t, b, broker.SubscribeOptions{ClientID: name}, ch, pos, maxActions)
		r := &reader{name: name, after: pos.AfterSeq, live: pos.Live}
		readers = append(readers, r)
		readersWG.Go(func() { r.events, r.err = readUntil(st, endID) })
	}
	startReader("before_from_zero", broker.Position{}, 1)
	startReader("before_live", broker.Position{Live: true}, 64)

	var (
		published atomic.Int64
		ackedMu   sync.Mutex
		acked     = make(map[uint64]string) // seq -> id
	)
	for p := range publishers {
		pubWG.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 42))
			client := fmt.Sprintf("pub-%d", p)
			var last uint64
			for n := 0; n < perPublisher; {
				size := min(1+rng.IntN(5), perPublisher-n)
				batch := make([]*actionsyncv1.Action, size)
				for i := range batch {
					batch[i] = action(client, fmt.Sprintf("%s-%d", client, n+i))
				}
				acks, err := b.Publish(t.Context(), ch, batch)
				if err != nil {
					t.Errorf("%s: Publish: %v", client, err)
					return
				}
				if len(acks) != size {
					t.Errorf("%s: got %d acks for %d actions", client, len(acks), size)
					return
				}
				ackedMu.Lock()
				for i, ack := range acks {
					if ack.ID != batch[i].GetId() || ack.Duplicate || ack.Seq <= last {
						t.Errorf("%s: ack %d is %+v after seq %d, want id %q, new, higher seq", client, i, ack, last, batch[i].GetId())
					}
					if prev, ok := acked[ack.Seq]; ok {
						t.Errorf("%s: seq %d given to %q and %q", client, ack.Seq, prev, ack.ID)
					}
					acked[ack.Seq] = ack.ID
					last = ack.Seq
				}
				ackedMu.Unlock()
				n += size
				published.Add(int64(size))
			}
		})
	}

	// More readers join while the publishers run.
	waitPublished := func(n int64) {
		deadline := time.Now().Add(waitTimeout)
		for published.Load() < n && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
	}
	waitPublished(publishers * perPublisher / 3)
	startReader("during_from_zero", broker.Position{}, 7)
	startReader("during_live", broker.Position{Live: true}, 3)
	waitPublished(publishers * perPublisher * 2 / 3)
	_, head := history(t, b, ch, 0)
	startReader("during_from_middle", broker.Position{AfterSeq: head / 2}, 16)

	pubWG.Wait()
	end := publish(t, b, ch, action("end", endID))[0]
	acked[end.Seq] = endID
	readersWG.Wait()
	if t.Failed() {
		return
	}

	entries, head := history(t, b, ch, 0)
	if head != end.Seq {
		t.Errorf("head: got %d, want %d (the last ack)", head, end.Seq)
	}
	if want := publishers*perPublisher + 1; len(entries) != want {
		t.Errorf("history: got %d entries, want %d", len(entries), want)
	}
	wantSeqs := make([]uint64, 0, len(acked))
	for seq := range acked {
		wantSeqs = append(wantSeqs, seq)
	}
	slices.Sort(wantSeqs)
	if got := seqsOf(entries); !slices.Equal(got, wantSeqs) {
		t.Errorf("history seqs differ from acked seqs (%d vs %d)", len(got), len(wantSeqs))
	}
	for _, e := range entries {
		if id := acked[e.Seq()]; e.ID() != id {
			t.Errorf("history seq %d: got id %q, acked for %q", e.Seq(), e.ID(), id)
		}
	}
	for _, r := range readers {
		if r.err != nil {
			t.Errorf("reader %s: %v", r.name, r.err)
			continue
		}
		if err := checkSeam(r.events, r.after, r.live, entries); err != nil {
			t.Errorf("reader %s (after %d, live %v): %v", r.name, r.after, r.live, err)
		}
	}
}
