package service

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// Admin is the AdminService handler: operator actions on a Service's broker. Serve it
// only where operators can reach it (the server's --admin-addr), never beside the
// SyncService clients use: it has no access checks of its own.
type Admin struct {
	s    *Service
	info AdminConfig
}

var _ actionsyncv1connect.AdminServiceHandler = (*Admin)(nil)

// Admin returns the AdminService handler for s's broker, with s's validation and errors;
// info is what GetStats reports about the server.
func (s *Service) Admin(info AdminConfig) *Admin { return &Admin{s: s, info: info} }

// Handler returns the path prefix and handler for actionsync.v1.AdminService, with the
// service's codecs, read limit and request logging.
func (a *Admin) Handler() (string, http.Handler) {
	return actionsyncv1connect.NewAdminServiceHandler(a,
		connect.WithReadMaxBytes(a.s.opts.Limits.MaxReadBytes),
		connect.WithInterceptors(&logInterceptor{log: a.s.log}, adminTokenInterceptor{token: a.info.Token}),
	)
}

// adminTokenInterceptor requires the admin token, when there is one.
type adminTokenInterceptor struct{ token string }

func (i adminTokenInterceptor) check(h http.Header) error {
	if i.token == "" {
		return nil
	}
	got, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(i.token)) != 1 {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("authorization: want \"Bearer <the admin token>\" (--admin-token-file)"))
	}
	return nil
}

// WrapUnary implements connect.Interceptor.
func (i adminTokenInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := i.check(req.Header()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

// WrapStreamingClient implements connect.Interceptor.
func (i adminTokenInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (i adminTokenInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := i.check(conn.RequestHeader()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
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
