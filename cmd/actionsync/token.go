package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/actionsync/actionsync/auth"
)

// tokenUsage is the usage of the token command.
const tokenUsage = `Usage: actionsync token --sub SUBJECT [flags]

Prints an HS256 token for development and tests, signed with the secret the server reads
from --auth-hs256-secret-file. In production, your application's backend mints tokens.

Flags:
  --secret-file FILE   the HS256 secret (default: $ACTIONSYNC_AUTH_HS256_SECRET_FILE)
  --sub SUBJECT        the token's sub: who the client is (1..48 of [A-Za-z0-9_.-]); required
  --ttl DURATION       how long the token is valid (default 1h)
  --channels PATTERNS  comma-separated channel patterns the rights apply to (default "*")
  --allow RIGHTS       comma-separated rights: subscribe, publish, history
                       (default subscribe,publish,history)
  --types TYPES        comma-separated action types that may be published (default: any)
  --aud AUDIENCE       the token's aud (default: none)
  --iss ISSUER         the token's iss (default: none)
`

// runToken is the token command: it prints a development token to stdout.
func runToken(args []string, stdout io.Writer, getenv func(string) string, now time.Time) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	secretFile := fs.String("secret-file", getenv("ACTIONSYNC_AUTH_HS256_SECRET_FILE"), "")
	sub := fs.String("sub", "", "")
	ttl := fs.Duration("ttl", time.Hour, "")
	channels := fs.String("channels", "*", "")
	allow := fs.String("allow", "subscribe,publish,history", "")
	types := fs.String("types", "", "")
	aud := fs.String("aud", "", "")
	iss := fs.String("iss", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, err = io.WriteString(stdout, tokenUsage)
			return err
		}
		return &usageError{err: fmt.Errorf("token: %w", err)}
	}
	switch {
	case fs.NArg() > 0:
		return &usageError{err: fmt.Errorf("token: unexpected argument %q", fs.Arg(0))}
	case *secretFile == "":
		return &usageError{err: errors.New("token: --secret-file (or ACTIONSYNC_AUTH_HS256_SECRET_FILE) is required")}
	case *sub == "":
		return &usageError{err: errors.New("token: --sub is required")}
	case *ttl <= 0:
		return &usageError{err: errors.New("token: --ttl must be > 0")}
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return &usageError{err: fmt.Errorf("token: %w", err)}
	}
	secret = bytes.TrimSuffix(bytes.TrimSuffix(secret, []byte("\n")), []byte("\r"))
	grant := auth.Grant{Channels: splitList(*channels, ",")}
	for _, r := range splitList(*allow, ",") {
		grant.Allow = append(grant.Allow, auth.Right(r))
	}
	if *types != "" {
		grant.Types = splitList(*types, ",")
	}
	c := auth.Claims{Subject: *sub, Expires: now.Add(*ttl), Issuer: *iss, Rights: []auth.Grant{grant}}
	if *aud != "" {
		c.Audience = []string{*aud}
	}
	// Verify what is about to be printed: a token this server would refuse is an error now.
	v, err := auth.NewVerifier(auth.Config{HS256Secret: secret, Audience: *aud, Issuer: *iss, Now: func() time.Time { return now }})
	if err != nil {
		return &usageError{err: fmt.Errorf("token: %w", err)}
	}
	tok, err := auth.Mint(c, secret, "")
	if err != nil {
		return err
	}
	if _, err := v.Verify(tok); err != nil {
		return &usageError{err: fmt.Errorf("token: %s", strings.TrimSuffix(err.Error(), ": "+auth.ErrUnauthenticated.Error()))}
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
