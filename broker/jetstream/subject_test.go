package jetstream

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// serverPattern is the service's default channel pattern.
var serverPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

// validToken reports whether tok is one NATS subject token: no separator, no wildcard,
// no white space or control bytes, not empty.
func validToken(tok string) bool {
	if tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		switch c := tok[i]; {
		case c == '.', c == '*', c == '>', c <= ' ', c >= 0x7f:
			return false
		}
	}
	return true
}

func TestToken_RoundTrip(t *testing.T) {
	t.Parallel()
	longest := strings.Repeat("a.:-_Z9", 128/7) + "x.:-_Z9"[:128%7]
	cases := []string{
		"board:demo", "a.b.c", "x:y", "with-dash", "under_score", "_", "__", "._:-",
		".", "..", "a.", ".a", "_2E", "_ZZ", "*", ">", "a b", "tab\there", "ünïcode", "\x00\xff",
		longest, strings.Repeat(".", 128), strings.Repeat("_", 128),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, 1+rng.IntN(128))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		cases = append(cases, string(b))
	}
	for _, ch := range cases {
		tok := encodeToken(ch)
		if !validToken(tok) {
			t.Errorf("encodeToken(%q) = %q: not a valid subject token", ch, tok)
		}
		got, err := decodeToken(tok)
		if err != nil || got != ch {
			t.Errorf("decodeToken(encodeToken(%q)) = %q, %v", ch, got, err)
		}
	}
	if len(longest) != 128 || !serverPattern.MatchString(longest) {
		t.Fatalf("test bug: longest name %q (%d bytes) does not match the default pattern", longest, len(longest))
	}
	// Names of the default pattern without '.' or '_' read as themselves.
	for _, ch := range []string{"board:demo", "ABC-09:x"} {
		if tok := encodeToken(ch); tok != ch {
			t.Errorf("encodeToken(%q) = %q, want it unchanged", ch, tok)
		}
	}
	// Distinct names never share a token.
	seen := map[string]string{}
	for _, ch := range cases {
		tok := encodeToken(ch)
		if prev, ok := seen[tok]; ok && prev != ch {
			t.Errorf("%q and %q both encode to %q", prev, ch, tok)
		}
		seen[tok] = ch
	}
	for _, bad := range []string{"_", "_4", "_zz", "a_G1"} {
		if _, err := decodeToken(bad); err == nil {
			t.Errorf("decodeToken(%q): got nil error", bad)
		}
	}
}
