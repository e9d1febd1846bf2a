package auth_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/actionsync/actionsync/auth"
)

var (
	t0     = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	secret = []byte("0123456789abcdef0123456789abcdef")
	rights = []auth.Grant{{Channels: []string{"board:*"}, Allow: []auth.Right{auth.RightSubscribe, auth.RightPublish}}}
)

// claims returns valid claims for alice at t0.
func claims() auth.Claims {
	return auth.Claims{Subject: "alice", Expires: t0.Add(time.Hour), Rights: rights}
}

func mint(t *testing.T, c auth.Claims, key any, kid string) string {
	t.Helper()
	tok, err := auth.Mint(c, key, kid)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newVerifier(t *testing.T, cfg auth.Config) *auth.Verifier {
	t.Helper()
	cfg.Now = func() time.Time { return t0 }
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// writePEM writes the public keys as PEM to a file and returns its path.
func writePEM(t *testing.T, keys ...any) string {
	t.Helper()
	var out []byte
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	p := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type keyPair struct {
	priv any
	pub  any
}

func keyPairs(t *testing.T) (rsaKey, ecKey, edKey keyPair) {
	t.Helper()
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{r, &r.PublicKey}, keyPair{e, &e.PublicKey}, keyPair{edPriv, edPub}
}

func TestVerifier_accepts(t *testing.T) {
	t.Parallel()
	rsaKey, ecKey, edKey := keyPairs(t)
	hs := newVerifier(t, auth.Config{HS256Secret: secret})
	pk := newVerifier(t, auth.Config{KeysFile: writePEM(t, rsaKey.pub, ecKey.pub, edKey.pub)})
	for name, tc := range map[string]struct {
		v   *auth.Verifier
		key any
	}{
		"HS256": {hs, secret}, "RS256": {pk, rsaKey.priv}, "ES256": {pk, ecKey.priv}, "EdDSA": {pk, edKey.priv},
	} {
		id, err := tc.v.Verify(mint(t, claims(), tc.key, ""))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if id.Subject != "alice" || !id.Expires.Equal(t0.Add(time.Hour)) || len(id.Grants) != 1 {
			t.Errorf("%s: got identity %+v", name, id)
		}
	}
}

// TestVerifier_refuses checks every refusal: each fails with ErrUnauthenticated and a
// message that says why and never contains the token.
func TestVerifier_refuses(t *testing.T) {
	t.Parallel()
	rsaKey, ecKey, _ := keyPairs(t)
	pemFile := writePEM(t, rsaKey.pub)
	hs := newVerifier(t, auth.Config{HS256Secret: secret, Audience: "actionsync", Issuer: "https://auth.example.com"})
	pk := newVerifier(t, auth.Config{KeysFile: pemFile})
	ok := claims()
	ok.Audience, ok.Issuer = []string{"actionsync"}, "https://auth.example.com"
	with := func(change func(*auth.Claims)) auth.Claims {
		c := ok
		change(&c)
		return c
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(rsaKey.pub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	// The classic algorithm confusion: an HS256 token whose "secret" is the public key.
	confused := mint(t, ok, pubPEM, "")
	unsigned := unsignedToken(t, ok)
	otherSecret := []byte("another-secret-of-32-bytes-or-more!!")

	for _, tc := range []struct {
		name  string
		v     *auth.Verifier
		token string
		frag  string
	}{
		{"missing", hs, "", "missing bearer token"},
		{"malformed", hs, "not.a.jwt", "malformed token"},
		{"garbage", hs, "garbage", "malformed token"},
		{"bad_signature", hs, mint(t, ok, otherSecret, ""), "signature is invalid"},
		{"alg_none", hs, unsigned, `alg "none" is refused`},
		{"hmac_where_public_keys", pk, confused, "verifies only RS256, ES256 and EdDSA"},
		{"public_key_alg_where_hmac_only", hs, mint(t, ok, rsaKey.priv, ""), "verifies only HS256"},
		{"unknown_key", pk, mint(t, ok, ecKey.priv, ""), "no ES256 key"},
		{"expired", hs, mint(t, with(func(c *auth.Claims) { c.Expires = t0.Add(-time.Second) }), secret, ""), "token expired at 2030-01-01T11:59:59Z"},
		{"no_exp", hs, mint(t, with(func(c *auth.Claims) { c.Expires = time.Time{} }), secret, ""), "exp"},
		{"not_yet_valid", hs, mint(t, with(func(c *auth.Claims) { c.NotBefore = t0.Add(time.Minute) }), secret, ""), "not valid before 2030-01-01T12:01:00Z"},
		{"wrong_aud", hs, mint(t, with(func(c *auth.Claims) { c.Audience = []string{"other"} }), secret, ""), `aud ["other"]`},
		{"no_aud", hs, mint(t, with(func(c *auth.Claims) { c.Audience = nil }), secret, ""), "aud"},
		{"wrong_iss", hs, mint(t, with(func(c *auth.Claims) { c.Issuer = "https://evil.example.com" }), secret, ""), "iss"},
		{"no_sub", hs, mint(t, with(func(c *auth.Claims) { c.Subject = "" }), secret, ""), "token sub"},
		{"sub_with_colon", hs, mint(t, with(func(c *auth.Claims) { c.Subject = "user:42" }), secret, ""), "token sub"},
		{"unknown_right", hs, mint(t, with(func(c *auth.Claims) { c.Rights = []auth.Grant{{Channels: []string{"b"}, Allow: []auth.Right{"admin"}}} }), secret, ""), `unknown right "admin"`},
		{"bad_pattern", hs, mint(t, with(func(c *auth.Claims) {
			c.Rights = []auth.Grant{{Channels: []string{"["}, Allow: []auth.Right{"publish"}}}
		}), secret, ""), "not a channel pattern"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.v.Verify(tc.token)
			if !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("got %v, %v; want ErrUnauthenticated", id, err)
			}
			if !strings.Contains(err.Error(), tc.frag) {
				t.Errorf("got %q, want it to contain %q", err, tc.frag)
			}
			if len(tc.token) > 8 && strings.Contains(err.Error(), tc.token) {
				t.Errorf("the message echoes the token: %q", err)
			}
			if sig := tc.token[strings.LastIndex(tc.token, ".")+1:]; len(sig) > 8 && strings.Contains(err.Error(), sig) {
				t.Errorf("the message echoes the signature: %q", err)
			}
		})
	}
}

// unsignedToken returns c as a token with alg none.
func unsignedToken(t *testing.T, c auth.Claims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{
		"sub": c.Subject, "exp": c.Expires.Unix(), "aud": c.Audience, "iss": c.Issuer,
	}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestVerifier_JWKS: keys from a JWK Set, chosen by the token's kid; the file is
// re-read when it changes, and a bad new file keeps the old keys.
func TestVerifier_JWKS(t *testing.T) {
	t.Parallel()
	_, a, _ := keyPairs(t)
	_, b, _ := keyPairs(t)
	file := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS := func(keys map[string]any) {
		t.Helper()
		var set jose.JSONWebKeySet
		for kid, k := range keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: "ES256", Use: "sig"})
		}
		data, err := json.Marshal(set)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeJWKS(map[string]any{"a": a.pub})
	v := newVerifier(t, auth.Config{KeysFile: file})
	if _, err := v.Verify(mint(t, claims(), a.priv, "a")); err != nil {
		t.Fatalf("kid a: %v", err)
	}
	if _, err := v.Verify(mint(t, claims(), b.priv, "b")); err == nil || !strings.Contains(err.Error(), `kid "b"`) {
		t.Fatalf("kid b before the rotation: got %v, want no key with kid b", err)
	}
	// Rotation: the file now has b only.
	writeJWKS(map[string]any{"b": b.pub})
	if err := os.Chtimes(file, time.Now(), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if reloaded, err := v.ReloadIfChanged(); !reloaded || err != nil {
		t.Fatalf("ReloadIfChanged after a change: %v, %v", reloaded, err)
	}
	if _, err := v.Verify(mint(t, claims(), b.priv, "b")); err != nil {
		t.Errorf("kid b after the rotation: %v", err)
	}
	if _, err := v.Verify(mint(t, claims(), a.priv, "a")); err == nil {
		t.Error("kid a after the rotation: accepted")
	}
	if reloaded, _ := v.ReloadIfChanged(); reloaded {
		t.Error("ReloadIfChanged without a change: reloaded")
	}
	// A broken file keeps the keys in use.
	if err := os.WriteFile(file, []byte(`{"keys": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err == nil {
		t.Error("Reload of a broken file: no error")
	}
	if _, err := v.Verify(mint(t, claims(), b.priv, "b")); err != nil {
		t.Errorf("kid b after a failed reload: %v", err)
	}
	// Private keys are refused.
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: a.priv, KeyID: "p"}}})
	if err := os.WriteFile(file, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err == nil || !strings.Contains(err.Error(), "not a public key") {
		t.Errorf("Reload of a private JWK: got %v", err)
	}
}

func TestNewVerifier_config(t *testing.T) {
	t.Parallel()
	if _, err := auth.NewVerifier(auth.Config{}); err == nil {
		t.Error("no secret, no keys: accepted")
	}
	if _, err := auth.NewVerifier(auth.Config{HS256Secret: secret[:31]}); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("31-byte secret: got %v", err)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := auth.NewVerifier(auth.Config{KeysFile: writePEM(t, &small.PublicKey)}); err == nil || !strings.Contains(err.Error(), "1024 bits") {
		t.Errorf("1024-bit RSA key: got %v", err)
	}
}

func TestIdentity_Check(t *testing.T) {
	t.Parallel()
	id := &auth.Identity{Subject: "bob", Grants: []auth.Grant{
		{Channels: []string{"board:42"}, Allow: []auth.Right{auth.RightSubscribe, auth.RightHistory}},
		{Channels: []string{"board:*"}, Allow: []auth.Right{auth.RightPublish, auth.RightSubscribe}, Types: []string{"ADD_TASK"}},
	}}
	for _, tc := range []struct {
		channel string
		right   auth.Right
		types   []string
		frag    string // "": allowed
	}{
		{"board:42", auth.RightSubscribe, nil, ""},
		{"board:42", auth.RightPublish, []string{"ADD_TASK"}, "does not allow publish"}, // the first match decides
		{"board:7", auth.RightPublish, []string{"ADD_TASK"}, ""},
		{"board:7", auth.RightPublish, []string{"ADD_TASK", "DELETE_BOARD"}, `type "DELETE_BOARD"`},
		{"board:7", auth.RightHistory, nil, "does not allow history"},
		{"room:1", auth.RightSubscribe, nil, "grants no right"},
	} {
		err := id.Check(tc.channel, tc.right, tc.types...)
		switch {
		case tc.frag == "" && err != nil:
			t.Errorf("%s %s %v: %v", tc.channel, tc.right, tc.types, err)
		case tc.frag != "" && (!errors.Is(err, auth.ErrForbidden) || !strings.Contains(err.Error(), tc.frag)):
			t.Errorf("%s %s %v: got %v, want ErrForbidden with %q", tc.channel, tc.right, tc.types, err, tc.frag)
		}
	}
}

func TestIdentity_ClientID(t *testing.T) {
	t.Parallel()
	id := &auth.Identity{Subject: "alice"}
	for _, tc := range []struct{ requested, want string }{
		{"", "alice"}, {"alice", "alice"}, {"alice:phone", "alice:phone"}, {"alice:tab-1.2_x", "alice:tab-1.2_x"},
		{"bob", ""}, {"alice2", ""}, {"alice:", ""}, {"alice:a:b", ""}, {"alice:0123456789abcdef", ""},
	} {
		got, err := id.ClientID(tc.requested)
		if tc.want == "" {
			if !errors.Is(err, auth.ErrForbidden) {
				t.Errorf("ClientID(%q): got %q, %v; want ErrForbidden", tc.requested, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ClientID(%q): got %q, %v; want %q", tc.requested, got, err, tc.want)
		}
	}
}
