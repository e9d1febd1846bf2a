package stress

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// The limits of the server that TestStress_AbuseOfLimits runs.
const (
	limChannels  = 40
	limPositions = 8
	limStreams   = 16
	limActions   = 10
	limPayload   = 1024
	limType      = 16
	limHistory   = 100 // --history-size
	limPage      = 50  // --max-history-limit
	limRead      = 64 << 10
)

// TestStress_AbuseOfLimits (scenario 5, guarantee 8 and the resource bounds): a server
// with small limits is pushed at each edge, concurrently and for the whole duration,
// with sizes drawn from the seed: channels created by racing writers past
// --max-channels, subscriptions with N-1, N, N+1 and more positions (Subscribe, and
// Sync in two steps), more streams than --max-streams-per-connection on one connection,
// dispatches with too many actions, a payload or a type one byte too long anywhere in
// the batch, requests past --max-read-bytes, History pages at and past
// --max-history-limit and before the trimmed start. Every refusal has its documented
// code and message, and a refused dispatch changes nothing: its first and last ids, sent
// again alone, are new, not duplicates.
func TestStress_AbuseOfLimits(t *testing.T) {
	s := begin(t)
	args := []string{
		"--max-channels", fmt.Sprint(limChannels), "--max-positions", fmt.Sprint(limPositions),
		"--max-streams-per-connection", fmt.Sprint(limStreams), "--max-dispatch-actions", fmt.Sprint(limActions),
		"--max-payload-bytes", fmt.Sprint(limPayload), "--max-type-bytes", fmt.Sprint(limType),
		"--history-size", fmt.Sprint(limHistory), "--max-history-limit", fmt.Sprint(limPage),
		"--max-read-bytes", fmt.Sprint(limRead),
	}
	srv := startProc(t, "limits", args...)
	ctx, cancel := context.WithTimeout(t.Context(), s.duration+2*time.Minute)
	defer cancel()

	// The first checks race writers past --max-channels; the rest share the channels
	// they left, and never create another.
	channels := raceChannels(ctx, t, s, srv)

	type tally struct{ accepted, refused int }
	var (
		mu      sync.Mutex
		tallies = map[string]*tally{}
		wg      sync.WaitGroup
	)
	record := func(check string, refused bool) {
		mu.Lock()
		defer mu.Unlock()
		tl := tallies[check]
		if tl == nil {
			tl = &tally{}
			tallies[check] = tl
		}
		if refused {
			tl.refused++
		} else {
			tl.accepted++
		}
	}
	checks := []struct {
		name string
		run  func(ctx context.Context, rng *rand.Rand, c actionsyncv1connect.SyncServiceClient, channel string, all []string) (refused bool, err error)
	}{
		{"dispatch: actions per batch", checkBatchSize},
		{"dispatch: payload bytes", checkPayload},
		{"dispatch: type bytes", checkType},
		{"dispatch: request past read limit", checkReadLimit},
		{"subscribe: positions", checkPositions},
		{"sync: positions in two steps", checkSyncPositions},
		{"history: page limit and trimmed start", checkHistory},
	}
	streams := checkStreamsPerConnection(ctx, t, srv, channels) // alone: it counts the server's streams
	start := time.Now()
	var failures atomic.Int64
	for w := range 4 {
		rng := s.rng()
		wg.Go(func() {
			var cs *conns
			for i := 0; time.Since(start) < s.duration && ctx.Err() == nil; i++ {
				// A new connection every 100 checks: the subscription checks end their
				// streams within a second, which --max-resets-per-connection (200 per 10 s)
				// would take for HTTP/2 rapid reset.
				if i%100 == 0 {
					if cs != nil {
						cs.close()
					}
					cs = newConns(t, 0, 0)
				}
				client := cs.sync(srv.url)
				ch := channels[(w*7+i)%len(channels)]
				c := checks[rng.IntN(len(checks))]
				refused, err := c.run(ctx, rng, client, ch, channels)
				if err != nil {
					if failures.Add(1) <= 10 {
						t.Errorf("%s on %q: %v", c.name, ch, err)
					}
					continue
				}
				record(c.name, refused)
			}
		})
	}
	wg.Wait()

	st, err := srv.stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetChannels() != limChannels {
		t.Errorf("channels after the run: got %d, want %d (--max-channels, none created past it)", st.GetChannels(), limChannels)
	}
	if n := srv.count("resets requests in a loop"); n > 0 {
		t.Errorf("the server closed %d connections for resetting requests in a loop", n)
	}
	s.figure("server limits: %s", strings.Join(args, " "))
	s.figure("channels: 8 writers racing over %d names created exactly %d; every other got resource_exhausted and left nothing", 2*limChannels, limChannels)
	s.figure("streams on one connection: %s", streams)
	for _, c := range checks {
		if tl := tallies[c.name]; tl != nil {
			s.figure("%-40s %5d accepted, %5d refused at the edge, each with its code and message", c.name, tl.accepted, tl.refused)
		}
	}
}

// raceChannels has 8 writers dispatch to 2 x limChannels channel names at once; exactly
// limChannels are created, the others refused, and each created channel holds exactly
// what was acknowledged. It returns the channels created.
func raceChannels(ctx context.Context, t *testing.T, s *scenario, srv *proc) []string {
	t.Helper()
	var (
		mu      sync.Mutex
		created = map[string][]string{} // channel -> acked ids
		refused = map[string]bool{}
		wg      sync.WaitGroup
	)
	for w := range 8 {
		rng := s.rng()
		client := newConns(t, 0, 0).sync(srv.url)
		wg.Go(func() {
			for i := range 3 * limChannels {
				ch := fmt.Sprintf("limits:%d", rng.IntN(2*limChannels))
				id := fmt.Sprintf("w%d-%d", w, i)
				_, err := client.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: ch, Actions: []*actionsyncv1.Action{action(id, 10)}}))
				mu.Lock()
				switch {
				case err == nil:
					created[ch] = append(created[ch], id)
				case connect.CodeOf(err) == connect.CodeResourceExhausted && strings.Contains(err.Error(), "too many channels"):
					refused[ch] = true
				default:
					t.Errorf("Dispatch to %q: %v, want ok or resource_exhausted (too many channels)", ch, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(created) != limChannels {
		t.Fatalf("channels created by racing writers: got %d, want %d", len(created), limChannels)
	}
	client := newConns(t, 0, 0).sync(srv.url)
	var out []string
	for ch, ids := range created {
		if refused[ch] {
			t.Errorf("%q was both created and refused as a new channel", ch)
		}
		h, err := readHistory(ctx, client, ch)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != len(ids) {
			t.Errorf("%q: %d actions in History, %d acknowledged", ch, len(h), len(ids))
		}
		out = append(out, ch)
	}
	for ch := range refused {
		if _, ok := created[ch]; ok {
			continue
		}
		// A refused channel was not created: History finds nothing there either.
		if h, err := readHistory(ctx, client, ch); err != nil || len(h) != 0 {
			t.Errorf("History of refused channel %q: %d actions, %v; want none", ch, len(h), err)
		}
	}
	return out
}

// wantRefused checks that err has code and contains frag.
func wantRefused(err error, code connect.Code, frag string) error {
	if err == nil {
		return fmt.Errorf("accepted, want %v %q", code, frag)
	}
	if connect.CodeOf(err) != code || !strings.Contains(err.Error(), frag) {
		return fmt.Errorf("got %v, want %v %q", err, code, frag)
	}
	return nil
}

// dispatchEdge dispatches batch to channel, expecting a refusal with code and frag if
// frag is set; on a refusal it checks that nothing was applied: the batch's first and
// last actions, sent again alone and valid, are new, not duplicates.
func dispatchEdge(ctx context.Context, c actionsyncv1connect.SyncServiceClient, channel string, batch []*actionsyncv1.Action, code connect.Code, frag string) (bool, error) {
	res, err := c.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: channel, Actions: batch}))
	if frag == "" {
		if err != nil {
			return false, fmt.Errorf("batch of %d at the edge refused: %v", len(batch), err)
		}
		if n := len(res.Msg.GetAcks()); n != len(batch) || res.Msg.GetAcks()[0].GetDuplicate() {
			return false, fmt.Errorf("acks %v for a batch of %d new actions", res.Msg.GetAcks(), len(batch))
		}
		return false, nil
	}
	if err := wantRefused(err, code, frag); err != nil {
		return true, err
	}
	probes := []*actionsyncv1.Action{batch[0]}
	if len(batch) > 1 {
		probes = append(probes, batch[len(batch)-1])
	}
	for _, a := range probes {
		probe := &actionsyncv1.Action{Type: "T", Id: a.GetId()}
		res, err = c.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: channel, Actions: []*actionsyncv1.Action{probe}}))
		if err != nil {
			return true, fmt.Errorf("re-sending an id of the refused batch alone: %v", err)
		}
		if res.Msg.GetAcks()[0].GetDuplicate() {
			return true, fmt.Errorf("action %s of the refused batch was applied: its id is a duplicate", a.GetId())
		}
	}
	return true, nil
}

var idSeq atomic.Int64

func newID() string { return fmt.Sprintf("x%d", idSeq.Add(1)) }

func checkBatchSize(ctx context.Context, rng *rand.Rand, c actionsyncv1connect.SyncServiceClient, ch string, _ []string) (bool, error) {
	n := limActions - 1 + rng.IntN(3) // N-1, N, N+1
	if rng.IntN(4) == 0 {
		n = limActions + 1 + rng.IntN(200)
	}
	batch := make([]*actionsyncv1.Action, n)
	for i := range batch {
		batch[i] = &actionsyncv1.Action{Type: "T", Id: newID()}
	}
	if n <= limActions {
		return dispatchEdge(ctx, c, ch, batch, 0, "")
	}
	return dispatchEdge(ctx, c, ch, batch, connect.CodeInvalidArgument, fmt.Sprintf("actions: %d actions, limit %d", n, limActions))
}

// sizedPayload returns a string Value of exactly size bytes in protobuf.
func sizedPayload(size int) *structpb.Value {
	for k := max(0, size-6); ; k++ {
		v := structpb.NewStringValue(strings.Repeat("p", k))
		if proto.Size(v) >= size {
			return v
		}
	}
}

func checkPayload(ctx context.Context, rng *rand.Rand, c actionsyncv1connect.SyncServiceClient, ch string, _ []string) (bool, error) {
	size := limPayload - 1 + rng.IntN(3)
	batch := make([]*actionsyncv1.Action, 1+rng.IntN(limActions))
	for i := range batch {
		batch[i] = &actionsyncv1.Action{Type: "T", Id: newID()}
	}
	at := rng.IntN(len(batch)) // anywhere in the batch: all or nothing
	batch[at].Payload = sizedPayload(size)
	if got := proto.Size(batch[at].Payload); got != size {
		size = got
	}
	if size <= limPayload {
		return dispatchEdge(ctx, c, ch, batch, 0, "")
	}
	return dispatchEdge(ctx, c, ch, batch, connect.CodeInvalidArgument, fmt.Sprintf("actions[%d].payload: %d bytes with meta, limit %d", at, size, limPayload))
}

func checkType(ctx context.Context, rng *rand.Rand, c actionsyncv1connect.SyncServiceClient, ch string, _ []string) (bool, error) {
	n := limType - 1 + rng.IntN(3)
	batch := make([]*actionsyncv1.Action, 1+rng.IntN(limActions))
	for i := range batch {
		batch[i] = &actionsyncv1.Action{Type: "T", Id: newID()}
	}
	at := rng.IntN(len(batch))
	batch[at].Type = strings.Repeat("T", n)
	if n <= limType {
		return dispatchEdge(ctx, c, ch, batch, 0, "")
	}
	return dispatchEdge(ctx, c, ch, batch, connect.CodeInvalidArgument, fmt.Sprintf("actions[%d].type: %d bytes, limit %d", at, n, limType))
}

func checkReadLimit(ctx context.Context, rng *rand.Rand, c actionsyncv1connect.SyncServiceClient, ch string, _ []string) (bool, error) {
	// Ten actions of ~1 KB are within the read limit; past it, a request is refused
	// before it is decoded, however its actions would fare.
	batch := make([]*actionsyncv1.Action, limActions)
	for i := range batch {
		batch[i] = &actionsyncv1.Action{Type: "T", Id: newID(), Payload: sizedPayload(limPayload - 10)}
	}
	if rng.IntN(2) == 0 {
		return dispatchEdge(ctx, c, ch, batch, 0, "")
	}
	big := strings.Repeat("r", limRead+rng.IntN(limRead))
	batch[0].Meta = &structpb.Struct{Fields: map[string]*structpb.Value{"big": structpb.NewStringValue(big)}}
	return dispatchEdge(ctx, c, ch, batch, connect.CodeResourceExhausted, fmt.Sprintf("larger than configured max %d", limRead))
}

// Subscriptions follow the channels that exist (a new one would pass --max-channels);
// past the limit of positions the names do not matter: the count is refused first.
func checkPositions(ctx context.Context, rng *rand.Rand, c actionsyncv1connect.SyncServiceClient, _ string, all []string) (bool, error) {
	n := limPositions - 1 + rng.IntN(3)
	if rng.IntN(4) == 0 {
		n = limPositions + 1 + rng.IntN(100)
	}
	req := &actionsyncv1.SubscribeRequest{}
	for i := range n {
		req.Positions = append(req.Positions, &actionsyncv1.Position{Channel: pick(all, i), Live: true})
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := c.Subscribe(ctx, connect.NewRequest(req))
	if err != nil {
		return false, err
	}
	defer stream.Close()
	readies := 0
	for readies < n && stream.Receive() {
		if stream.Msg().GetReady() != nil {
			readies++
		}
	}
	if n <= limPositions {
		if readies != n {
			return false, fmt.Errorf("%d positions: %d readies, then %v", n, readies, stream.Err())
		}
		return false, nil
	}
	return true, wantRefused(stream.Err(), connect.CodeInvalidArgument, fmt.Sprintf("positions: %d positions, limit %d", n, limPositions))
}

func checkSyncPositions(ctx context.Context, rng *rand.Rand, c actionsyncv1connect.SyncServiceClient, _ string, all []string) (bool, error) {
	total := limPositions - 1 + rng.IntN(3)
	first := 1 + rng.IntN(total-1)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream := c.Sync(ctx)
	defer func() {
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
	}()
	sub := func(from, to int) error {
		req := &actionsyncv1.SubscribeRequest{}
		for i := from; i < to; i++ {
			req.Positions = append(req.Positions, &actionsyncv1.Position{Channel: pick(all, i), Live: true})
		}
		return stream.Send(&actionsyncv1.SyncRequest{Request: &actionsyncv1.SyncRequest_Subscribe{Subscribe: req}})
	}
	_ = sub(0, first)
	_ = sub(first, total)
	readies := 0
	var err error
	for readies < total {
		var m *actionsyncv1.SyncResponse
		if m, err = stream.Receive(); err != nil {
			break
		}
		if m.GetReady() != nil {
			readies++
		}
	}
	if total <= limPositions {
		if readies != total {
			return false, fmt.Errorf("%d+%d positions on Sync: %d readies, then %v", first, total-first, readies, err)
		}
		return false, nil
	}
	return true, wantRefused(err, connect.CodeInvalidArgument, fmt.Sprintf("limit %d", limPositions))
}

func checkHistory(ctx context.Context, rng *rand.Rand, c actionsyncv1connect.SyncServiceClient, ch string, _ []string) (bool, error) {
	// Grow the channel's history past --history-size, so that its start is trimmed.
	var headSeq uint64
	for headSeq < 2*limHistory {
		batch := make([]*actionsyncv1.Action, limActions)
		for i := range batch {
			batch[i] = &actionsyncv1.Action{Type: "T", Id: newID()}
		}
		res, err := c.Dispatch(ctx, connect.NewRequest(&actionsyncv1.DispatchRequest{Channel: ch, Actions: batch}))
		if err != nil {
			return false, err
		}
		headSeq = res.Msg.GetAcks()[limActions-1].GetSeq()
	}
	first := headSeq - limHistory + 1 // the oldest action kept (others dispatch meanwhile: at least this)
	switch rng.IntN(4) {
	case 0: // a page at and past the limit
		limit := uint32(limPage - 1 + rng.IntN(3))
		res, err := c.History(ctx, connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: ch, AfterSeq: headSeq - limPage - 5, Limit: limit}))
		if limit <= limPage {
			if err != nil || uint32(len(res.Msg.GetActions())) != limit {
				return false, fmt.Errorf("History limit %d: %d actions, %v", limit, len(res.Msg.GetActions()), err)
			}
			return false, nil
		}
		return true, wantRefused(err, connect.CodeInvalidArgument, fmt.Sprintf("limit: %d, maximum %d", limit, limPage))
	case 1: // before the trimmed start
		_, err := c.History(ctx, connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: ch, AfterSeq: uint64(rng.IntN(int(first - 1))), Limit: 1}))
		return true, wantRefused(err, connect.CodeFailedPrecondition, "history trimmed")
	case 2: // past the head
		_, err := c.History(ctx, connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: ch, AfterSeq: headSeq + 1000 + uint64(rng.IntN(1000)), Limit: 1}))
		return true, wantRefused(err, connect.CodeOutOfRange, "beyond head")
	default: // a full page from well inside what is kept
		res, err := c.History(ctx, connect.NewRequest(&actionsyncv1.HistoryRequest{Channel: ch, AfterSeq: headSeq - limPage, Limit: limPage}))
		if err != nil {
			return false, fmt.Errorf("History after %d (head %d): %v", headSeq-limPage, headSeq, err)
		}
		if a := res.Msg.GetActions(); len(a) != limPage || a[0].GetSeq() != headSeq-limPage+1 {
			return false, fmt.Errorf("History after %d: %d actions from %v, want %d from seq %d", headSeq-limPage, len(a), a[0], limPage, headSeq-limPage+1)
		}
		return false, nil
	}
}

// pick returns the i-th of channels, or a name past them (only where the request is
// refused before any channel is looked at).
func pick(channels []string, i int) string {
	if i < len(channels) {
		return channels[i]
	}
	return fmt.Sprintf("limits:past:%d", i)
}

// checkStreamsPerConnection opens limStreams + 6 streams on one HTTP/2 connection (a
// client that keeps to the server's SETTINGS, as Go's does when strict): exactly
// limStreams are open at the server, the others wait; ending 6 lets the waiting ones
// in, and none is refused. It returns the figures.
func checkStreamsPerConnection(ctx context.Context, t *testing.T, srv *proc, channels []string) string {
	t.Helper()
	cs := newConns(t, 0, 0)
	// Keep to the server's SETTINGS_MAX_CONCURRENT_STREAMS on one connection instead of
	// dialing more.
	cs.tr.HTTP2 = &http.HTTP2Config{StrictMaxConcurrentRequests: true}
	client := cs.sync(srv.url)
	base, err := srv.stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const extra = 6
	type open struct {
		cancel context.CancelFunc
		ready  chan error
	}
	var streams []open
	for i := range limStreams + extra {
		sctx, cancel := context.WithCancel(ctx)
		o := open{cancel, make(chan error, 1)}
		streams = append(streams, o)
		go func() {
			stream, err := client.Subscribe(sctx, connect.NewRequest(&actionsyncv1.SubscribeRequest{
				Positions: []*actionsyncv1.Position{{Channel: channels[i%len(channels)], Live: true}}}))
			if err == nil && stream.Receive() {
				o.ready <- nil
				for stream.Receive() {
				}
				return
			}
			if err == nil {
				err = stream.Err()
			}
			o.ready <- err
		}()
	}
	waitStreams := func(want uint32) uint32 {
		var got uint32
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			st, err := srv.stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got = st.GetStreams() - base.GetStreams(); got == want {
				time.Sleep(300 * time.Millisecond) // and not more
				st, _ = srv.stats(ctx)
				return st.GetStreams() - base.GetStreams()
			}
		}
		return got
	}
	if got := waitStreams(limStreams); got != limStreams {
		t.Errorf("streams open on one connection: got %d, want %d (--max-streams-per-connection)", got, limStreams)
	}
	for _, o := range streams[:extra] {
		o.cancel()
	}
	for _, o := range streams[extra:] {
		select {
		case err := <-o.ready:
			if err != nil {
				t.Errorf("a waiting stream: %v, want it served once others ended", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("a waiting stream was not served within 10s of others ending")
		}
	}
	for _, o := range streams {
		o.cancel()
	}
	return fmt.Sprintf("%d opened, %d open at the server at once, the %d others waited and were served when %d ended", limStreams+extra, limStreams, extra, extra)
}
