package main

import (
	"context"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/auth"
)

// tokenTTL is how long the bench's tokens are valid: longer than any phase.
const tokenTTL = 2 * time.Hour

// mintToken returns an HS256 token for clientID (its sub) with every right on every
// channel, signed with --token-secret-file. Each client gets its own, so a server with
// auth on verifies one token per stream and per dispatch, as with real users.
func (b *bench) mintToken(clientID string) string {
	tok, err := auth.Mint(auth.Claims{
		Subject: clientID,
		Expires: time.Now().Add(tokenTTL),
		Rights:  []auth.Grant{{Channels: []string{"*"}, Allow: []auth.Right{auth.RightSubscribe, auth.RightPublish, auth.RightHistory}}},
	}, b.cfg.tokenSecret, "")
	if err != nil {
		panic(err) // cannot happen: an HS256 secret and well-formed claims
	}
	return tok
}

// bearer is a client interceptor that sends a token on every call.
type bearer string

// WrapUnary implements connect.Interceptor.
func (t bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(t))
		return next(ctx, req)
	}
}

// WrapStreamingClient implements connect.Interceptor.
func (t bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(t))
		return conn
	}
}

// WrapStreamingHandler implements connect.Interceptor; the bench serves nothing.
func (t bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
