package jetstream

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Direct gets (the stream's AllowDirect) are answered by any replica of the stream, and
// by mirrors that opt in, whichever the NATS server a node is connected to prefers: its
// own. Such a source may be behind the stream: JetStream lets a replica that is catching
// up (its NATS server just restarted) answer once it is 90 % synchronized, and a replica
// that is current may not have applied the last acknowledged message yet. So the reads
// that decide where a channel ends, or that a part of it is gone, ask the stream's
// leader, with the message get API ($JS.API.STREAM.MSG.GET.<stream>), which only the
// leader answers. The bulk of a channel is still read with batched direct gets: what a
// source behind the stream returns is true, it is only short.

// leaderGetTimeout bounds one message get from the leader when the caller's context has
// no deadline.
const leaderGetTimeout = 5 * time.Second

// msgGetRequest is JetStream's message get request. Seq with NextFor asks for the first
// message on subject NextFor at or after Seq; LastFor for the last message on a subject.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// msgGetResponse is JetStream's answer to a msgGetRequest.
type msgGetResponse struct {
	Error   *jetstream.APIError `json:"error"`
	Message *struct {
		Sequence uint64 `json:"seq"`
		Data     []byte `json:"data"`
	} `json:"message"`
}

// leaderGet asks the leader of stream for the message req describes. It returns nil
// and no error when there is none.
func (b *Broker) leaderGet(ctx context.Context, stream string, req msgGetRequest) (*feedMsg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, leaderGetTimeout)
		defer cancel()
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	reply, err := b.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, data)
	if err != nil {
		return nil, err
	}
	var resp msgGetResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("message get: bad answer %q: %w", reply.Data, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, nil
	case resp.Error != nil:
		return nil, resp.Error
	case resp.Message == nil || resp.Message.Sequence == 0:
		return nil, fmt.Errorf("message get: answer %q has no message", reply.Data)
	}
	return &feedMsg{streamSeq: resp.Message.Sequence, data: resp.Message.Data}, nil
}
