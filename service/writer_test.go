package service

import (
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/metrics"
)

// encodingConn is a stream connection that encodes what is sent, with the service's
// codec, into one reused buffer: what connect-go does with its pooled buffers.
type encodingConn struct {
	connect.StreamingHandlerConn // not used: only Send is called
	codec                        connect.Codec
	buf                          []byte
	sends                        int
}

func (c *encodingConn) Send(m any) error {
	var err error
	switch codec := c.codec.(type) {
	case protoCodec:
		c.buf, err = codec.MarshalAppend(c.buf[:0], m)
	case jsonCodec:
		c.buf, err = codec.MarshalAppend(c.buf[:0], m)
	}
	c.sends++
	return err
}

// TestWriter_sendAllocsPerDelivery: sending a batch of pre-encoded actions allocates
// nothing per action, whatever the codec (the JSON form is computed once per action and
// shared, before the measurement here), with metrics off and on.
func TestWriter_sendAllocsPerDelivery(t *testing.T) {
	events := make([]broker.Event, 200)
	cache := broker.NewJSONCache(0)
	for i := range events {
		a := &actionsyncv1.Action{Type: "UPDATE_STAGE_TITLE", Id: "id", Channel: "c", Seq: uint64(i + 1)}
		p, err := proto.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		e := broker.NewEntry(a, p)
		if _, err := cache.JSON(e); err != nil {
			t.Fatal(err)
		}
		events[i] = broker.Event{Entry: e}
	}
	for _, c := range []struct {
		codec   connect.Codec
		metrics *metrics.Metrics
	}{
		{protoCodec{}, nil}, {jsonCodec{name: "json", cache: cache}, nil},
		{protoCodec{}, metrics.New(nil)}, {jsonCodec{name: "json", cache: cache}, metrics.New(nil)},
	} {
		codec := c.codec
		name := codec.Name()
		if c.metrics != nil {
			name += "_metrics"
		}
		t.Run(name, func(t *testing.T) {
			opts, _, err := Options{Metrics: c.metrics}.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			conn := &encodingConn{codec: codec}
			w := &writer{s: &Service{opts: opts}, conn: conn, msgs: subscribeMessages}
			if err := w.send(events); err != nil { // warm up: buffers reach their size
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(50, func() {
				if err := w.send(events); err != nil {
					t.Fatal(err)
				}
			})
			// One send of 200 actions: a per-delivery allocation would make this >= 200.
			if allocs > 2 {
				t.Errorf("send of %d actions: %.1f allocations, want at most 2 (none per action)", len(events), allocs)
			}
			if conn.sends != 52 {
				t.Errorf("%d Sends for 52 batches, want one each", conn.sends)
			}
		})
	}
}
