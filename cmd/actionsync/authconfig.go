package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/actionsync/actionsync/auth"
)

// authConfig is who may use the server: the token verification settings, and whether
// anonymous access is allowed beyond loopback.
type authConfig struct {
	secretFile     string // HS256 secret
	keysFile       string // PEM or JWKS public keys
	audience       string
	issuer         string
	grace          time.Duration
	allowAnonymous bool
	demoAuth       bool           // serve demo tokens at /demo-token
	secret         []byte         // the HS256 secret, read by finishAuth
	verifier       *auth.Verifier // built by finishAuth; nil: anonymous access
}

// authSettings are the settings of authentication.
var authSettings = []setting{
	{flag: "auth-hs256-secret-file", env: "ACTIONSYNC_AUTH_HS256_SECRET_FILE", arg: "FILE",
		shown: "none",
		help:  "verify HS256 bearer tokens with the secret in this file (at least 32 bytes; one trailing newline is ignored)",
		apply: setString(func(c *config) *string { return &c.auth.secretFile })},
	{flag: "auth-jwks-file", env: "ACTIONSYNC_AUTH_JWKS_FILE", arg: "FILE",
		shown: "none",
		help:  "verify RS256, ES256 and EdDSA bearer tokens with the public keys in this PEM or JWK Set file; re-read on SIGHUP and when it changes",
		apply: setString(func(c *config) *string { return &c.auth.keysFile })},
	{flag: "auth-audience", env: "ACTIONSYNC_AUTH_AUDIENCE", arg: "AUD",
		shown: "none: not checked",
		help:  "require this audience in every token's aud",
		apply: setString(func(c *config) *string { return &c.auth.audience })},
	{flag: "auth-issuer", env: "ACTIONSYNC_AUTH_ISSUER", arg: "ISS",
		shown: "none: not checked",
		help:  "require this issuer as every token's iss",
		apply: setString(func(c *config) *string { return &c.auth.issuer })},
	{flag: "auth-stream-grace", env: "ACTIONSYNC_AUTH_STREAM_GRACE", def: "10s", arg: "DURATION",
		help: "how long a stream may outlive its token before it ends with UNAUTHENTICATED",
		apply: durationAtLeast(time.Nanosecond, func(c *config, d time.Duration) {
			c.auth.grace = d
		})},
	{flag: "dispatch-rate", env: "ACTIONSYNC_DISPATCH_RATE", def: "100", arg: "PER_SECOND",
		help: "dispatches per second one authenticated identity may sustain; past it (and its burst) RESOURCE_EXHAUSTED with a retry hint; 0: no limit",
		apply: func(c *config, v string) error {
			r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
				return errors.New("want a number >= 0")
			}
			c.service.Quotas.DispatchRate = r
			if r == 0 {
				c.service.Quotas.DispatchRate = -1
			}
			return nil
		}},
	{flag: "dispatch-burst", env: "ACTIONSYNC_DISPATCH_BURST", def: "200", arg: "N",
		help:  "dispatches one authenticated identity may send at once, above --dispatch-rate",
		apply: intAtLeast(1, func(c *config) *int { return &c.service.Quotas.DispatchBurst })},
	{flag: "max-streams-per-identity", env: "ACTIONSYNC_MAX_STREAMS_PER_IDENTITY", def: "100", arg: "N",
		help: "Subscribe and Sync streams one authenticated identity may hold open; 0: no limit",
		apply: func(c *config, v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 {
				return errors.New("want a whole number >= 0")
			}
			c.service.Quotas.MaxStreams = cmp.Or(n, -1)
			return nil
		}},
	{flag: "demo-auth", env: "ACTIONSYNC_DEMO_AUTH", def: "false", arg: "true|false",
		help:  "development only: hand a token to anyone who asks at /demo-token?user=NAME&role=edit|view (needs --auth-hs256-secret-file and the demo; loopback only unless --allow-anonymous)",
		apply: setBool(func(c *config) *bool { return &c.auth.demoAuth })},
	{flag: "allow-anonymous", env: "ACTIONSYNC_ALLOW_ANONYMOUS", def: "false", arg: "true|false",
		help:  "serve without authentication on an address that is not loopback (without it the server refuses to start there unless --auth-* is set)",
		apply: setBool(func(c *config) *bool { return &c.auth.allowAnonymous })},
}

// finishAuth builds the token verifier, and refuses anonymous access where anyone on
// the network could use it: on an address that is not loopback without
// --allow-anonymous, and with --cors-origins "*" there in any case (any web page could
// then drive the server from its visitors' browsers).
func (c *config) finishAuth() error {
	a := &c.auth
	if a.secretFile != "" || a.keysFile != "" {
		cfg := auth.Config{KeysFile: a.keysFile, Audience: a.audience, Issuer: a.issuer}
		if a.secretFile != "" {
			secret, err := os.ReadFile(a.secretFile)
			if err != nil {
				return lookupSetting("auth-hs256-secret-file").errorf("%w", err)
			}
			secret = bytes.TrimSuffix(bytes.TrimSuffix(secret, []byte("\n")), []byte("\r"))
			cfg.HS256Secret, a.secret = secret, secret
		}
		v, err := auth.NewVerifier(cfg)
		if err != nil {
			name := "auth-jwks-file"
			if strings.Contains(err.Error(), "secret") {
				name = "auth-hs256-secret-file"
			}
			return lookupSetting(name).errorf("%w", err)
		}
		a.verifier = v
		c.service.Auth = v
		c.service.TokenGrace = a.grace
		if a.demoAuth {
			return c.checkDemoAuth()
		}
		return nil
	}
	if a.demoAuth {
		return &usageError{err: errors.New("--demo-auth (ACTIONSYNC_DEMO_AUTH) needs --auth-hs256-secret-file: demo tokens are signed with it")}
	}
	if a.audience != "" || a.issuer != "" {
		return &usageError{err: errors.New("--auth-audience and --auth-issuer need --auth-hs256-secret-file or --auth-jwks-file")}
	}
	loopback, err := isLoopback(c.addr)
	if err != nil {
		return lookupSetting("addr").errorf("%w", err)
	}
	switch {
	case loopback:
		return nil
	case !a.allowAnonymous:
		return &usageError{err: fmt.Errorf("refusing to serve %s without authentication: anyone who can reach it could read and write every channel. "+
			"Set --auth-hs256-secret-file or --auth-jwks-file (see docs/security.md), listen on a loopback address (e.g. localhost:8080), "+
			"or pass --allow-anonymous (ACTIONSYNC_ALLOW_ANONYMOUS) if the network in front of it does the access control", c.addr)}
	case slices.Contains(c.corsOrigins, "*"):
		return &usageError{err: fmt.Errorf(`refusing --cors-origins "*" with anonymous access on %s: any web page could use the server from its visitors' browsers. `+
			"List the origins of your app, or set up authentication", c.addr)}
	}
	return nil
}

// isLoopback reports whether addr (HOST:PORT) listens on loopback addresses only: a
// loopback IP, or a name all of whose addresses are loopback. An empty host or an
// unspecified address (0.0.0.0, ::) listens everywhere.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if host == "" {
		return false, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback(), nil
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return false, fmt.Errorf("resolve %q: %w", host, err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false, nil
		}
	}
	return len(ips) > 0, nil
}

// checkDemoAuth refuses --demo-auth where it makes no sense or is unsafe: without the
// demo, or (it hands tokens to anyone) on an address that is not loopback unless
// --allow-anonymous.
func (c *config) checkDemoAuth() error {
	if !c.demo {
		return &usageError{err: errors.New("--demo-auth (ACTIONSYNC_DEMO_AUTH) needs the demo (--demo true)")}
	}
	loopback, err := isLoopback(c.addr)
	if err != nil {
		return lookupSetting("addr").errorf("%w", err)
	}
	if !loopback && !c.auth.allowAnonymous {
		return &usageError{err: fmt.Errorf("refusing --demo-auth on %s: it hands a token to anyone who asks, which is anonymous access; "+
			"use a loopback address or pass --allow-anonymous", c.addr)}
	}
	return nil
}
