package service

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"
)

// logInterceptor writes one log line per finished RPC: procedure, protocol, peer,
// duration, outcome, and for streams the messages and actions sent.
type logInterceptor struct {
	log *slog.Logger
}

var _ connect.Interceptor = (*logInterceptor)(nil)

// WrapUnary implements connect.Interceptor.
func (l *logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		l.done(ctx, req.Spec().Procedure, req.Peer(), start, err)
		return res, err
	}
}

// WrapStreamingClient implements connect.Interceptor; clients are not logged.
func (l *logInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (l *logInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		c := &countingConn{StreamingHandlerConn: conn}
		err := next(ctx, c)
		l.done(ctx, conn.Spec().Procedure, conn.Peer(), start, err,
			slog.Int("messages", c.messages), slog.Int("actions", c.actions))
		return err
	}
}

func (l *logInterceptor) done(ctx context.Context, procedure string, peer connect.Peer, start time.Time, err error, attrs ...slog.Attr) {
	level, code := slog.LevelInfo, "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
		switch connect.CodeOf(err) {
		case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
			level = slog.LevelError
		}
	}
	attrs = append([]slog.Attr{
		slog.String("procedure", procedure),
		slog.String("protocol", peer.Protocol),
		slog.String("peer", peer.Addr),
		slog.Duration("duration", time.Since(start)),
		slog.String("code", code),
	}, attrs...)
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	l.log.LogAttrs(ctx, level, "rpc", attrs...)
}

// countingConn counts what a stream sends.
type countingConn struct {
	connect.StreamingHandlerConn
	messages, actions int
}

// Send implements connect.StreamingHandlerConn.
func (c *countingConn) Send(m any) error {
	c.messages++
	if b, ok := m.(*actionBatch); ok {
		c.actions += len(b.entries)
	}
	return c.StreamingHandlerConn.Send(m)
}
