package service_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/service"
)

// propertySeed returns the seed of randomized tests: SERVICETEST_SEED if set, else the clock.
func propertySeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SERVICETEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SERVICETEST_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (rerun with SERVICETEST_SEED=%d)", seed, seed)
	return seed
}

// Racing dispatchers publish to several channels while subscribers cut their streams at
// random points and resume after the last seq they applied. Every subscriber's stitched
// view of every channel must equal the channel's history: no gap, no duplicate, same order.
func TestService_Subscribe_resumeProperty(t *testing.T) {
	t.Parallel()
	seed := propertySeed(t)
	e := newEnv(t, envConfig{svc: service.Options{Heartbeat: 20 * time.Millisecond}})
	channels := []string{"p0", "p1", "p2"}
	const (
		dispatchers = 4
		subscribers = 4
		dispatches  = 50 // per dispatcher
	)

	var heads map[string]uint64 // final heads, set before done is closed
	done := make(chan struct{})

	views := make([]map[string][]*actionsyncv1.Action, subscribers)
	streams := make([]int, subscribers)
	var subs sync.WaitGroup
	for i := range subscribers {
		rng := rand.New(rand.NewPCG(seed, uint64(100+i)))
		p, h2 := protocols[i%len(protocols)], i%3 != 2
		client := e.client(p, h2)
		views[i] = map[string][]*actionsyncv1.Action{}
		subs.Go(func() { streams[i] = resumingSubscriber(t, rng, client, channels, views[i], done, &heads) })
	}

	var pubs sync.WaitGroup
	for d := range dispatchers {
		rng := rand.New(rand.NewPCG(seed, uint64(d)))
		client := e.client(protocols[(d+1)%len(protocols)], d%2 == 0)
		pubs.Go(func() {
			for n := range dispatches {
				req := &actionsyncv1.DispatchRequest{Channel: channels[rng.IntN(len(channels))], ClientId: fmt.Sprintf("d%d", d)}
				for k := range 1 + rng.IntN(5) {
					req.Actions = append(req.Actions, act("STEP", fmt.Sprintf("d%d-%d-%d", d, n, k), map[string]any{"d": float64(d), "n": float64(n)}))
				}
				res, err := client.Dispatch(rpcCtx(t), connect.NewRequest(req))
				if err != nil {
					t.Errorf("dispatcher %d: %v", d, err)
					return
				}
				if rng.IntN(4) == 0 { // an offline client replaying: nothing is published twice
					again, err := client.Dispatch(rpcCtx(t), connect.NewRequest(req))
					if err != nil {
						t.Errorf("dispatcher %d retry: %v", d, err)
						return
					}
					for i, a := range again.Msg.GetAcks() {
						if first := res.Msg.GetAcks()[i]; !a.GetDuplicate() || a.GetSeq() != first.GetSeq() {
							t.Errorf("dispatcher %d retry ack %d: got %v, want duplicate of %v", d, i, a, first)
						}
					}
				}
			}
		})
	}
	pubs.Wait()
	final := map[string]uint64{}
	for _, ch := range channels {
		final[ch] = e.head(t, ch)
	}
	heads = final
	close(done)
	subs.Wait()

	total := 0
	for _, ch := range channels {
		want := e.history(t, ch)
		total += len(want)
		for i, v := range views {
			if diff := cmp.Diff(want, v[ch], protocmp.Transform()); diff != "" {
				t.Errorf("subscriber %d, channel %s: stitched view differs from History (-history +view):\n%s", i, ch, diff)
			}
		}
	}
	t.Logf("%d actions on %d channels; streams per subscriber: %v", total, len(channels), streams)
}

// resumingSubscriber follows channels, cutting its stream at random points (sometimes in
// the middle of a batch) and resuming after the last seq it applied, until it has reached
// the final heads.
func resumingSubscriber(t *testing.T, rng *rand.Rand, client actionsyncv1connect.SyncServiceClient, channels []string,
	view map[string][]*actionsyncv1.Action, done <-chan struct{}, heads *map[string]uint64,
) (streams int) {
	last := map[string]uint64{}
	caughtUp := func() bool {
		select {
		case <-done:
		default:
			return false
		}
		for ch, h := range *heads {
			if last[ch] != h {
				return false
			}
		}
		return true
	}
	for ; !caughtUp(); streams++ {
		if streams == 2000 {
			t.Errorf("subscriber: still not caught up after %d streams: at %v", streams, last)
			return streams
		}
		req := &actionsyncv1.SubscribeRequest{}
		for _, ch := range channels {
			req.Positions = append(req.Positions, &actionsyncv1.Position{Channel: ch, AfterSeq: last[ch]})
		}
		ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
		s, err := client.Subscribe(ctx, connect.NewRequest(req))
		if err != nil {
			cancel()
			t.Errorf("Subscribe: %v", err)
			return streams
		}
		cut := false
		for budget := rng.IntN(6); !cut && !caughtUp() && s.Receive(); budget-- {
			m := s.Msg()
			if m.GetReset_() != nil {
				t.Errorf("unexpected reset %v (resumed at %v)", m.GetReset_(), last)
			}
			if r := m.GetReady(); r != nil && r.GetHeadSeq() < last[r.GetChannel()] {
				t.Errorf("ready %v is before the resume position %d", r, last[r.GetChannel()])
			}
			actions := m.GetActions()
			if budget <= 0 && len(actions) > 0 { // cut here, maybe mid-batch
				actions, cut = actions[:rng.IntN(len(actions)+1)], true
			}
			for _, a := range actions {
				ch := a.GetChannel()
				if a.GetSeq() <= last[ch] {
					t.Errorf("channel %s: got seq %d after %d: duplicate or out of order", ch, a.GetSeq(), last[ch])
				}
				view[ch] = append(view[ch], a)
				last[ch] = a.GetSeq()
			}
		}
		if !cut && !caughtUp() {
			t.Errorf("stream ended by itself: %v", s.Err())
		}
		cancel()
		_ = s.Close()
		if t.Failed() {
			return streams
		}
	}
	return streams
}
