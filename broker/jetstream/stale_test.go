package jetstream_test

import (
	"fmt"
	"testing"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/actionsync/actionsync/broker/jetstream"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestBroker_LoadWithStaleDirectGets: direct gets may be answered by a source that is
// behind the stream: a replica catching up after its NATS server restarted (JetStream
// lets a replica answer once it is 90 % synchronized), or a mirror that serves direct
// gets. Here a mirror that holds none of the channels' messages joins the direct-get
// queue group, so about half of the direct gets a node sends are answered "nothing
// there". A node loading the channels must still see every action from seq 1 and
// publish after the true head: the stream's leader has the last word.
func TestBroker_LoadWithStaleDirectGets(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	opts := jetstream.Options{Stream: "STALE", SubjectPrefix: "stale", HistorySize: 5000}
	a := node(t, srv, opts)
	const channels, total = 4, 2100 // more than two batched direct gets per channel
	for c := range channels {
		ch := fmt.Sprintf("ch%d", c)
		for i := 0; i < total; i += 100 {
			batch := make([]*actionsyncv1.Action, 100)
			for k := range batch {
				batch[k] = act("a", fmt.Sprintf("%s-%d", ch, i+k))
			}
			if _, err := a.Publish(t.Context(), ch, batch); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The mirror holds channel "side" only. It joins the direct-get queue group once it
	// has caught up with what it mirrors, so "side" gets one action.
	if _, err := a.Publish(t.Context(), "side", []*actionsyncv1.Action{act("a", "side-0")}); err != nil {
		t.Fatal(err)
	}
	js, err := natsjs.New(connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	mirror, err := js.CreateStream(t.Context(), natsjs.StreamConfig{
		Name:         "STALE_MIRROR",
		Mirror:       &natsjs.StreamSource{Name: "STALE", FilterSubject: jetstream.SubjectOf(opts, "side")},
		MirrorDirect: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the mirror to hold channel side", func() bool {
		info, err := mirror.Info(t.Context())
		return err == nil && info.State.Msgs == 1
	})
	for round := range 4 {
		b := node(t, srv, opts)
		for c := range channels {
			ch := fmt.Sprintf("ch%d", c)
			want := total
			if c == 0 {
				want += round // each round publishes one more to ch0
			}
			got := allHistory(t, b, ch)
			if len(got) != want || got[0].Seq() != 1 || got[len(got)-1].Seq() != uint64(want) {
				first, last := uint64(0), uint64(0)
				if len(got) > 0 {
					first, last = got[0].Seq(), got[len(got)-1].Seq()
				}
				t.Fatalf("round %d, %s: loaded %d actions, seqs %d..%d; want %d, 1..%d", round, ch, len(got), first, last, want, want)
			}
			for i, e := range got[:total] {
				if want := fmt.Sprintf("%s-%d", ch, i); e.ID() != want {
					t.Fatalf("round %d, %s: entry %d has id %q, want %q", round, ch, i, e.ID(), want)
				}
			}
		}
		// The loading node publishes after the true head, at once.
		acks, err := b.Publish(t.Context(), "ch0", []*actionsyncv1.Action{act("b", fmt.Sprintf("b-%d", round))})
		if err != nil || acks[0].Seq != uint64(total+1+round) {
			t.Fatalf("round %d: publish on the loading node: %+v, %v; want seq %d", round, acks, err, total+1+round)
		}
	}
}
