package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are what Mint writes into a token.
type Claims struct {
	// Subject is sub: who the client is (1..48 of [A-Za-z0-9_.-]).
	Subject string
	// Expires is exp (required).
	Expires time.Time
	// NotBefore is nbf; zero: none.
	NotBefore time.Time
	// Audience is aud; empty: none.
	Audience []string
	// Issuer is iss; empty: none.
	Issuer string
	// Rights are the grants.
	Rights []Grant
}

// Mint signs c with key: a []byte secret (HS256), an *rsa.PrivateKey (RS256), an
// *ecdsa.PrivateKey (ES256) or an ed25519.PrivateKey (EdDSA); kid, if set, goes in the
// header. It is for development tokens (actionsync token), tests and the benchmarks; an
// application mints its tokens in its own backend.
func Mint(c Claims, key any, kid string) (string, error) {
	var method jwt.SigningMethod
	switch key.(type) {
	case []byte:
		method = jwt.SigningMethodHS256
	case *rsa.PrivateKey:
		method = jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		method = jwt.SigningMethodES256
	case ed25519.PrivateKey:
		method = jwt.SigningMethodEdDSA
	default:
		return "", fmt.Errorf("mint: key of type %T, want []byte, *rsa.PrivateKey, *ecdsa.PrivateKey or ed25519.PrivateKey", key)
	}
	rc := claims{Rights: c.Rights, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   c.Subject,
		ExpiresAt: jwt.NewNumericDate(c.Expires),
		Audience:  c.Audience,
		Issuer:    c.Issuer,
	}}
	if !c.NotBefore.IsZero() {
		rc.NotBefore = jwt.NewNumericDate(c.NotBefore)
	}
	t := jwt.NewWithClaims(method, rc)
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	return s, nil
}
