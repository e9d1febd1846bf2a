package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// keySet is the public keys of a KeysFile as last read.
type keySet struct {
	file  string
	size  int64
	mtime time.Time
	keys  []publicKey
}

// publicKey is one verification key and its key id (may be empty).
type publicKey struct {
	kid string
	key crypto.PublicKey
}

// readKeys reads a PEM or JWKS file of public keys.
func readKeys(file string) (*keySet, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	ks := &keySet{file: file, size: st.Size(), mtime: st.ModTime()}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		ks.keys, err = parseJWKS(trimmed)
	} else {
		ks.keys, err = parsePEM(data)
	}
	if err != nil {
		return nil, fmt.Errorf("keys file %s: %w", file, err)
	}
	if len(ks.keys) == 0 {
		return nil, fmt.Errorf("keys file %s: no public key in it", file)
	}
	return ks, nil
}

// changed reports whether the file's size or modification time differs from when ks
// was read (or the file is gone: Reload then says why).
func (ks *keySet) changed() bool {
	st, err := os.Stat(ks.file)
	return err != nil || st.Size() != ks.size || !st.ModTime().Equal(ks.mtime)
}

// parsePEM reads PUBLIC KEY and CERTIFICATE blocks; other blocks are errors.
func parsePEM(data []byte) ([]publicKey, error) {
	var keys []publicKey
	for i := 0; ; i++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			if len(bytes.TrimSpace(data)) > 0 {
				return nil, fmt.Errorf("PEM block %d: not PEM", i)
			}
			return keys, nil
		}
		var key any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				key = cert.PublicKey
			}
		default:
			return nil, fmt.Errorf("PEM block %d: %q, want PUBLIC KEY or CERTIFICATE (never a private key)", i, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i, err)
		}
		if err := checkKeyType(key); err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i, err)
		}
		keys = append(keys, publicKey{key: key})
	}
}

// parseJWKS reads a JWK Set with go-jose; private keys are refused.
func parseJWKS(data []byte) ([]publicKey, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("JWK Set: %w", err)
	}
	keys := make([]publicKey, 0, len(set.Keys))
	for i, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("JWK Set keys[%d] (kid %q): not a public key", i, k.KeyID)
		}
		if err := checkKeyType(k.Key); err != nil {
			return nil, fmt.Errorf("JWK Set keys[%d] (kid %q): %w", i, k.KeyID, err)
		}
		keys = append(keys, publicKey{kid: k.KeyID, key: k.Key})
	}
	return keys, nil
}

// checkKeyType accepts RSA (2048 bits or more), ECDSA P-256 and Ed25519 public keys.
func checkKeyType(key any) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits, want at least 2048", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ECDSA key on %s, want P-256 (ES256)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("key of type %T, want RSA, ECDSA P-256 or Ed25519", key)
	}
	return nil
}

// fits reports whether key verifies alg.
func fits(alg string, key crypto.PublicKey) bool {
	switch key.(type) {
	case *rsa.PublicKey:
		return alg == jwt.SigningMethodRS256.Alg()
	case *ecdsa.PublicKey:
		return alg == jwt.SigningMethodES256.Alg()
	case ed25519.PublicKey:
		return alg == jwt.SigningMethodEdDSA.Alg()
	}
	return false
}

// verificationKeys returns the keys that may verify a token with alg and kid: the key
// with that kid, or (no kid) every key of alg's type.
func (ks *keySet) verificationKeys(alg, kid string) (any, error) {
	var set jwt.VerificationKeySet
	for _, k := range ks.keys {
		if fits(alg, k.key) && (kid == "" || k.kid == kid) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	switch {
	case len(set.Keys) == 0 && kid != "":
		return nil, fmt.Errorf("no %s key with kid %q", alg, kid)
	case len(set.Keys) == 0:
		return nil, fmt.Errorf("no %s key", alg)
	}
	return set, nil
}
