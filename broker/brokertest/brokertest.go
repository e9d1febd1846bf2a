// Package brokertest is the conformance suite that every broker.Broker implementation
// must pass. It checks the promises of design.md that live in the broker: one order per
// channel, ack means delivered and stored, idempotent publish, resume with no gap and no
// duplicate at the seam (or an explicit reset), echo with identity, bounded queues that
// cut a slow subscriber off without hurting anyone else, trimming, snapshots, and
// shutdown.
//
// A backend runs it from its own tests:
//
//	func TestBroker_Conformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T, cfg brokertest.Config) broker.Broker {
//			return memory.New(memory.Options{HistorySize: cfg.HistorySize, ...})
//		})
//	}
//
// Every wait is bounded (an event wait by Notify with a timeout), so a broken backend
// fails the suite instead of hanging it; nothing sleeps in place of synchronisation.
//
// The ordering, resume and property subtests compare what subscribers get with the acks
// and with History, so they hold for any backend. Subtests that pin exact numbers assume
// what both backends (memory and jetstream) do: seqs 1, 2, 3... per channel, and a
// history of exactly HistorySize actions. design.md only promises strictly increasing
// seqs; a backend that leaves gaps between them would need those subtests relaxed.
package brokertest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Config is what a subtest asks of the broker it is given. The zero value of each field
// means the backend's default.
type Config struct {
	// HistorySize is how many actions a channel's history keeps (the latest ones); it is
	// also the dedupe window.
	HistorySize int
	// QueueSize is the most actions queued for one subscriber; a subscriber whose queue
	// would overflow is cut off with broker.ErrSlowConsumer.
	QueueSize int
	// MaxAge drops actions older than this from history.
	MaxAge time.Duration
	// Now is the clock the broker must use to stamp actions and to apply MaxAge.
	Now func() time.Time
	// MaxSnapshotBytes is the most bytes of state a snapshot may hold.
	MaxSnapshotBytes int
}

// waitTimeout bounds every wait for an event, so that a broken backend fails a test
// instead of hanging it.
const waitTimeout = 5 * time.Second

// testType is the action type of the actions the suite publishes.
const testType = "BROKERTEST_ACTION"

// Run runs the conformance suite against the brokers that newBroker returns. Every subtest
// asks newBroker for a fresh broker configured with cfg and closes it in t.Cleanup
// (closing it again elsewhere is harmless, Close being idempotent). Subtests run in
// parallel, so newBroker must be safe to call concurrently.
func Run(t *testing.T, newBroker func(t *testing.T, cfg Config) broker.Broker) {
	t.Helper()
	s := suite{newBroker: newBroker}
	tests := []struct {
		name string
		run  func(*testing.T, suite)
	}{
		// publish.go
		{"seq_starts_at_one_and_is_contiguous", testSeqStartsAtOne},
		{"channels_are_independent", testChannelsIndependent},
		{"publish_sets_channel_seq_time", testPublishSetsFields},
		{"entry_encodings_match_action", testEntryEncodings},
		// ordering.go
		{"racing_publishers_one_order", testRacingPublishers},
		// resume.go
		{"resume_at_every_seam_position", testResumeEverySeam},
		{"resume_with_publish_before_first_poll", testResumePublishBeforePoll},
		{"resume_while_publishers_race_the_replay", testResumeRacingReplay},
		{"reset_when_history_trimmed", testResetTrimmed},
		{"reset_when_trimming_overtakes_replay", testResetReplayOvertaken},
		{"reset_when_after_seq_beyond_head", testResetBeyondHead},
		{"live_position_starts_at_head", testLivePosition},
		{"epoch_mismatch_resets", testEpoch},
		// dedupe.go
		{"duplicate_id_same_body", testDuplicateSameBody},
		{"conflicting_id_refuses_whole_batch", testConflictRefusesBatch},
		{"repeated_id_within_batch", testRepeatedIDInBatch},
		{"id_accepted_again_after_trim", testIDAcceptedAfterTrim},
		{"retry_refused_past_dedupe_window", testRetryPastDedupeWindow},
		// subscription.go
		{"exclude_own", testExcludeOwn},
		{"slow_consumer_cut_off", testSlowConsumer},
		{"add_same_channel_twice", testAddDuplicateChannel},
		{"add_several_channels_own_seams", testAddSeveralChannels},
		{"notify_after_publish", testNotifyAfterPublish},
		// trim.go
		{"history_trimmed_by_size", testHistoryTrimmedBySize},
		{"history_trimmed_by_age", testHistoryTrimmedByAge},
		{"history_limit_and_paging", testHistoryPaging},
		// close.go
		{"close_refuses_work", testCloseRefusesWork},
		{"close_ends_open_subscriptions", testCloseEndsSubscriptions},
		{"close_during_publish", testCloseDuringPublish},
		{"subscription_close", testSubscriptionClose},
		// snapshot.go
		{"snapshot_put_and_get", testSnapshotPutGet},
		{"snapshot_refusals_change_nothing", testSnapshotRefusals},
		{"snapshot_size_limit", testSnapshotSizeLimit},
		{"snapshot_replaces_replay_from_zero", testSnapshotFromZero},
		{"snapshot_replaces_reset", testSnapshotReplacesReset},
		{"snapshot_with_racing_publishers", testSnapshotRacingPublishers},
		{"snapshot_holds_history_against_age", testSnapshotHoldsHistory},
		{"snapshot_concurrent_puts_keep_newest", testSnapshotConcurrentPuts},
		{"snapshot_delete", testSnapshotDelete},
		// property.go
		{"property_resume", testPropertyResume},
		{"property_resume_with_trimming", testPropertyResumeTrimming},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, s)
		})
	}
}

// actionOf returns e's action, decoded; one that does not decode shows as an action of
// type "UNDECODABLE: <why>", which every check of the suite then refuses.
func actionOf(e *broker.Entry) *actionsyncv1.Action {
	a, err := e.Decode()
	if err != nil {
		return &actionsyncv1.Action{Type: "UNDECODABLE: " + err.Error()}
	}
	return a
}

// suite carries the backend's constructor to the subtests.
type suite struct {
	newBroker func(t *testing.T, cfg Config) broker.Broker
}

// open returns a fresh broker that is closed when t ends.
func (s suite) open(t *testing.T, cfg Config) broker.Broker {
	t.Helper()
	b := s.newBroker(t, cfg)
	if b == nil {
		t.Fatal("newBroker returned nil")
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// waitOnExit makes sure the goroutines counted by wgs have returned before the rest of
// t's cleanup, even when t stops early with t.Fatal: it closes b, which ends every
// subscription and makes every Publish fail fast, then waits. Register it before
// anything those goroutines use is cleaned up.
func waitOnExit(t *testing.T, b broker.Broker, wgs ...*sync.WaitGroup) {
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, wg := range wgs {
			wg.Wait()
		}
	})
}

// action returns a new action of testType whose payload is derived from id, so two
// actions built here with the same id have the same body.
func action(clientID, id string) *actionsyncv1.Action {
	return &actionsyncv1.Action{Type: testType, Payload: payloadFor(id), Id: id, ClientId: clientID}
}

// payloadFor returns the payload action gives the action with this id.
func payloadFor(id string) *structpb.Value {
	return structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
		"id":  structpb.NewStringValue(id),
		"len": structpb.NewNumberValue(float64(len(id))),
	}})
}

// publish publishes actions and fails the test unless they all get an ack.
func publish(t *testing.T, b broker.Broker, channel string, actions ...*actionsyncv1.Action) []broker.Ack {
	t.Helper()
	acks, err := b.Publish(t.Context(), channel, actions)
	if err != nil {
		t.Fatalf("Publish(%q, %d actions): %v", channel, len(actions), err)
	}
	if len(acks) != len(actions) {
		t.Fatalf("Publish(%q): got %d acks, want %d", channel, len(acks), len(actions))
	}
	for i, ack := range acks {
		if ack.ID != actions[i].GetId() {
			t.Fatalf("Publish(%q): ack %d has id %q, want %q", channel, i, ack.ID, actions[i].GetId())
		}
	}
	return acks
}

// publishN publishes n new actions from clientID to channel, one per call, with ids
// prefix-0 ... prefix-(n-1), and returns their seqs.
func publishN(t *testing.T, b broker.Broker, channel, clientID, prefix string, n int) []uint64 {
	t.Helper()
	seqs := make([]uint64, n)
	for i := range n {
		ack := publish(t, b, channel, action(clientID, fmt.Sprintf("%s-%d", prefix, i)))[0]
		if ack.Duplicate {
			t.Fatalf("Publish(%q, %q): new action acked as duplicate of seq %d", channel, ack.ID, ack.Seq)
		}
		seqs[i] = ack.Seq
	}
	return seqs
}

// publishWithin publishes actions like publish but fails the test if Publish has not
// returned within d: publishing must never block on a subscriber.
func publishWithin(t *testing.T, d time.Duration, b broker.Broker, channel string, actions ...*actionsyncv1.Action) []broker.Ack {
	t.Helper()
	type result struct {
		acks []broker.Ack
		err  error
	}
	done := make(chan result, 1)
	go func() {
		acks, err := b.Publish(t.Context(), channel, actions)
		done <- result{acks, err}
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Publish(%q, %d actions): %v", channel, len(actions), r.err)
		}
		if len(r.acks) != len(actions) {
			t.Fatalf("Publish(%q): got %d acks, want %d", channel, len(r.acks), len(actions))
		}
		return r.acks
	case <-timer.C:
		t.Fatalf("Publish(%q) blocked for %v", channel, d)
		return nil
	}
}

// historyPage is the page size history reads with, small enough to exercise paging.
const historyPage = 64

// history returns every entry of channel after afterSeq, reading page by page, and the
// channel's head. It fails the test on an error or on entries out of order.
func history(t *testing.T, b broker.Broker, channel string, afterSeq uint64) ([]*broker.Entry, uint64) {
	t.Helper()
	entries, head, err := readHistory(t, b, channel, afterSeq)
	if err != nil {
		t.Fatal(err)
	}
	return entries, head
}

// readHistory is history returning its error instead of failing the test; it is safe to
// call from any goroutine.
func readHistory(t *testing.T, b broker.Broker, channel string, afterSeq uint64) ([]*broker.Entry, uint64, error) {
	var all []*broker.Entry
	var head uint64
	for after := afterSeq; ; {
		page, h, err := b.History(t.Context(), channel, after, historyPage)
		if err != nil {
			return nil, 0, fmt.Errorf("History(%q, after %d): %w", channel, after, err)
		}
		if len(page) > historyPage {
			return nil, 0, fmt.Errorf("History(%q, after %d, limit %d): got %d entries", channel, after, historyPage, len(page))
		}
		if head != 0 && h < head {
			return nil, 0, fmt.Errorf("History(%q): head went back from %d to %d", channel, head, h)
		}
		head = h
		for _, e := range page {
			if e.Seq() <= after {
				return nil, 0, fmt.Errorf("History(%q, after %d): got seq %d after seq %d", channel, afterSeq, e.Seq(), after)
			}
			if e.Channel() != channel {
				return nil, 0, fmt.Errorf("History(%q): seq %d has channel %q", channel, e.Seq(), e.Channel())
			}
			after = e.Seq()
			all = append(all, e)
		}
		if len(page) == 0 || after >= head {
			if after > head {
				return nil, 0, fmt.Errorf("History(%q): seq %d is after head %d", channel, after, head)
			}
			return all, head, nil
		}
	}
}

// historyErr returns the error History gives for afterSeq (nil if it succeeds).
func historyErr(t *testing.T, b broker.Broker, channel string, afterSeq uint64) error {
	t.Helper()
	_, _, err := b.History(t.Context(), channel, afterSeq, historyPage)
	return err
}

// wantHistoryErr fails the test unless History for afterSeq fails with target.
func wantHistoryErr(t *testing.T, b broker.Broker, channel string, afterSeq uint64, target error) {
	t.Helper()
	if err := historyErr(t, b, channel, afterSeq); !errors.Is(err, target) {
		t.Errorf("History(%q, after %d): got error %v, want %v", channel, afterSeq, err, target)
	}
}

// seqsOf returns the seqs of entries.
func seqsOf(entries []*broker.Entry) []uint64 {
	seqs := make([]uint64, len(entries))
	for i, e := range entries {
		seqs[i] = e.Seq()
	}
	return seqs
}

// checkAck fails the test unless ack says id got seq (as a duplicate or not).
func checkAck(t *testing.T, ack broker.Ack, id string, seq uint64, duplicate bool) {
	t.Helper()
	want := broker.Ack{ID: id, Seq: seq, Duplicate: duplicate}
	if ack != want {
		t.Errorf("got ack %+v, want %+v", ack, want)
	}
}
