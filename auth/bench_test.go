package auth_test

import (
	"testing"
	"time"

	"github.com/actionsync/actionsync/auth"
)

// BenchmarkVerifier_HS256 is what authentication costs per unary call and per stream
// start: one token verified, with a grant of two channel patterns and three rights.
func BenchmarkVerifier_HS256(b *testing.B) {
	v, err := auth.NewVerifier(auth.Config{HS256Secret: secret, Now: func() time.Time { return t0 }})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := auth.Mint(auth.Claims{Subject: "alice", Expires: t0.Add(time.Hour), Rights: []auth.Grant{{
		Channels: []string{"board:42", "board:team-7-*"},
		Allow:    []auth.Right{auth.RightSubscribe, auth.RightPublish, auth.RightHistory},
	}}}, secret, "")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		id, err := v.Verify(tok)
		if err != nil || id.Check("board:team-7-x", auth.RightPublish, "ADD_TASK") != nil {
			b.Fatal(err)
		}
	}
}
