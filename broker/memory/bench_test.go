package memory_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/memory"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// benchWindow is how many actions a benchmark publishes between two drains of every
// queue; the queues hold twice that, so nobody is cut off.
const benchWindow = 64

func BenchmarkFanout_1Subs(b *testing.B)     { benchmarkFanout(b, 1) }
func BenchmarkFanout_100Subs(b *testing.B)   { benchmarkFanout(b, 100) }
func BenchmarkFanout_1000Subs(b *testing.B)  { benchmarkFanout(b, 1000) }
func BenchmarkFanout_10000Subs(b *testing.B) { benchmarkFanout(b, 10000) }

// benchmarkFanout publishes one UPDATE_STAGE_TITLE action (a ~200-byte JSON payload)
// per iteration to a channel with subs live subscribers. A drainer goroutine per CPU
// polls its share of the subscriptions into a reused buffer every benchWindow actions
// and at the end, and the timer stops only once every queue is empty, so the time
// covers publishing, fan-out and delivery.
func benchmarkFanout(b *testing.B, subs int) {
	br := memory.New(memory.Options{QueueSize: 2 * benchWindow, HistorySize: 4 * benchWindow})
	defer br.Close()
	const ch = "board"
	f := newFanout(b, br, ch, subs)
	defer f.stop()
	if got := f.drain(); got != 0 {
		b.Fatalf("drained %d entries before publishing", got)
	}

	payload := stagePayload(b)
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("01J%023d", i) // ULID-sized
	}
	var delivered int64
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		a := &actionsyncv1.Action{Type: "UPDATE_STAGE_TITLE", Payload: payload, Id: ids[i], ClientId: "bench-client"}
		if _, err := br.Publish(b.Context(), ch, []*actionsyncv1.Action{a}); err != nil {
			b.Fatal(err)
		}
		if (i+1)%benchWindow == 0 || i == b.N-1 {
			delivered += f.drain()
		}
	}
	b.StopTimer()
	if err := f.err(); err != nil {
		b.Fatal(err)
	}
	if want := int64(b.N) * int64(subs); delivered != want {
		b.Fatalf("delivered %d entries, want %d", delivered, want)
	}
	b.ReportMetric(float64(delivered)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(delivered), "ns/delivery")
}

// stagePayload returns the payload of a typical UPDATE_STAGE_TITLE action: about 200
// bytes of JSON.
func stagePayload(tb testing.TB) *structpb.Value {
	tb.Helper()
	v, err := structpb.NewValue(map[string]any{
		"boardId": "board-7f3c9a",
		"stageId": "stage-2b81e4",
		"title":   "Ready for review " + strings.Repeat("-", 50),
		"updatedBy": map[string]any{
			"userId": "user-42",
			"name":   "Ada Lovelace",
		},
		"position": 3,
		"archived": false,
	})
	if err != nil {
		tb.Fatal(err)
	}
	if js, err := protojson.Marshal(v); err != nil || len(js) < 150 || len(js) > 300 {
		tb.Fatalf("payload: %d bytes of JSON, %v; want about 200", len(js), err)
	}
	return v
}

// fanout is a set of live subscriptions to one channel and the drainer goroutines that
// empty their queues on demand.
type fanout struct {
	subs     []broker.Subscription
	drainers []*drainer
	wg       sync.WaitGroup // drainers at work on a drain
	exited   sync.WaitGroup // drainer goroutines running
}

// drainer polls its share of the subscriptions into one reused buffer.
type drainer struct {
	subs      []broker.Subscription
	start     chan struct{}
	buf       []broker.Event
	delivered int64
	err       error
}

// newFanout subscribes subs live subscriptions to ch and starts the drainers.
func newFanout(tb testing.TB, br broker.Broker, ch string, subs int) *fanout {
	tb.Helper()
	f := &fanout{subs: make([]broker.Subscription, subs)}
	for i := range f.subs {
		sub, err := br.Subscribe(broker.SubscribeOptions{ClientID: fmt.Sprintf("sub-%d", i)})
		if err != nil {
			tb.Fatal(err)
		}
		if err := sub.Add(tb.Context(), ch, broker.Position{Live: true}); err != nil {
			tb.Fatal(err)
		}
		f.subs[i] = sub
	}
	n := min(runtime.GOMAXPROCS(0), subs)
	for d := range n {
		dr := &drainer{start: make(chan struct{}), buf: make([]broker.Event, 0, 2*benchWindow)}
		for i := d; i < subs; i += n {
			dr.subs = append(dr.subs, f.subs[i])
		}
		f.drainers = append(f.drainers, dr)
		f.exited.Go(func() {
			for range dr.start {
				dr.drainAll()
				f.wg.Done()
			}
		})
	}
	return f
}

// drainAll polls each of its subscriptions until it has nothing left.
func (d *drainer) drainAll() {
	for _, sub := range d.subs {
		for {
			var err error
			d.buf, err = sub.Poll(d.buf[:0], cap(d.buf))
			if err != nil && d.err == nil {
				d.err = err
			}
			if len(d.buf) == 0 {
				break
			}
			for _, ev := range d.buf {
				if ev.Entry != nil {
					d.delivered++
				}
			}
		}
	}
	clear(d.buf[:cap(d.buf)])
}

// drain empties every queue and returns how many entries that delivered.
func (f *fanout) drain() int64 {
	var before int64
	for _, d := range f.drainers {
		before += d.delivered
	}
	f.wg.Add(len(f.drainers))
	for _, d := range f.drainers {
		d.start <- struct{}{}
	}
	f.wg.Wait()
	var after int64
	for _, d := range f.drainers {
		after += d.delivered
	}
	return after - before
}

// err returns the first error a drainer's Poll returned.
func (f *fanout) err() error {
	for _, d := range f.drainers {
		if d.err != nil {
			return d.err
		}
	}
	return nil
}

// stop ends the drainers and closes the subscriptions.
func (f *fanout) stop() {
	for _, d := range f.drainers {
		close(d.start)
	}
	f.exited.Wait()
	for _, sub := range f.subs {
		sub.Close()
	}
}

// TestFanout_AllocsPerDelivery checks that fan-out shares one entry, encoded once, among
// all subscribers: publishing one action to 100 subscribers, and polling it from each
// into a reused buffer, allocates far less than once per delivery, and hardly more than
// publishing it to a single subscriber.
func TestFanout_AllocsPerDelivery(t *testing.T) {
	// Not parallel: AllocsPerRun counts every allocation in the process.
	one := allocsPerPublish(t, 1)
	hundred := allocsPerPublish(t, 100)
	t.Logf("allocations per publish: %.1f with 1 subscriber, %.1f with 100", one, hundred)
	// Encoding the payload's Struct costs a fixed ~25 allocations in protobuf; one
	// allocation per delivery would add 99 between the two runs.
	if extra := hundred - one; extra >= 5 {
		t.Errorf("99 more subscribers cost %.1f more allocations per publish, want fewer than 5", extra)
	}
	if hundred >= 50 {
		t.Errorf("got %.1f allocations per publish to 100 subscribers, want fewer than 50 (0.5 per delivery)", hundred)
	}
}

// allocsPerPublish returns the average allocations of publishing one action to subs live
// subscribers and polling it from each of them into a reused buffer.
func allocsPerPublish(t *testing.T, subs int) float64 {
	t.Helper()
	const (
		runs    = 200
		channel = "allocs"
	)
	br := memory.New(memory.Options{QueueSize: 16})
	defer br.Close()
	f := newFanout(t, br, channel, subs)
	defer f.stop()
	f.drain() // the ready controls

	payload := stagePayload(t)
	actions := make([]*actionsyncv1.Action, runs+1) // AllocsPerRun adds a warm-up run
	for i := range actions {
		actions[i] = &actionsyncv1.Action{Type: "UPDATE_STAGE_TITLE", Payload: payload, Id: fmt.Sprintf("a-%d", i), ClientId: "c"}
	}
	buf := make([]broker.Event, 0, 16)
	var (
		next      int
		delivered int
		firstErr  error
	)
	allocs := testing.AllocsPerRun(runs, func() {
		if _, err := br.Publish(t.Context(), channel, actions[next:next+1]); err != nil && firstErr == nil {
			firstErr = err
		}
		next++
		for _, sub := range f.subs {
			var err error
			buf, err = sub.Poll(buf[:0], 16)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			for _, ev := range buf {
				if ev.Entry != nil {
					delivered++
				}
			}
		}
	})
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if want := (runs + 1) * subs; delivered != want {
		t.Fatalf("%d subscribers: delivered %d entries, want %d", subs, delivered, want)
	}
	return allocs
}
