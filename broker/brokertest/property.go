package brokertest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// SeedEnv names the environment variable that fixes the seed of the randomized subtests
// (a decimal uint64). Without it the seed comes from the clock; either way it is logged.
const SeedEnv = "BROKERTEST_SEED"

// testPropertyResume is the randomized check of promises 1, 3 and 4 with history long
// enough to keep everything: racing publishers (random batches, re-sent ids, ids
// repeated within a batch) on several channels, and subscribers that close and resume
// at random points, from the last seq they saw or from a random older one. Stitched
// across resumes, every subscriber's view of every channel is the channel's History,
// with no gap, no duplicate and no reset.
func testPropertyResume(t *testing.T, s suite) {
	runProperty(t, s, Config{HistorySize: 1 << 14, QueueSize: 1 << 14}, false)
}

// testPropertyResumeTrimming is testPropertyResume with a short history and short
// queues: subscribers also get cut off as slow consumers and resume, re-sent ids may be
// new again, and resets happen, each of which must be justified (History no longer
// reaches the position it replaced) and announced, never a silent skip.
func testPropertyResumeTrimming(t *testing.T, s suite) {
	runProperty(t, s, Config{HistorySize: 40, QueueSize: 12}, true)
}

// Sizes of the randomized run: small enough to take well under a second with -race.
const (
	propPublishers   = 4
	propPerPublisher = 150
	propSubscribers  = 6
	propDeadline     = 20 * time.Second
)

// propSeed returns the seed of a randomized run: SeedEnv if set, else the clock.
func propSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(SeedEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", SeedEnv, v, err)
		}
		seed = n
	}
	t.Logf("seed %d (run again with %s=%d)", seed, SeedEnv, seed)
	return seed
}

// truthRecord is what a publisher learnt from an ack: who published which id at a seq.
type truthRecord struct {
	id, client string
}

// truth is every action the broker acknowledged as new, per channel, as the publishers
// saw it. It is filled concurrently, then sealed and read.
type truth struct {
	mu      sync.Mutex
	records map[string]map[uint64]truthRecord
	sorted  map[string][]uint64 // set by seal
}

// add records an acked action; it fails if the seq was already given out.
func (tr *truth) add(ch string, seq uint64, rec truthRecord) error {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.records[ch] == nil {
		tr.records[ch] = make(map[uint64]truthRecord)
	}
	if prev, ok := tr.records[ch][seq]; ok {
		return fmt.Errorf("%s: seq %d acked for %q and for %q", ch, seq, prev.id, rec.id)
	}
	tr.records[ch][seq] = rec
	return nil
}

// seal sorts the seqs; call it once every publisher is done.
func (tr *truth) seal() {
	tr.sorted = make(map[string][]uint64)
	for ch, recs := range tr.records {
		seqs := make([]uint64, 0, len(recs))
		for seq := range recs {
			seqs = append(seqs, seq)
		}
		slices.Sort(seqs)
		tr.sorted[ch] = seqs
	}
}

// next returns the first acked seq of ch after `after` not published by skip (if not
// empty), or false if there is none.
func (tr *truth) next(ch string, after uint64, skip string) (uint64, bool) {
	seqs := tr.sorted[ch]
	i, _ := slices.BinarySearch(seqs, after+1)
	for ; i < len(seqs); i++ {
		if skip == "" || tr.records[ch][seqs[i]].client != skip {
			return seqs[i], true
		}
	}
	return 0, false
}

// propSession is one subscription's events for one channel, from the position it was
// added at.
type propSession struct {
	start  uint64
	events []broker.Event
}

// propSubscriber is what one randomized subscriber saw, per channel, session by session.
type propSubscriber struct {
	name     string
	opts     broker.SubscribeOptions
	sessions map[string][]*propSession
}

// runProperty runs the randomized resume check against a broker configured with cfg.
func runProperty(t *testing.T, s suite, cfg Config, trimming bool) {
	seed := propSeed(t)
	b := s.open(t, cfg)
	var subWG, pubWG sync.WaitGroup
	waitOnExit(t, b, &subWG, &pubWG)
	channels := []string{"prop-0", "prop-1", "prop-2"}
	tr := &truth{records: make(map[string]map[uint64]truthRecord)}
	markers := make(map[string]*atomic.Uint64) // seq of each channel's end marker, once published
	for _, ch := range channels {
		markers[ch] = new(atomic.Uint64)
	}

	subs := make([]*propSubscriber, propSubscribers)
	for j := range subs {
		ps := &propSubscriber{name: fmt.Sprintf("sub-%d", j), sessions: make(map[string][]*propSession)}
		switch j {
		case 1:
			ps.opts = broker.SubscribeOptions{ClientID: "pub-1", ExcludeOwn: true}
		case 2:
			ps.opts = broker.SubscribeOptions{ClientID: "pub-2"} // sees its own actions
		}
		subs[j] = ps
		rng := rand.New(rand.NewPCG(seed, uint64(2000+j)))
		subWG.Go(func() {
			if err := ps.run(t, b, rng, channels, markers, j == 0); err != nil {
				t.Errorf("%s: %v", ps.name, err)
			}
		})
	}

	for p := range propPublishers {
		rng := rand.New(rand.NewPCG(seed, uint64(1000+p)))
		pubWG.Go(func() {
			if err := propPublish(t, b, rng, fmt.Sprintf("pub-%d", p), channels, tr, trimming); err != nil {
				t.Errorf("pub-%d: %v", p, err)
			}
		})
	}
	pubWG.Wait()
	for _, ch := range channels {
		ack := publish(t, b, ch, action("end", "end-"+ch))[0]
		if err := tr.add(ch, ack.Seq, truthRecord{id: "end-" + ch, client: "end"}); err != nil {
			t.Error(err)
		}
		markers[ch].Store(ack.Seq)
	}
	subWG.Wait()
	if t.Failed() {
		return
	}
	tr.seal()

	// History agrees with the acks: all of it, or the last HistorySize when trimming.
	for _, ch := range channels {
		want := tr.sorted[ch]
		var after uint64
		if trimming && len(want) > cfg.HistorySize {
			after = want[len(want)-cfg.HistorySize-1]
			want = want[len(want)-cfg.HistorySize:]
		}
		entries, head := history(t, b, ch, after)
		if got := seqsOf(entries); !slices.Equal(got, want) || head != want[len(want)-1] {
			t.Errorf("%s: History(after %d): got seqs %v and head %d, want %v", ch, after, got, head, want)
		}
		for _, e := range entries {
			if err := checkEntry(e, ch, tr); err != nil {
				t.Errorf("%s: History: %v", ch, err)
			}
		}
	}
	resets, sessions := 0, 0
	for _, ps := range subs {
		for _, ch := range channels {
			n, err := ps.verify(t, b, ch, tr)
			if err != nil {
				t.Errorf("%s (%+v), channel %s: %v", ps.name, ps.opts, ch, err)
			}
			resets += n
			sessions += len(ps.sessions[ch])
		}
	}
	t.Logf("%d subscriber sessions, %d resets", sessions, resets)
}

// propPublish publishes about propPerPublisher actions from client in random batches to
// random channels, re-sending old ids and repeating ids within a batch, and checks each
// ack: a repeat within the batch is a duplicate of its first copy, a re-sent id is a
// duplicate of its last seq (or, only when trimming, new again), anything new gets a seq
// higher than this client's previous one on that channel. New seqs go into tr.
func propPublish(t *testing.T, b broker.Broker, rng *rand.Rand, client string, channels []string, tr *truth, trimming bool) error {
	sent := make(map[string]map[string]uint64) // channel -> id -> last seq
	sentIDs := make(map[string][]string)       // channel -> ids, for picking one to re-send
	last := make(map[string]uint64)
	fresh := 0
	for published := 0; published < propPerPublisher; {
		ch := channels[rng.IntN(len(channels))]
		if sent[ch] == nil {
			sent[ch] = make(map[string]uint64)
		}
		batch := make([]*actionsyncv1.Action, 1+rng.IntN(5))
		for j := range batch {
			var id string
			switch {
			case j > 0 && rng.IntN(6) == 0:
				id = batch[rng.IntN(j)].GetId()
			case len(sentIDs[ch]) > 0 && rng.IntN(5) == 0:
				id = sentIDs[ch][rng.IntN(len(sentIDs[ch]))]
			default:
				id = fmt.Sprintf("%s-%d", client, fresh)
				fresh++
			}
			batch[j] = action(client, id)
		}
		acks, err := b.Publish(t.Context(), ch, batch)
		if err != nil {
			return fmt.Errorf("Publish(%q, %d actions): %w", ch, len(batch), err)
		}
		if len(acks) != len(batch) {
			return fmt.Errorf("Publish(%q): got %d acks for %d actions", ch, len(acks), len(batch))
		}
		first := make(map[string]int)
		for j, ack := range acks {
			id := batch[j].GetId()
			if ack.ID != id {
				return fmt.Errorf("%s ack %d: got id %q, want %q", ch, j, ack.ID, id)
			}
			if f, ok := first[id]; ok {
				if !ack.Duplicate || ack.Seq != acks[f].Seq {
					return fmt.Errorf("%s ack %d: got %+v for a repeat of action %d (seq %d)", ch, j, ack, f, acks[f].Seq)
				}
				continue
			}
			first[id] = j
			if prev, ok := sent[ch][id]; ok {
				if ack.Duplicate {
					if ack.Seq != prev {
						return fmt.Errorf("%s: re-sent %q: got duplicate of seq %d, want %d", ch, id, ack.Seq, prev)
					}
					continue
				}
				if !trimming {
					return fmt.Errorf("%s: re-sent %q (seq %d) accepted as new: %+v", ch, id, prev, ack)
				}
			} else if ack.Duplicate {
				return fmt.Errorf("%s: new id %q acked as a duplicate: %+v", ch, id, ack)
			}
			if ack.Seq <= last[ch] {
				return fmt.Errorf("%s: %q got seq %d after this client's seq %d", ch, id, ack.Seq, last[ch])
			}
			last[ch] = ack.Seq
			if _, ok := sent[ch][id]; !ok {
				sentIDs[ch] = append(sentIDs[ch], id)
			}
			sent[ch][id] = ack.Seq
			if err := tr.add(ch, ack.Seq, truthRecord{id: id, client: client}); err != nil {
				return err
			}
		}
		published += len(batch)
	}
	return nil
}

// run follows every channel, session after session, until it has reached each channel's
// end marker. A session ends when the subscriber chooses to close it (unless steady),
// or when it is cut off as a slow consumer; the next one resumes every channel from the
// last position seen, or sometimes from a random older one.
func (ps *propSubscriber) run(t *testing.T, b broker.Broker, rng *rand.Rand, channels []string, markers map[string]*atomic.Uint64, steady bool) error {
	pos := make(map[string]uint64)
	done := make(map[string]bool)
	deadline := time.Now().Add(propDeadline)
	reached := func(ch string) bool {
		m := markers[ch].Load()
		return m != 0 && pos[ch] >= m
	}
	for first := true; len(done) < len(channels); first = false {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %v: positions %v", propDeadline, pos)
		}
		sub, err := b.Subscribe(ps.opts)
		if err != nil {
			return fmt.Errorf("Subscribe: %w", err)
		}
		current := make(map[string]*propSession)
		cutOff := false
		for _, ch := range channels {
			if done[ch] {
				continue
			}
			after := pos[ch]
			if !first && rng.IntN(4) == 0 {
				after = rng.Uint64N(after + 1)
			}
			if err := sub.Add(t.Context(), ch, broker.Position{AfterSeq: after}); err != nil {
				if errors.Is(err, broker.ErrSlowConsumer) {
					// The channels added first already overflowed the queue.
					cutOff = true
					break
				}
				sub.Close()
				return fmt.Errorf("Add(%q, after %d): %w", ch, after, err)
			}
			sess := &propSession{start: after}
			ps.sessions[ch] = append(ps.sessions[ch], sess)
			current[ch] = sess
			pos[ch] = after
		}
		if cutOff {
			sub.Close()
			continue
		}
		st := newStream(sub, 1+rng.IntN(8))
		st.wait = 20 * time.Millisecond
		budget := 1 + rng.IntN(80)
		for ended := false; !ended; {
			ev, err := st.next()
			switch {
			case errors.Is(err, errTimeout):
				for ch := range current {
					if reached(ch) {
						done[ch] = true
					}
				}
				if len(done) == len(channels) {
					ended = true
				} else if time.Now().After(deadline) {
					sub.Close()
					return fmt.Errorf("waiting for events after %v: positions %v", propDeadline, pos)
				}
				continue
			case errors.Is(err, broker.ErrSlowConsumer):
				ended = true
				continue
			case err != nil:
				sub.Close()
				return fmt.Errorf("Poll: %w", err)
			}
			ch := channelOf(ev)
			sess := current[ch]
			if sess == nil {
				sub.Close()
				return fmt.Errorf("got %s from a channel not added to this subscription", describe(ev))
			}
			sess.events = append(sess.events, ev)
			if ev.Entry != nil {
				pos[ch] = ev.Entry.Seq()
			} else {
				pos[ch] = ev.Control.Seq
			}
			if reached(ch) {
				done[ch] = true
			}
			budget--
			ended = len(done) == len(channels) || (!steady && budget == 0)
			if rng.IntN(40) == 0 { // fall behind now and then
				time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
			}
		}
		sub.Close()
	}
	return nil
}

// verify checks every session of ps on ch against the acks, and returns how many resets
// it saw. In each session: entries come in acked order after the start position with
// none skipped and none twice (skipping only the subscriber's own actions if it opted
// out), each exactly as published; at most one ready, whose seq skips nothing; resets
// only before ready and only when History no longer reaches the position they replace.
// Stitched across sessions, every acked action was delivered or lies in a gap that a
// reset announced.
func (ps *propSubscriber) verify(t *testing.T, b broker.Broker, ch string, tr *truth) (int, error) {
	skip := ""
	if ps.opts.ExcludeOwn {
		skip = ps.opts.ClientID
	}
	covered := make(map[uint64]bool)
	resets := 0
	for n, sess := range ps.sessions[ch] {
		pos, ready := sess.start, false
		for i, ev := range sess.events {
			fail := func(format string, args ...any) (int, error) {
				return resets, fmt.Errorf("session %d (from %d), event %d (%s): %s", n, sess.start, i, describe(ev), fmt.Sprintf(format, args...))
			}
			switch {
			case ev.Entry != nil:
				want, ok := tr.next(ch, pos, skip)
				if !ok || ev.Entry.Seq() != want {
					return fail("want seq %d after %d (0: none): a gap or a duplicate", want, pos)
				}
				if err := checkEntry(ev.Entry, ch, tr); err != nil {
					return fail("%v", err)
				}
				pos = want
				covered[pos] = true
			case ev.Control.Kind == broker.ControlReset:
				resets++
				if ready {
					return fail("reset after ready")
				}
				if ev.Control.Seq < pos {
					return fail("reset to before position %d, which the broker had delivered", pos)
				}
				// Trimming only moves forward, so if History reaches pos now, it did at
				// the reset too.
				if err := historyErr(t, b, ch, pos); !errors.Is(err, broker.ErrTrimmed) {
					return fail("reset from position %d, which History still serves (error %v)", pos, err)
				}
				for seq := pos + 1; seq <= ev.Control.Seq; seq++ {
					covered[seq] = true // announced as skipped
				}
				pos = ev.Control.Seq
			case ev.Control.Kind == broker.ControlReady:
				if ready {
					return fail("second ready")
				}
				ready = true
				if ev.Control.Seq < pos {
					return fail("ready before position %d", pos)
				}
				if next, ok := tr.next(ch, pos, skip); ok && next <= ev.Control.Seq {
					return fail("ready skips seq %d", next)
				}
				pos = ev.Control.Seq
			default:
				return fail("unknown control")
			}
		}
	}
	for _, seq := range tr.sorted[ch] {
		if !covered[seq] && (skip == "" || tr.records[ch][seq].client != skip) {
			return resets, fmt.Errorf("seq %d (id %q) never delivered in any session and in no announced gap", seq, tr.records[ch][seq].id)
		}
	}
	return resets, nil
}

// checkEntry checks that e is, field by field, the action acked at its seq on ch.
func checkEntry(e *broker.Entry, ch string, tr *truth) error {
	rec, ok := tr.records[ch][e.Seq()]
	a := actionOf(e)
	switch {
	case !ok:
		return fmt.Errorf("seq %d was never acked", e.Seq())
	case a.GetId() != rec.id || a.GetClientId() != rec.client:
		return fmt.Errorf("seq %d: got id %q from %q, acked %q from %q", e.Seq(), a.GetId(), a.GetClientId(), rec.id, rec.client)
	case a.GetChannel() != ch || a.GetType() != testType:
		return fmt.Errorf("seq %d: got channel %q, type %q", e.Seq(), a.GetChannel(), a.GetType())
	case !proto.Equal(a.GetPayload(), payloadFor(rec.id)):
		return fmt.Errorf("seq %d: payload %v is not the one published", e.Seq(), a.GetPayload())
	}
	return nil
}
