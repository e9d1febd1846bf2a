package service

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// Admin is the AdminService handler: operator actions on a Service's broker. Serve it
// only where operators can reach it (the server's --admin-addr), never beside the
// SyncService clients use: it has no access checks of its own.
type Admin struct {
	s *Service
}

var _ actionsyncv1connect.AdminServiceHandler = (*Admin)(nil)

// Admin returns the AdminService handler for s's broker, with s's validation and errors.
func (s *Service) Admin() *Admin { return &Admin{s: s} }

// Handler returns the path prefix and handler for actionsync.v1.AdminService, with the
// service's codecs, read limit and request logging.
func (a *Admin) Handler() (string, http.Handler) {
	return actionsyncv1connect.NewAdminServiceHandler(a,
		connect.WithReadMaxBytes(a.s.opts.Limits.MaxReadBytes),
		connect.WithInterceptors(&logInterceptor{log: a.s.log}),
	)
}

// DeleteSnapshot removes a channel's snapshot (only the one at seq, if seq is set).
func (a *Admin) DeleteSnapshot(ctx context.Context, req *connect.Request[actionsyncv1.DeleteSnapshotRequest]) (*connect.Response[actionsyncv1.DeleteSnapshotResponse], error) {
	if err := a.s.validate.channel("channel", req.Msg.GetChannel()); err != nil {
		return nil, err
	}
	seq, err := a.s.broker.DeleteSnapshot(ctx, req.Msg.GetChannel(), req.Msg.GetSeq())
	if err != nil {
		return nil, a.s.connectError(err)
	}
	a.s.log.Info("snapshot deleted", "channel", req.Msg.GetChannel(), "seq", seq)
	return connect.NewResponse(&actionsyncv1.DeleteSnapshotResponse{Seq: seq}), nil
}
