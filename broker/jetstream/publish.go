package jetstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// maxPublishAttempts bounds how often one Publish retries after losing a race for the
// channel's head to another node.
const maxPublishAttempts = 50

// JetStream's publish headers.
const (
	hdrExpectedLastSubjSeq = "Nats-Expected-Last-Subject-Sequence"
	hdrBatchID             = "Nats-Batch-Id"
	hdrBatchSeq            = "Nats-Batch-Sequence"
	hdrBatchCommit         = "Nats-Batch-Commit"
)

// Publish implements broker.Broker. The actions get the channel's next seqs and are
// published as one atomic batch that JetStream stores only if the channel's last
// message is still the one this node knows; otherwise the node reads what it missed
// (which may make some actions duplicates) and tries again.
func (b *Broker) Publish(ctx context.Context, name string, actions []*actionsyncv1.Action, opts ...broker.PublishOption) ([]broker.Ack, error) {
	o := broker.NewPublishOptions(opts)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	ch, err := b.use(ctx, name)
	if err != nil {
		return nil, err
	}
	defer b.unuse(ch)

	ts := timestamppb.New(b.opts.Now())
	encoded := make([][]byte, len(actions))
	if err := broker.EncodeActions(encoded, name, ts, actions); err != nil {
		return nil, err
	}

	ch.pubMu.Lock()
	defer ch.pubMu.Unlock()
	for attempt := 1; ; attempt++ {
		ch.mu.Lock()
		if ch.stale {
			ch.mu.Unlock()
			return nil, fmt.Errorf("channel %q: stream lost: %w", name, broker.ErrUnavailable)
		}
		b.trimLocked(ch)
		if err := o.CheckSentAfter(name, ch.log.Trimmed(), ch.epoch); err != nil {
			ch.mu.Unlock()
			return nil, err
		}
		acks, dupOf, err := ch.log.Plan(actions)
		head, expect := ch.log.Head(), ch.lastStream
		ch.mu.Unlock()
		if err != nil {
			return nil, err
		}
		var entries []*broker.Entry
		for i, a := range actions {
			if acks[i].Duplicate {
				continue
			}
			a.Seq = head + uint64(len(entries)) + 1
			// A copy of the encoding per attempt: an earlier attempt's bytes may be
			// in NATS's buffers still.
			entries = append(entries, broker.NewEntry(a, broker.AppendSeq(encoded[i][:len(encoded[i]):len(encoded[i])], a.Seq)))
			acks[i] = broker.Ack{ID: a.GetId(), Seq: a.Seq}
		}
		for i := range acks {
			if dupOf != nil && dupOf[i] >= 0 {
				acks[i].Seq = acks[dupOf[i]].Seq
			}
		}
		if len(entries) == 0 {
			return acks, nil
		}
		last, err := b.publishBatch(ctx, ch.subject, entries, expect)
		if isWrongLastSeq(err) && attempt == maxPublishAttempts {
			b.checkStream()
			return nil, fmt.Errorf("channel %q: %d attempts lost the race for the head: %w", name, attempt, broker.ErrUnavailable)
		}
		if isWrongLastSeq(err) {
			// Another node published to the channel first: catch up and try again.
			if err := b.refresh(ctx, ch, fromLeader); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		ch.mu.Lock()
		err = b.appendLocked(ch, entries, last, false)
		ch.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return acks, nil
	}
}

// pubAck is JetStream's answer to a publish or a batch commit.
type pubAck struct {
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Count  int                 `json:"count"`
	Error  *jetstream.APIError `json:"error"`
}

// publishBatch stores entries on subject, all or nothing, provided the subject's last
// message is at stream sequence expect (0: the subject has none). It returns the stream
// sequence of the last entry. One entry is a plain publish; several are an atomic batch:
// the earlier messages are sent without waiting, the commit is a request.
func (b *Broker) publishBatch(ctx context.Context, subject string, entries []*broker.Entry, expect uint64) (uint64, error) {
	conn := b.connContext()
	ctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	defer context.AfterFunc(conn, cancel)()
	var batchID string
	if len(entries) > 1 {
		var id [12]byte
		_, _ = rand.Read(id[:])
		batchID = hex.EncodeToString(id[:])
	}
	var reply *nats.Msg
	for i, e := range entries {
		m := nats.NewMsg(subject)
		m.Data = e.Proto
		if i == 0 {
			// Only the first message of a batch may carry the expectation; it covers
			// the whole batch.
			m.Header.Set(hdrExpectedLastSubjSeq, strconv.FormatUint(expect, 10))
		}
		if batchID != "" {
			m.Header.Set(hdrBatchID, batchID)
			m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		}
		if i < len(entries)-1 {
			if err := b.nc.PublishMsg(m); err != nil {
				// Never committed: JetStream drops the staged messages.
				return 0, b.unavailable("publish batch", err)
			}
			continue
		}
		if batchID != "" {
			m.Header.Set(hdrBatchCommit, "1")
			if b.beforeCommit != nil {
				b.beforeCommit()
			}
		}
		var err error
		if reply, err = b.nc.RequestMsgWithContext(ctx, m); err != nil {
			if conn.Err() != nil {
				// The answer was lost with the connection: the action may or may not be
				// stored. The client re-sends it with the same id (answered duplicate
				// if it was).
				return 0, fmt.Errorf("publish: NATS connection lost before the answer: %w", broker.ErrUnavailable)
			}
			return 0, b.unavailable("publish", err)
		}
	}
	var ack pubAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return 0, fmt.Errorf("publish: bad answer %q: %v: %w", reply.Data, err, broker.ErrUnavailable)
	}
	if ack.Error != nil {
		if isWrongLastSeq(ack.Error) {
			return 0, ack.Error
		}
		return 0, fmt.Errorf("publish: %w: %w", ack.Error, broker.ErrUnavailable)
	}
	if ack.Seq == 0 {
		return 0, fmt.Errorf("publish: answer %q has no sequence: %w", reply.Data, broker.ErrUnavailable)
	}
	return ack.Seq, nil
}

// trimLocked drops entries older than MaxAge from ch's cache. Callers hold ch.mu.
func (b *Broker) trimLocked(ch *channel) {
	if b.opts.MaxAge >= 0 {
		ch.log.TrimBefore(b.opts.Now().Add(-b.opts.MaxAge))
	}
}
