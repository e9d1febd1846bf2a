// Package auth is who a client is and what it may do: it verifies the bearer tokens of
// actionsync clients (JWT, HS256 with a shared secret or RS256 / ES256 / EdDSA with
// public keys) and checks an identity's rights on a channel.
//
// A token carries the subject (`sub`), its expiry (`exp`, required) and its rights:
//
//	{"sub": "alice", "exp": 1767225600,
//	 "rights": [{"channels": ["board:42", "board:team-7-*"], "allow": ["subscribe", "publish", "history"],
//	             "types": ["UPDATE_STAGE_TITLE", "ADD_TASK"]}]}
//
// The first grant whose channel patterns match a channel decides what the identity may do
// there; no match means nothing. This package never imports Connect: the service maps its
// errors (ErrUnauthenticated, ErrForbidden) to codes.
package auth

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Errors of this package. Messages say why without echoing the token.
var (
	// ErrUnauthenticated: no token, or one that is not valid (signature, expiry, claims).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: a valid token that does not grant what the request asks.
	ErrForbidden = errors.New("permission denied")
)

// Right is something an identity may do on a channel.
type Right string

// The rights a grant can give.
const (
	// RightSubscribe: follow the channel (Subscribe, Sync's subscribe), snapshots included.
	RightSubscribe Right = "subscribe"
	// RightPublish: dispatch actions to the channel (of the grant's types) and store its
	// snapshot.
	RightPublish Right = "publish"
	// RightHistory: read the channel's history and snapshot (History, GetSnapshot).
	RightHistory Right = "history"
)

// Grant gives rights on the channels matching any of Channels.
type Grant struct {
	// Channels are patterns in the allow-list's syntax (path.Match: "board:*").
	Channels []string `json:"channels"`
	// Allow lists the rights given.
	Allow []Right `json:"allow"`
	// Types, if present, limits publishing to these action types; absent: every type.
	Types []string `json:"types,omitempty"`
}

// check reports whether g is well-formed; field names the grant in messages.
func (g Grant) check(field string) error {
	if len(g.Channels) == 0 {
		return fmt.Errorf("%s.channels: at least one pattern required", field)
	}
	for i, p := range g.Channels {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			return fmt.Errorf("%s.channels[%d]: %q is not a channel pattern", field, i, p)
		}
	}
	for i, r := range g.Allow {
		switch r {
		case RightSubscribe, RightPublish, RightHistory:
		default:
			return fmt.Errorf("%s.allow[%d]: unknown right %q (want subscribe, publish or history)", field, i, r)
		}
	}
	return nil
}

// matches reports whether one of g's patterns matches channel.
func (g Grant) matches(channel string) bool {
	return slices.ContainsFunc(g.Channels, func(p string) bool {
		ok, _ := path.Match(p, channel)
		return ok
	})
}

// Identity is an authenticated client: the token's subject, expiry and grants.
type Identity struct {
	// Subject is the token's sub: who the client is.
	Subject string
	// Expires is when the token expires: streams end then.
	Expires time.Time
	// Grants are the token's rights, in order.
	Grants []Grant
}

// Check returns nil if id may do right on channel and, for RightPublish with types, may
// publish each of them; otherwise an error wrapping ErrForbidden that names the channel
// and what is missing.
func (id *Identity) Check(channel string, right Right, types ...string) error {
	i := slices.IndexFunc(id.Grants, func(g Grant) bool { return g.matches(channel) })
	if i < 0 {
		return fmt.Errorf("channel %q: the token of %q grants no right on it: %w", channel, id.Subject, ErrForbidden)
	}
	g := id.Grants[i]
	if !slices.Contains(g.Allow, right) {
		return fmt.Errorf("channel %q: the token of %q does not allow %s there: %w", channel, id.Subject, right, ErrForbidden)
	}
	if right == RightPublish && g.Types != nil {
		for _, t := range types {
			if !slices.Contains(g.Types, t) {
				return fmt.Errorf("channel %q: the token of %q does not allow type %q there: %w", channel, id.Subject, t, ErrForbidden)
			}
		}
	}
	return nil
}

// subjectPattern is what a token's sub must look like: it is the base of client ids.
var subjectPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,48}$`)

// devicePattern is what may follow "<sub>:" in a client id.
var devicePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// ClientID returns the client id requests of id carry: requested if it is id's own
// ("<sub>", or "<sub>:<device>" to tell several devices of one user apart; device is
// 1..15 of [A-Za-z0-9_.-]), the subject if requested is empty, and otherwise an error
// wrapping ErrForbidden. Since a subject has no ':' and a device neither, a client id
// names one subject only: nobody can pass for another.
func (id *Identity) ClientID(requested string) (string, error) {
	if requested == "" || requested == id.Subject {
		return id.Subject, nil
	}
	if dev, ok := strings.CutPrefix(requested, id.Subject+":"); ok && devicePattern.MatchString(dev) {
		return requested, nil
	}
	return "", fmt.Errorf("client_id %q is not the token's: use %q or %q followed by a device name of up to 15 characters of [A-Za-z0-9_.-]: %w",
		requested, id.Subject, id.Subject+":", ErrForbidden)
}
