package hub_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/hub"
)

// TestTopic_Deliver_SkipsReplayed checks the seam when deliveries lag the reads: a
// subscription whose replay read entries that its topic has not delivered yet gets
// ready at the last seq it read and never gets those entries again, however the
// deliveries fall around its polls; a member that was live all along gets every one.
func TestTopic_Deliver_SkipsReplayed(t *testing.T) {
	t.Parallel()
	for _, maxActions := range []int{1, 2, 3, 5, 10} {
		t.Run(fmt.Sprintf("max_actions_%d", maxActions), func(t *testing.T) {
			t.Parallel()
			h, src := newHub(t, hub.Options{})
			live := subscribe(t, h, broker.SubscribeOptions{})
			add(t, live, "ch", broker.Position{})
			if got := poll(t, live, 100); got != "ready@0" {
				t.Fatalf("live: got %q, want ready@0", got)
			}
			src.store("ch", "writer", 5) // readable, not delivered
			replaying := subscribe(t, h, broker.SubscribeOptions{})
			add(t, replaying, "ch", broker.Position{})

			// Each Poll reads ahead; one more entry is delivered after each Poll.
			var got []string
			delivered := uint64(0)
			for !strings.Contains(strings.Join(got, " "), "ready") {
				if len(got) > 10 {
					t.Fatalf("no ready after %d polls: %q", len(got), got)
				}
				got = append(got, poll(t, replaying, maxActions))
				if delivered < 5 {
					delivered++
					src.deliver(t, "ch", delivered, delivered, "writer")
				}
			}
			// The rest, with new entries, in one delivery that straddles the seam.
			src.store("ch", "writer", 2)
			src.deliver(t, "ch", delivered+1, 7, "writer")
			got = append(got, poll(t, replaying, 100))

			if got, want := join(got...), "1 2 3 4 5 ready@5 6 7"; got != want {
				t.Errorf("replaying: got %q, want %q", got, want)
			}
			if got, want := poll(t, live, 100), "1 2 3 4 5 6 7"; got != want {
				t.Errorf("live: got %q, want %q", got, want)
			}
		})
	}
}

// TestSubscription_Add_ReadyAtLastReplayed checks that ready carries the last seq the
// replay read, from every position, while the topic has delivered less than that.
func TestSubscription_Add_ReadyAtLastReplayed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts broker.SubscribeOptions
		pos  broker.Position
		want string // after 6 is delivered
	}{
		{"from_zero", broker.SubscribeOptions{}, broker.Position{}, "1 2 3 4 5 ready@5 6"},
		{"from_middle", broker.SubscribeOptions{}, broker.Position{AfterSeq: 3}, "4 5 ready@5 6"},
		{"from_delivered", broker.SubscribeOptions{}, broker.Position{AfterSeq: 2}, "3 4 5 ready@5 6"},
		{"at_head", broker.SubscribeOptions{}, broker.Position{AfterSeq: 5}, "ready@5 6"},
		{"beyond_head", broker.SubscribeOptions{}, broker.Position{AfterSeq: 9}, "reset@5 ready@5 6"},
		// The replay read 4 and 5 without passing them on: ready still says 5, and their
		// late delivery is skipped.
		{"exclude_own_at_head", broker.SubscribeOptions{ClientID: "me", ExcludeOwn: true}, broker.Position{}, "1 2 3 ready@5 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, src := newHub(t, hub.Options{})
			first := subscribe(t, h, broker.SubscribeOptions{})
			add(t, first, "ch", broker.Position{}) // opens the topic at 0
			src.store("ch", "writer", 3)
			src.store("ch", "me", 2)
			src.deliver(t, "ch", 1, 2, "writer") // the topic lags: 3..5 readable, not delivered
			sub := subscribe(t, h, tt.opts)
			add(t, sub, "ch", tt.pos)
			got := poll(t, sub, 100)
			src.deliver(t, "ch", 3, 3, "writer")
			src.deliver(t, "ch", 4, 5, "me")
			src.store("ch", "writer", 1)
			src.deliver(t, "ch", 6, 6, "writer")
			if got := join(got, poll(t, sub, 100)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSubscription_Add_LiveStartsWithReady checks that a live position's first event is
// ready at the head as Read sees it, not at the topic's last delivery, with no replay
// and no reset, whatever AfterSeq says; the deliveries up to that head are skipped.
func TestSubscription_Add_LiveStartsWithReady(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		openFirst bool // another subscription opened the topic before 1..5 were stored
		after     uint64
	}{
		{"new_topic", false, 0},
		{"lagging_topic", true, 0},
		{"lagging_topic_after_beyond_head", true, 99},
		{"lagging_topic_after_inside_history", true, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, src := newHub(t, hub.Options{})
			if tt.openFirst {
				add(t, subscribe(t, h, broker.SubscribeOptions{}), "ch", broker.Position{})
			}
			src.store("ch", "writer", 5)
			if tt.openFirst {
				src.deliver(t, "ch", 1, 3, "writer") // the topic has delivered up to 3
			}
			sub := subscribe(t, h, broker.SubscribeOptions{})
			add(t, sub, "ch", broker.Position{Live: true, AfterSeq: tt.after})
			got := poll(t, sub, 100)
			if tt.openFirst {
				src.deliver(t, "ch", 4, 5, "writer")
			}
			src.store("ch", "writer", 1)
			src.deliver(t, "ch", 6, 6, "writer")
			if got, want := join(got, poll(t, sub, 100)), "ready@5 6"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}
