package service

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/presence"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// messages builds the non-action responses of one kind of stream.
type messages struct {
	reset     func(*actionsyncv1.Reset) proto.Message
	ready     func(*actionsyncv1.Ready) proto.Message
	snapshot  func(*actionsyncv1.Snapshot) proto.Message
	heartbeat func() proto.Message
	presence  func(*actionsyncv1.PresenceEvent) proto.Message
}

var subscribeMessages = messages{
	reset:     func(r *actionsyncv1.Reset) proto.Message { return &actionsyncv1.SubscribeResponse{Reset_: r} },
	ready:     func(r *actionsyncv1.Ready) proto.Message { return &actionsyncv1.SubscribeResponse{Ready: r} },
	snapshot:  func(r *actionsyncv1.Snapshot) proto.Message { return &actionsyncv1.SubscribeResponse{Snapshot: r} },
	heartbeat: func() proto.Message { return &actionsyncv1.SubscribeResponse{Heartbeat: &actionsyncv1.Heartbeat{}} },
	presence:  func(e *actionsyncv1.PresenceEvent) proto.Message { return &actionsyncv1.SubscribeResponse{Presence: e} },
}

var syncMessages = messages{
	reset:     func(r *actionsyncv1.Reset) proto.Message { return &actionsyncv1.SyncResponse{Reset_: r} },
	ready:     func(r *actionsyncv1.Ready) proto.Message { return &actionsyncv1.SyncResponse{Ready: r} },
	snapshot:  func(r *actionsyncv1.Snapshot) proto.Message { return &actionsyncv1.SyncResponse{Snapshot: r} },
	heartbeat: func() proto.Message { return &actionsyncv1.SyncResponse{Heartbeat: &actionsyncv1.Heartbeat{}} },
	presence:  func(e *actionsyncv1.PresenceEvent) proto.Message { return &actionsyncv1.SyncResponse{Presence: e} },
}

// writer is the one goroutine that sends on a stream. It drains everything the
// subscription has queued into as few responses as the batch limits allow: connect-go
// flushes after every Send, so a Send per action would cost a write per action.
type writer struct {
	s      *Service
	conn   connect.StreamingHandlerConn
	msgs   messages
	sub    broker.Subscription // nil until a Sync stream's first subscribe
	events []broker.Event      // reused Poll buffer
	batch  actionBatch         // reused response

	presence       *presence.Watcher             // nil: the stream has no presence
	presenceEvents []*actionsyncv1.PresenceEvent // reused Poll buffer

	lastSend  time.Time // when the last batch of actions went out
	more      bool      // the last Poll filled a batch: more may be queued
	lastEpoch int64     // activity epoch this stream last counted itself in
	linger    *time.Timer
}

func (s *Service) newWriter(conn connect.StreamingHandlerConn, msgs messages) *writer {
	return &writer{s: s, conn: conn, msgs: msgs, events: make([]broker.Event, 0, 16)}
}

// syncInputs are the extra inputs of a Sync stream's writer; all nil for Subscribe.
type syncInputs struct {
	newSub  <-chan broker.Subscription // the stream's subscription, once it exists
	results <-chan proto.Message       // dispatch answers, in request order
	errc    <-chan error               // the reader's fatal error
	// inflight counts dispatches the reader has taken on and not yet answered.
	inflight *atomic.Int32
}

// run sends until the subscription ends, the client goes away, the Sync reader fails, or
// the service shuts down.
func (w *writer) run(ctx context.Context, in syncInputs) error {
	var beat <-chan time.Time
	sent := func() {}
	if d := w.s.opts.Heartbeat; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		beat, sent = t.C, func() { t.Reset(d) }
	}
	for {
		if err := w.sendPresence(); err != nil {
			return err
		}
		if w.sub != nil {
			if err := w.waitForBatch(ctx); err != nil {
				return err
			}
			events, err := w.sub.Poll(w.events[:0], w.s.opts.MaxBatchActions)
			w.events = events
			if len(events) > 0 {
				w.s.opts.Metrics.Polled(len(events))
				serr := w.send(events)
				clear(events) // don't keep entries alive until the next Poll overwrites them
				if serr != nil {
					return serr
				}
				sent()
				// A busy subscription must not starve dispatch answers, the client going
				// away, or shutdown.
				select {
				case r := <-in.results:
					if err := w.conn.Send(r); err != nil {
						return err
					}
				case err := <-in.errc:
					return err
				case <-ctx.Done():
					return connect.NewError(connect.CodeCanceled, ctx.Err())
				case <-w.s.stopping:
					return w.stop(in)
				default:
				}
				continue
			}
			if err != nil {
				if errors.Is(err, broker.ErrSlowConsumer) {
					w.s.opts.Metrics.SlowConsumer()
				}
				// A failed Sync reader closes the subscription after reporting why it
				// failed: that reason, not the close, is the stream's error.
				select {
				case rerr := <-in.errc:
					return rerr
				default:
				}
				return w.s.connectError(err)
			}
		}
		var notify <-chan struct{}
		if w.sub != nil {
			notify = w.sub.Notify()
		}
		select {
		case <-notify:
		case <-w.presenceNotify():
		case sub := <-in.newSub:
			w.sub, in.newSub = sub, nil
		case r := <-in.results:
			if err := w.conn.Send(r); err != nil {
				return err
			}
			sent()
		case err := <-in.errc:
			return err
		case <-beat:
			if err := w.conn.Send(w.msgs.heartbeat()); err != nil {
				return err
			}
			sent()
		case <-ctx.Done():
			return connect.NewError(connect.CodeCanceled, ctx.Err())
		case <-w.s.stopping:
			return w.stop(in)
		}
	}
}

// waitForBatch delays a stream that sent very recently by the rest of the current fan-out
// round (Service.batchDelay), so that it sends everything queued meanwhile in one
// response: connect-go flushes every Send, and each flush is a write(2).
func (w *writer) waitForBatch(ctx context.Context) error {
	if w.more {
		return nil
	}
	width := 0
	if fw, ok := w.sub.(broker.FanoutWidther); ok {
		width = fw.FanoutWidth()
	}
	d := w.s.batchDelay(time.Now(), w.lastSend, width)
	if d <= 0 {
		return nil
	}
	if w.linger == nil {
		w.linger = time.NewTimer(d)
	} else {
		w.linger.Reset(d)
	}
	select {
	case <-w.linger.C:
		return nil
	case <-ctx.Done():
		return connect.NewError(connect.CodeCanceled, ctx.Err())
	case <-w.s.stopping:
		return nil // the loop notices the shutdown next
	}
}

// stopAnswerWait bounds how long a stopping Sync stream waits for the answer of a
// dispatch that is being applied.
const stopAnswerWait = 5 * time.Second

// stop answers the dispatches that have finished or are being applied (a Sync reader
// applies no new one once the service is stopping), then ends the stream so that the
// client reconnects (to another node) and resumes.
func (w *writer) stop(in syncInputs) error {
	// Dispatches stopped before streams are told to end (Service.StopDispatches): what is
	// queued is all the stream will get here. Send it, so that a subscriber has every
	// action acknowledged before the shutdown (an in-memory server loses them with its
	// history); a stream still replaying resumes on reconnect instead.
	if err := w.drain(time.Now().Add(stopDrainWait)); err != nil {
		return err
	}
	deadline := time.NewTimer(stopAnswerWait)
	defer deadline.Stop()
	for {
		select {
		case r := <-in.results:
			if err := w.conn.Send(r); err != nil {
				return err
			}
			continue
		default:
		}
		if in.inflight == nil || in.inflight.Load() == 0 {
			return connect.NewError(connect.CodeUnavailable, errShuttingDown)
		}
		select {
		case r := <-in.results:
			if err := w.conn.Send(r); err != nil {
				return err
			}
		case <-time.After(time.Millisecond):
		case <-deadline.C:
			return connect.NewError(connect.CodeUnavailable, errShuttingDown)
		}
	}
}

// stopDrainWait bounds how long a stopping stream sends what was queued for it.
const stopDrainWait = 2 * time.Second

// drain sends the events queued for the stream (and whatever of a replay Poll reads
// along), until nothing is left or until deadline.
func (w *writer) drain(deadline time.Time) error {
	for w.sub != nil && time.Now().Before(deadline) {
		events, err := w.sub.Poll(w.events[:0], w.s.opts.MaxBatchActions)
		w.events = events
		if len(events) == 0 {
			return nil
		}
		serr := w.send(events)
		clear(events)
		if serr != nil {
			return serr
		}
		if err != nil {
			return nil
		}
	}
	return nil
}

// send writes events in order: runs of actions as batches bounded by MaxBatchBytes,
// control events as their own responses.
func (w *writer) send(events []broker.Event) error {
	size := 0
	flush := func() error {
		if len(w.batch.entries) == 0 {
			return nil
		}
		err := w.conn.Send(&w.batch)
		if err == nil {
			w.s.opts.Metrics.Sent(len(w.batch.entries), size, w.batch.entries[0].Time())
		}
		clear(w.batch.entries)
		w.batch.entries, size = w.batch.entries[:0], 0
		return err
	}
	actions := 0
	for _, ev := range events {
		if e := ev.Entry; e != nil {
			actions++
			w.batch.entries = append(w.batch.entries, e)
			if size += len(e.Proto); size >= w.s.opts.MaxBatchBytes {
				if err := flush(); err != nil {
					return err
				}
			}
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		var msg proto.Message
		switch c := ev.Control; c.Kind {
		case broker.ControlReset:
			w.s.opts.Metrics.Reset()
			msg = w.msgs.reset(&actionsyncv1.Reset{Channel: c.Channel, HeadSeq: c.Seq, Epoch: c.Epoch})
		case broker.ControlReady:
			msg = w.msgs.ready(&actionsyncv1.Ready{Channel: c.Channel, HeadSeq: c.Seq, Epoch: c.Epoch})
		case broker.ControlSnapshot:
			w.s.opts.Metrics.SnapshotStart()
			msg = w.msgs.snapshot(c.Snapshot)
		default:
			continue
		}
		if err := w.conn.Send(msg); err != nil {
			return err
		}
	}
	if actions > 0 {
		now := time.Now()
		w.lastSend = now
		w.s.activity.sent(now, &w.lastEpoch)
		// A full batch may have left more queued: send it without waiting.
		w.more = actions >= w.s.opts.MaxBatchActions
	}
	return flush()
}
