package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/auth"
)

// Authenticator verifies a bearer token (without the "Bearer " prefix) and returns who
// sent it, or an error wrapping auth.ErrUnauthenticated. *auth.Verifier is one.
type Authenticator interface {
	Verify(token string) (*auth.Identity, error)
}

// identityKey is the context key of the request's identity.
type identityKey struct{}

// identityFrom returns the identity the auth interceptor put in ctx: nil when auth is
// off.
func identityFrom(ctx context.Context) *auth.Identity {
	id, _ := ctx.Value(identityKey{}).(*auth.Identity)
	return id
}

// errTokenExpired is the cause of a stream's context when its token expires.
var errTokenExpired = errors.New("token expired")

// authInterceptor authenticates every RPC from its Authorization header, in one place,
// and puts the identity in the context for the handlers' rights checks. A stream ends
// with UNAUTHENTICATED once its token has been expired for grace.
type authInterceptor struct {
	auth  Authenticator
	grace time.Duration
}

var _ connect.Interceptor = (*authInterceptor)(nil)

// authenticate verifies the bearer token of header.
func (a *authInterceptor) authenticate(ctx context.Context, header string) (context.Context, *auth.Identity, *connect.Error) {
	scheme, token, _ := strings.Cut(header, " ")
	switch {
	case header == "":
		token = ""
	case !strings.EqualFold(scheme, "Bearer"):
		return nil, nil, connect.NewError(connect.CodeUnauthenticated, errors.New("authorization: want \"Bearer <token>\""))
	}
	id, err := a.auth.Verify(strings.TrimSpace(token))
	if err != nil {
		return nil, nil, connect.NewError(connect.CodeUnauthenticated, withoutSentinel{err, auth.ErrUnauthenticated})
	}
	return context.WithValue(ctx, identityKey{}, id), id, nil
}

// WrapUnary implements connect.Interceptor.
func (a *authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, _, err := a.authenticate(ctx, req.Header().Get("Authorization"))
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

// WrapStreamingClient implements connect.Interceptor; clients are not authenticated here.
func (a *authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor: the stream's context ends when its
// token has been expired for grace, and the stream then ends with UNAUTHENTICATED, so the
// client reconnects with a fresh token and resumes.
func (a *authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, id, cerr := a.authenticate(ctx, conn.RequestHeader().Get("Authorization"))
		if cerr != nil {
			return cerr
		}
		ctx, cancel := context.WithDeadlineCause(ctx, id.Expires.Add(a.grace), errTokenExpired)
		defer cancel()
		err := next(ctx, conn)
		if errors.Is(context.Cause(ctx), errTokenExpired) {
			return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("token expired at %s: reconnect with a fresh token and resume from the last seq you applied",
				id.Expires.UTC().Format(time.RFC3339)))
		}
		return err
	}
}

// forbidden turns an auth.ErrForbidden into PERMISSION_DENIED.
func forbidden(err error) *connect.Error {
	return connect.NewError(connect.CodePermissionDenied, authDenied{withoutSentinel{err, auth.ErrForbidden}})
}

// withoutSentinel is err with the sentinel's words cut from the end of its message
// ("token signature is invalid: unauthenticated"): the Connect code says them already.
// errors.Is still finds the sentinel.
type withoutSentinel struct{ err, sentinel error }

func (w withoutSentinel) Error() string {
	return strings.TrimSuffix(w.err.Error(), ": "+w.sentinel.Error())
}

func (w withoutSentinel) Unwrap() error { return w.err }

// authorize checks that the identity in ctx (if auth is on) may do right on channel,
// and for publishing each of types.
func authorize(ctx context.Context, channel string, right auth.Right, types ...string) *connect.Error {
	id := identityFrom(ctx)
	if id == nil {
		return nil
	}
	if err := id.Check(channel, right, types...); err != nil {
		return forbidden(err)
	}
	return nil
}

// ownClientID returns the client id a request of the identity in ctx acts under: with
// auth off, requested as is; with auth on, the token's (see auth.Identity.ClientID).
func ownClientID(ctx context.Context, requested string) (string, *connect.Error) {
	id := identityFrom(ctx)
	if id == nil {
		return requested, nil
	}
	clientID, err := id.ClientID(requested)
	if err != nil {
		return "", forbidden(err)
	}
	return clientID, nil
}
