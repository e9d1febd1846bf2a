package service

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/metrics"
)

// metricsInterceptor records every RPC's outcome, unary durations and open streams, and
// the refusals of authentication and authorization.
type metricsInterceptor struct {
	m *metrics.Metrics
}

var _ connect.Interceptor = metricsInterceptor{}

// WrapUnary implements connect.Interceptor.
func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	if i.m == nil {
		return next
	}
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		i.m.UnaryDone(req.Spec().Procedure, req.Peer().Protocol, start, err)
		i.authRefusal(err)
		return res, err
	}
}

// WrapStreamingClient implements connect.Interceptor; clients are not measured.
func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	if i.m == nil {
		return next
	}
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		procedure, protocol := conn.Spec().Procedure, conn.Peer().Protocol
		i.m.StreamStarted(procedure, protocol)
		err := next(ctx, conn)
		i.m.StreamDone(procedure, protocol, err)
		i.authRefusal(err)
		return err
	}
}

// authRefusal records err if authentication or authorization refused the request: every
// UNAUTHENTICATED, and the PERMISSION_DENIED of forbidden (not the allow-list's).
func (i metricsInterceptor) authRefusal(err error) {
	var denied authDenied
	if c := connect.CodeOf(err); c == connect.CodeUnauthenticated || c == connect.CodePermissionDenied && errors.As(err, &denied) {
		i.m.AuthRefused(err)
	}
}

// authDenied marks the errors of forbidden, so that metrics can tell them from other
// PERMISSION_DENIED (an allow-list's).
type authDenied struct{ error }

func (d authDenied) Unwrap() error { return d.error }
