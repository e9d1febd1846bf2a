package service

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/actionsync/actionsync/auth"
	"github.com/actionsync/actionsync/broker/presence"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/metrics"
)

// DefaultMaxPresenceInfoBytes is the default bound of Presence.info (Limits).
const DefaultMaxPresenceInfoBytes = 256

// initPresence takes the tracker of the options, or makes a single-node one that
// Shutdown closes.
func (s *Service) initPresence() error {
	if s.opts.Presence != nil {
		s.presence = s.opts.Presence
		return nil
	}
	t, err := presence.New(s.opts.PresenceOptions)
	if err != nil {
		return err
	}
	s.presence, s.ownPresence = t, true
	return nil
}

// presence checks the presence part of a subscribe request; clientID is the client id
// the stream subscribes under (on Sync, that of the stream's first subscribe).
func (v *validator) presence(req *actionsyncv1.SubscribeRequest, clientID string) *connect.Error {
	p := req.GetPresence()
	if p == nil {
		return nil
	}
	if clientID == "" {
		return invalid("presence: requires client_id (the member is the client id)")
	}
	return v.presenceInfo(p)
}

// presenceInfo checks Presence.info: its size and that it is JSON.
func (v *validator) presenceInfo(p *actionsyncv1.Presence) *connect.Error {
	if n := proto.Size(p.GetInfo()); n > v.limits.MaxPresenceInfoBytes {
		return invalid("presence.info: %d bytes, limit %d", n, v.limits.MaxPresenceInfoBytes)
	}
	if p.GetInfo() != nil {
		if why := jsonValue(structpb.NewStructValue(p.GetInfo()), 0); why != "" {
			return invalid("presence.info: %s", why)
		}
	}
	return nil
}

// updatePresence checks an UpdatePresence request whose client id is the caller's own.
func (v *validator) updatePresence(req *actionsyncv1.UpdatePresenceRequest) *connect.Error {
	if err := v.channel("channel", req.GetChannel()); err != nil {
		return err
	}
	if req.GetClientId() == "" {
		return invalid("client_id: required (the member to update)")
	}
	if err := clientID("client_id", req.GetClientId()); err != nil {
		return err
	}
	if req.GetPresence() == nil {
		return invalid("presence: required (its info replaces the member's)")
	}
	return v.presenceInfo(req.GetPresence())
}

// joinPresence makes the stream a member of the presence of each channel of req and
// watches it with w; the returned function leaves them all (the grace period starts).
// The snapshot of each channel is queued before the stream's own join.
func (s *Service) joinPresence(ctx context.Context, w *presence.Watcher, req *actionsyncv1.SubscribeRequest, clientID string) func() {
	m := &actionsyncv1.PresenceMember{ClientId: clientID, Info: req.GetPresence().GetInfo()}
	if id := identityFrom(ctx); id != nil {
		m.Subject = id.Subject
	}
	leaves := make([]func(), 0, len(req.GetPositions()))
	for _, p := range req.GetPositions() {
		w.Add(p.GetChannel())
		leaves = append(leaves, s.presence.Join(p.GetChannel(), m))
	}
	return func() {
		for _, leave := range leaves {
			leave()
		}
	}
}

// GetPresence returns a channel's listed members and their count.
func (s *Service) GetPresence(ctx context.Context, req *connect.Request[actionsyncv1.GetPresenceRequest]) (*connect.Response[actionsyncv1.GetPresenceResponse], error) {
	if err := s.validate.channel("channel", req.Msg.GetChannel()); err != nil {
		return nil, err
	}
	if err := authorize(ctx, req.Msg.GetChannel(), auth.RightSubscribe); err != nil {
		return nil, err
	}
	members, count := s.presence.Get(req.Msg.GetChannel())
	return connect.NewResponse(&actionsyncv1.GetPresenceResponse{Members: members, Count: uint32(count)}), nil
}

// UpdatePresence replaces the info of a member the caller holds on a channel; watchers
// get a join with it.
func (s *Service) UpdatePresence(ctx context.Context, req *connect.Request[actionsyncv1.UpdatePresenceRequest]) (*connect.Response[actionsyncv1.UpdatePresenceResponse], error) {
	id := identityFrom(ctx)
	if id != nil {
		// Each update reaches every watcher of the channel, as an action does: it costs
		// a dispatch.
		if err := s.quotas.dispatch(id.Subject); err != nil {
			s.opts.Metrics.RateLimited(metrics.LimitDispatch)
			return nil, err
		}
	}
	clientID, cerr := ownClientID(ctx, req.Msg.GetClientId())
	if cerr != nil {
		return nil, cerr
	}
	req.Msg.ClientId = clientID
	if err := s.validate.updatePresence(req.Msg); err != nil {
		return nil, err
	}
	if err := authorize(ctx, req.Msg.GetChannel(), auth.RightSubscribe); err != nil {
		return nil, err
	}
	m := &actionsyncv1.PresenceMember{ClientId: clientID, Info: req.Msg.GetPresence().GetInfo()}
	if id != nil {
		m.Subject = id.Subject
	}
	if err := s.presence.Update(req.Msg.GetChannel(), m); err != nil {
		return nil, s.connectError(fmt.Errorf("presence: client_id %q on channel %q: %w (subscribe with presence first)", clientID, req.Msg.GetChannel(), err))
	}
	return connect.NewResponse(&actionsyncv1.UpdatePresenceResponse{}), nil
}

// sendPresence sends the presence events queued for the stream, one response each
// (they are few and small).
func (w *writer) sendPresence() error {
	if w.presence == nil {
		return nil
	}
	events := w.presence.Poll(w.presenceEvents[:0])
	w.presenceEvents = events
	defer clear(events)
	for _, ev := range events {
		if err := w.conn.Send(w.msgs.presence(ev)); err != nil {
			return err
		}
	}
	return nil
}

// presenceNotify is the wake-up channel of the stream's presence (nil: none).
func (w *writer) presenceNotify() <-chan struct{} {
	if w.presence == nil {
		return nil
	}
	return w.presence.Notify()
}
