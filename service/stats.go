package service

import (
	"context"
	"runtime"
	"runtime/metrics"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Limits of GetStats's channel list.
const (
	defaultStatsChannels = 100
	maxStatsChannels     = 1000
	maxStatsPrefixBytes  = 256
)

// AdminConfig configures the AdminService: what GetStats reports about the server
// around the service, and the token it requires.
type AdminConfig struct {
	Version string      // the server's version
	Broker  string      // "memory", "jetstream" or "jetstream (--data-dir)"
	Started time.Time   // when the process started
	Healthy func() bool // whether the server is SERVING (nil: always)
	// Token, if set, is required of every AdminService call as "Authorization: Bearer
	// <token>" (UNAUTHENTICATED otherwise).
	Token string
}

// GetStats reports the server's figures and its busiest channels.
func (a *Admin) GetStats(ctx context.Context, req *connect.Request[actionsyncv1.GetStatsRequest]) (*connect.Response[actionsyncv1.GetStatsResponse], error) {
	limit := int(req.Msg.GetLimit())
	switch {
	case limit == 0:
		limit = defaultStatsChannels
	case limit > maxStatsChannels:
		return nil, invalid("limit: %d, maximum %d", limit, maxStatsChannels)
	}
	if n := len(req.Msg.GetChannelPrefix()); n > maxStatsPrefixBytes {
		return nil, invalid("channel_prefix: %d bytes, limit %d", n, maxStatsPrefixBytes)
	}
	srv := &actionsyncv1.ServerStats{
		Version:    a.info.Version,
		Broker:     a.info.Broker,
		Available:  a.info.Healthy == nil || a.info.Healthy(),
		Streams:    uint32(a.s.openStreams.Load()),
		Goroutines: uint32(runtime.NumGoroutine()),
	}
	if !a.info.Started.IsZero() {
		srv.Started = timestamppb.New(a.info.Started)
	}
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}
	metrics.Read(samples)
	srv.HeapBytes, srv.MemoryBytes = samples[0].Value.Uint64(), samples[1].Value.Uint64()
	if sr, ok := a.s.broker.(broker.StatsReporter); ok {
		st := sr.Stats()
		srv.Channels, srv.Subscriptions = uint32(st.Channels), uint32(st.Subscriptions)
	}
	res := &actionsyncv1.GetStatsResponse{Server: srv}
	if cl, ok := a.s.broker.(broker.ChannelLister); ok {
		list, matched := cl.ListChannels(req.Msg.GetChannelPrefix(), limit)
		res.ChannelsMatched = uint32(matched)
		for _, c := range list {
			res.Channels = append(res.Channels, &actionsyncv1.ChannelStats{
				Channel: c.Channel, Subscribers: uint32(c.Subscribers), Epoch: c.Epoch, HeadSeq: c.HeadSeq, FirstSeq: c.FirstSeq,
				HistoryActions: uint32(c.Actions), HistoryBytes: uint64(c.HistoryBytes), SnapshotSeq: c.SnapshotSeq,
			})
		}
	}
	return connect.NewResponse(res), nil
}
