package stress

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/auth"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// This file holds the authentication side of the secure scenario: tokens as clients
// carry them, and the requests the server must refuse, each with its code and message.

// Kinds of refusal: each is a request the server must refuse with its documented code
// and message (docs/security.md, Refusals), before anything is applied or created.
const (
	refuseExpired          = iota // a token past its exp
	refuseBadSignature            // a token signed with another secret
	refuseNoPublish               // a dispatch with a token whose grant lacks publish
	refuseSubscribeOutside        // a Subscribe naming a channel outside the token's grants
	refuseDispatchOutside         // a Dispatch to a channel outside the token's grants
	refuseType                    // a batch holding a type the grant does not list
	refuseClientID                // a client_id that is not the token's sub (or sub:device)
	refuseHeader                  // an Authorization header that is no bearer JWT
	refuseKinds
)

var refuseNames = [refuseKinds]string{"expired token", "bad signature", "rights without publish", "subscribe outside the grants",
	"dispatch outside the grants", "type not granted", "client id not the token's", "malformed Authorization"}

// expiry returns the exp of a token minted now to live about ttl: a whole second (what
// a JWT's NumericDate holds), ttl to ttl + 1 s from now.
func expiry(ttl time.Duration) time.Time {
	return time.Now().Add(ttl + time.Second).Truncate(time.Second)
}

// expiredMessage is the fragment of the message of a token that expired at exp.
func expiredMessage(exp time.Time) string {
	return "token expired at " + exp.UTC().Format(time.RFC3339)
}

// isStreamExpiry reports whether err is how the server ends a stream whose token
// expired at exp (docs/security.md).
func isStreamExpiry(err error, exp time.Time) bool {
	msg := errMessage(err)
	return connect.CodeOf(err) == connect.CodeUnauthenticated && strings.Contains(msg, expiredMessage(exp)) &&
		strings.Contains(msg, "reconnect with a fresh token and resume")
}

// errMessage returns the message of a Connect error, or the error's text.
func errMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// withToken returns a request of msg carrying token.
func withToken[T any](msg *T, token string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+token)
	return req
}

// bearer adds token to every unary call of a client.
func bearer(token string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	})
}

// refusal is one request the server must refuse: a Dispatch or a Subscribe, with its
// Authorization header, and the code and message fragment wanted.
type refusal struct {
	header    string // "": none sent
	dispatch  *actionsyncv1.DispatchRequest
	subscribe *actionsyncv1.SubscribeRequest
	code      connect.Code
	message   string
}

// newRefusal draws a refusal of kind from rng, for identity sub; its actions' ids start
// with prefix.
func newRefusal(rng *rand.Rand, kind int, sub, prefix string, channels []string, mint func(string, time.Time, ...auth.Grant) string) refusal {
	all := []auth.Right{auth.RightSubscribe, auth.RightPublish, auth.RightHistory}
	everything := auth.Grant{Channels: []string{"sec:*"}, Allow: all}
	ch := channels[rng.IntN(len(channels))]
	other := channels[rng.IntN(len(channels))]
	for other == ch {
		other = channels[rng.IntN(len(channels))]
	}
	dispatch := func(channel, clientID string) *actionsyncv1.DispatchRequest {
		req := &actionsyncv1.DispatchRequest{Channel: channel, ClientId: clientID}
		for i := range 1 + rng.IntN(5) {
			req.Actions = append(req.Actions, action(fmt.Sprintf("%s-%d", prefix, i), 40+rng.IntN(100)))
		}
		return req
	}
	subscribe := func(clientID string, chs ...string) *actionsyncv1.SubscribeRequest {
		req := &actionsyncv1.SubscribeRequest{ClientId: clientID}
		for _, c := range chs {
			req.Positions = append(req.Positions, &actionsyncv1.Position{Channel: c, AfterSeq: uint64(rng.IntN(3))})
		}
		return req
	}
	// either makes the refused request a Dispatch or a Subscribe, at random.
	either := func(r refusal) refusal {
		if rng.IntN(2) == 0 {
			r.dispatch = dispatch(ch, "")
		} else {
			r.subscribe = subscribe("", ch)
		}
		return r
	}
	switch kind {
	case refuseExpired:
		exp := time.Now().Add(-time.Duration(1+rng.IntN(3600)) * time.Second).Truncate(time.Second)
		return either(refusal{header: "Bearer " + mint(sub, exp, everything), code: connect.CodeUnauthenticated, message: expiredMessage(exp)})
	case refuseBadSignature:
		wrong := []byte(hex.EncodeToString(randBytes(rng, 32)))
		tok, err := auth.Mint(auth.Claims{Subject: sub, Expires: expiry(time.Hour), Rights: []auth.Grant{everything}}, wrong, "")
		if err != nil {
			panic(err)
		}
		return either(refusal{header: "Bearer " + tok, code: connect.CodeUnauthenticated, message: "token signature is invalid"})
	case refuseNoPublish:
		tok := mint(sub, expiry(time.Hour), auth.Grant{Channels: []string{"sec:*"}, Allow: []auth.Right{auth.RightSubscribe, auth.RightHistory}})
		return refusal{header: "Bearer " + tok, dispatch: dispatch(ch, ""), code: connect.CodePermissionDenied,
			message: fmt.Sprintf("channel %q: the token of %q does not allow publish there", ch, sub)}
	case refuseSubscribeOutside:
		// The token covers ch only; the request names another channel of the scenario's
		// (beside ch, in either order) or one nobody uses. With a second grant on sec:*
		// without subscribe, that grant decides for the other channels.
		grants := []auth.Grant{{Channels: []string{ch}, Allow: all}}
		outside := other
		if rng.IntN(3) == 0 {
			outside = fmt.Sprintf("secret:%d", rng.IntN(10))
		}
		message := fmt.Sprintf("channel %q: the token of %q grants no right on it", outside, sub)
		if rng.IntN(2) == 0 {
			grants = append(grants, auth.Grant{Channels: []string{"sec:*"}, Allow: []auth.Right{auth.RightHistory}})
			if strings.HasPrefix(outside, "sec:") {
				message = fmt.Sprintf("channel %q: the token of %q does not allow subscribe there", outside, sub)
			}
		}
		chs := []string{ch, outside}
		if rng.IntN(2) == 0 {
			chs = []string{outside, ch}
		}
		return refusal{header: "Bearer " + mint(sub, expiry(time.Hour), grants...), subscribe: subscribe("", chs...),
			code: connect.CodePermissionDenied, message: message}
	case refuseDispatchOutside:
		outside := other
		if rng.IntN(3) == 0 {
			outside = fmt.Sprintf("secret:%d", rng.IntN(10))
		}
		tok := mint(sub, expiry(time.Hour), auth.Grant{Channels: []string{ch}, Allow: all})
		return refusal{header: "Bearer " + tok, dispatch: dispatch(outside, ""), code: connect.CodePermissionDenied,
			message: fmt.Sprintf("channel %q: the token of %q grants no right on it", outside, sub)}
	case refuseType:
		tok := mint(sub, expiry(time.Hour), auth.Grant{Channels: []string{"sec:*"}, Allow: all, Types: []string{"ADD_TASK", "MOVE_TASK"}})
		req := dispatch(ch, "")
		bad := []string{"DELETE_BOARD", "ADMIN_WIPE", "add_task"}[rng.IntN(3)]
		req.Actions[rng.IntN(len(req.Actions))].Type = bad
		return refusal{header: "Bearer " + tok, dispatch: req, code: connect.CodePermissionDenied,
			message: fmt.Sprintf("channel %q: the token of %q does not allow type %q there", ch, sub, bad)}
	case refuseClientID:
		ids := []string{"pub0", "f1", sub + ":", sub + ":" + strings.Repeat("d", 16), sub + ":a:b", sub + ":bad/dev", "x" + sub, sub + "x:dev"}
		id := ids[rng.IntN(len(ids))]
		r := refusal{header: "Bearer " + mint(sub, expiry(time.Hour), everything), code: connect.CodePermissionDenied,
			message: fmt.Sprintf("client_id %q is not the token's", id)}
		if rng.IntN(2) == 0 {
			r.dispatch = dispatch(ch, id)
		} else {
			r.subscribe = subscribe(id, ch)
		}
		return r
	default: // refuseHeader
		none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
			base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"exp":%d,"rights":[{"channels":["sec:*"],"allow":["publish","subscribe"]}]}`, sub, time.Now().Add(time.Hour).Unix())) + "."
		variants := []refusal{
			{header: "", message: "missing bearer token"},
			{header: "Basic " + base64.StdEncoding.EncodeToString([]byte(sub+":password")), message: `authorization: want "Bearer <token>"`},
			{header: "Bearer " + hex.EncodeToString(randBytes(rng, 1+rng.IntN(40))), message: "malformed token"},
			{header: "Bearer " + none, message: `token alg "none" is refused`},
		}
		r := variants[rng.IntN(len(variants))]
		r.code = connect.CodeUnauthenticated
		return either(r)
	}
}

// check sends the refusal through client and returns an error unless the answer is its
// code and message; a refused Subscribe must get no message before its error.
func (r refusal) check(ctx context.Context, client actionsyncv1connect.SyncServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if r.dispatch != nil {
		req := connect.NewRequest(r.dispatch)
		if r.header != "" {
			req.Header().Set("Authorization", r.header)
		}
		var res *connect.Response[actionsyncv1.DispatchResponse]
		if res, err = client.Dispatch(ctx, req); err == nil {
			return fmt.Errorf("dispatch to %q accepted (acks %v), want %v %q", r.dispatch.GetChannel(), res.Msg.GetAcks(), r.code, r.message)
		}
	} else {
		req := connect.NewRequest(r.subscribe)
		if r.header != "" {
			req.Header().Set("Authorization", r.header)
		}
		stream, serr := client.Subscribe(ctx, req)
		if serr != nil {
			err = serr
		} else {
			if stream.Receive() {
				stream.Close()
				return fmt.Errorf("subscribe to %v sent %v, want %v %q before any message", r.subscribe.GetPositions(), stream.Msg(), r.code, r.message)
			}
			err = stream.Err()
			stream.Close()
		}
	}
	if connect.CodeOf(err) != r.code || !strings.Contains(errMessage(err), r.message) {
		return fmt.Errorf("got %v, want %v %q", err, r.code, r.message)
	}
	return nil
}
