package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/presence"
)

// errShuttingDown ends streams when the server shuts down: clients reconnect and resume.
var errShuttingDown = errors.New("server shutting down; reconnect and resume from your last seq")

// connectError is the one place broker errors become Connect codes. Failures of the
// broker itself (unavailable, internal) are counted in the metrics.
func (s *Service) connectError(err error) *connect.Error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	code := connect.CodeInternal
	switch {
	case errors.Is(err, broker.ErrClosed):
		return connect.NewError(connect.CodeUnavailable, errShuttingDown)
	case errors.Is(err, broker.ErrUnavailable):
		ce := connect.NewError(connect.CodeUnavailable,
			fmt.Errorf("%w; retry, and resume streams from the last seq you applied", err))
		s.opts.Metrics.BrokerError(ce)
		return ce
	case errors.Is(err, broker.ErrSlowConsumer):
		return connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("subscriber fell behind (%w); resume from the last seq you applied", err))
	case errors.Is(err, broker.ErrConflict):
		code = connect.CodeAlreadyExists
	case errors.Is(err, broker.ErrNoSnapshot), errors.Is(err, presence.ErrNotMember):
		code = connect.CodeNotFound
	case errors.Is(err, broker.ErrStaleSnapshot):
		code = connect.CodeAlreadyExists
	case errors.Is(err, broker.ErrEpochMismatch), errors.Is(err, broker.ErrSnapshotChanged), errors.Is(err, broker.ErrDedupeWindow):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, broker.ErrSnapshotTooLarge):
		code = connect.CodeInvalidArgument
	case errors.Is(err, broker.ErrTrimmed):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, broker.ErrBeyondHead):
		code = connect.CodeOutOfRange
	case errors.Is(err, broker.ErrTooManyChannels):
		code = connect.CodeResourceExhausted
	case errors.Is(err, broker.ErrDuplicateChannel):
		code = connect.CodeInvalidArgument
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	default:
		s.log.Error("internal error", slog.Any("err", err))
		ce := connect.NewError(code, errors.New("internal error"))
		s.opts.Metrics.BrokerError(ce)
		return ce
	}
	return connect.NewError(code, err)
}
