package service

import (
	"context"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/auth"
	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// PutSnapshot stores a client-built snapshot of a channel's state at a seq, if it is
// newer than the one held, for a seq the channel has, in its epoch, within the size
// limit; otherwise it changes nothing and says why (service/errors.go).
func (s *Service) PutSnapshot(ctx context.Context, req *connect.Request[actionsyncv1.PutSnapshotRequest]) (*connect.Response[actionsyncv1.PutSnapshotResponse], error) {
	if err := s.beginWrite(); err != nil {
		return nil, err
	}
	defer s.dispatches.Done()
	clientID, cerr := ownClientID(ctx, req.Msg.GetClientId())
	if cerr != nil {
		return nil, cerr
	}
	req.Msg.ClientId = clientID
	if err := s.validate.putSnapshot(req.Msg); err != nil {
		return nil, err
	}
	if err := authorize(ctx, req.Msg.GetChannel(), auth.RightPublish); err != nil {
		return nil, err
	}
	snap := &actionsyncv1.Snapshot{
		Channel: req.Msg.GetChannel(), Seq: req.Msg.GetSeq(), Epoch: req.Msg.GetEpoch(),
		Version: req.Msg.GetVersion(), State: req.Msg.GetState(), ClientId: req.Msg.GetClientId(),
	}
	if err := s.broker.PutSnapshot(ctx, snap); err != nil {
		return nil, s.connectError(err)
	}
	return connect.NewResponse(&actionsyncv1.PutSnapshotResponse{Snapshot: broker.WithoutState(snap)}), nil
}

// GetSnapshot returns a channel's snapshot; NOT_FOUND if it holds none.
func (s *Service) GetSnapshot(ctx context.Context, req *connect.Request[actionsyncv1.GetSnapshotRequest]) (*connect.Response[actionsyncv1.GetSnapshotResponse], error) {
	if err := s.validate.channel("channel", req.Msg.GetChannel()); err != nil {
		return nil, err
	}
	if err := authorize(ctx, req.Msg.GetChannel(), auth.RightHistory); err != nil {
		return nil, err
	}
	snap, err := s.broker.Snapshot(ctx, req.Msg.GetChannel())
	if err != nil {
		return nil, s.connectError(err)
	}
	return connect.NewResponse(&actionsyncv1.GetSnapshotResponse{Snapshot: snap}), nil
}
