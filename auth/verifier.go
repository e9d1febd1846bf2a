package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Config says how a Verifier checks tokens. At least one of HS256Secret and KeysFile is
// required.
type Config struct {
	// HS256Secret verifies HS256 tokens: at least 32 bytes. nil: HS256 is refused.
	HS256Secret []byte
	// KeysFile holds the public keys that verify RS256, ES256 (P-256) and EdDSA
	// (Ed25519) tokens: PEM (PUBLIC KEY or CERTIFICATE blocks) or a JWK Set
	// ({"keys": [...]}, whose kid a token's header may name). Reload re-reads it. "":
	// those algorithms are refused.
	KeysFile string
	// Audience, if set, must be in the token's aud.
	Audience string
	// Issuer, if set, must be the token's iss.
	Issuer string
	// Leeway is the clock skew allowed when checking exp and nbf (default 0).
	Leeway time.Duration
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

// minSecretBytes is the shortest HS256 secret accepted (RFC 7518 3.2: at least the hash size).
const minSecretBytes = 32

// Verifier checks bearer tokens. It is safe for concurrent use; Reload swaps the keys
// without blocking Verify.
type Verifier struct {
	cfg  Config
	keys atomic.Pointer[keySet] // nil without KeysFile
}

// NewVerifier returns a Verifier for cfg, reading KeysFile.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.HS256Secret == nil && cfg.KeysFile == "" {
		return nil, errors.New("auth: need an HS256 secret or a keys file")
	}
	if cfg.HS256Secret != nil && len(cfg.HS256Secret) < minSecretBytes {
		return nil, fmt.Errorf("auth: HS256 secret of %d bytes, want at least %d", len(cfg.HS256Secret), minSecretBytes)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg}
	if cfg.KeysFile != "" {
		if err := v.Reload(); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Reload re-reads KeysFile. On an error the keys in use are kept.
func (v *Verifier) Reload() error {
	ks, err := readKeys(v.cfg.KeysFile)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	v.keys.Store(ks)
	return nil
}

// ReloadIfChanged re-reads KeysFile if its size or modification time changed since it
// was last read, and reports whether it did.
func (v *Verifier) ReloadIfChanged() (bool, error) {
	ks := v.keys.Load()
	if ks == nil || !ks.changed() {
		return false, nil
	}
	return true, v.Reload()
}

// claims are a token's claims as actionsync reads them.
type claims struct {
	jwt.RegisteredClaims
	Rights []Grant `json:"rights"`
}

// asymmetric lists the public-key algorithms accepted, as named in messages.
const asymmetric = "RS256, ES256 and EdDSA"

// Verify checks token (without the "Bearer " prefix) and returns its identity, or an
// error wrapping ErrUnauthenticated that says why without echoing the token.
func (v *Verifier) Verify(token string) (*Identity, error) {
	if token == "" {
		return nil, fmt.Errorf("missing bearer token: %w", ErrUnauthenticated)
	}
	alg, err := v.algorithm(token)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrUnauthenticated)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{alg}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.cfg.Leeway),
		jwt.WithTimeFunc(v.cfg.Now),
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	var c claims
	_, err = jwt.NewParser(opts...).ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if alg == jwt.SigningMethodHS256.Alg() {
			return v.cfg.HS256Secret, nil
		}
		kid, _ := t.Header["kid"].(string)
		return v.keys.Load().verificationKeys(alg, kid)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describe(err, &c), ErrUnauthenticated)
	}
	if !subjectPattern.MatchString(c.Subject) {
		return nil, fmt.Errorf("token sub: want 1..48 characters of [A-Za-z0-9_.-]: %w", ErrUnauthenticated)
	}
	for i, g := range c.Rights {
		if err := g.check(fmt.Sprintf("token rights[%d]", i)); err != nil {
			return nil, fmt.Errorf("%w: %w", err, ErrUnauthenticated)
		}
	}
	return &Identity{Subject: c.Subject, Expires: c.ExpiresAt.Time, Grants: c.Rights}, nil
}

// algorithm reads the token's alg (before verifying it) and refuses what this verifier
// cannot or must not verify: alg none, an unknown alg, and an algorithm it has no key
// for; in particular an HMAC token where public keys are configured, whose "secret"
// could be the public key (algorithm confusion).
func (v *Verifier) algorithm(token string) (string, error) {
	// Only the header is read here (the full parse comes with the verification): cheaper
	// than jwt's ParseUnverified, which decodes the claims too.
	head, _, ok := strings.Cut(token, ".")
	var h struct {
		Alg string `json:"alg"`
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if !ok || err != nil || json.Unmarshal(raw, &h) != nil || h.Alg == "" {
		return "", errors.New("malformed token: want a JWT (header.payload.signature, base64url)")
	}
	alg := h.Alg
	if strings.EqualFold(alg, "none") {
		return "", errors.New(`token alg "none" is refused: tokens must be signed`)
	}
	switch {
	case alg == jwt.SigningMethodHS256.Alg() && v.cfg.HS256Secret != nil:
		return alg, nil
	case alg == jwt.SigningMethodHS256.Alg(), strings.HasPrefix(alg, "HS"):
		if v.cfg.HS256Secret == nil {
			return "", fmt.Errorf("token alg %s: this server verifies only %s tokens with public keys (an HMAC token where public keys are configured is refused)", alg, asymmetric)
		}
		return "", fmt.Errorf("token alg %s: this server verifies HS256, not %s", alg, alg)
	case alg == jwt.SigningMethodRS256.Alg(), alg == jwt.SigningMethodES256.Alg(), alg == jwt.SigningMethodEdDSA.Alg():
		if v.keys.Load() == nil {
			return "", fmt.Errorf("token alg %s: this server verifies only HS256 tokens (no public keys configured)", alg)
		}
		return alg, nil
	default:
		return "", fmt.Errorf("token alg %s is not accepted: want HS256, %s", alg, asymmetric)
	}
}

// describe turns a golang-jwt error into a message that says why, without the token.
func describe(err error, c *claims) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && c.ExpiresAt == nil:
		return "token has no exp: an expiry is required"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && len(c.Audience) == 0:
		return "token has no aud: this server requires its audience in it"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && c.Issuer == "":
		return "token has no iss: this server requires its issuer"
	case errors.Is(err, jwt.ErrTokenExpired):
		return fmt.Sprintf("token expired at %s", c.ExpiresAt.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return fmt.Sprintf("token not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future (iat)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return fmt.Sprintf("token aud %q does not include this server's audience", []string(c.Audience))
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return fmt.Sprintf("token iss %q is not this server's issuer", c.Issuer)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "token signature is invalid"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return err.Error() // golang-jwt's words and the key lookup's: never the token
	default:
		return "invalid token"
	}
}
