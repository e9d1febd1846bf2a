package main

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/actionsync/actionsync/auth"
)

// demoTokenTTL is how long a demo token is valid: short, so that the demo exercises the
// middleware's token refresh.
const demoTokenTTL = 10 * time.Minute

// demoTokenPath serves demo tokens with --demo-auth.
const demoTokenPath = "/demo-token"

// demoTokenHandler hands a token to whoever asks, for the demo and its browser tests
// with authentication on: GET /demo-token?user=NAME&role=edit|view returns
// {"token": "...", "expires": "RFC 3339"} signed with the HS256 secret. edit may
// subscribe, publish and read history on every channel; view may subscribe and read.
// It is development only: anyone who reaches it gets a token.
func demoTokenHandler(secret []byte, v *auth.Verifier, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		user, role := r.URL.Query().Get("user"), r.URL.Query().Get("role")
		allow := []auth.Right{auth.RightSubscribe, auth.RightHistory}
		switch role {
		case "", "edit":
			allow = append(allow, auth.RightPublish)
		case "view":
		default:
			http.Error(w, `role: want "edit" or "view"`, http.StatusBadRequest)
			return
		}
		exp := now().Add(demoTokenTTL)
		tok, err := auth.Mint(auth.Claims{Subject: user, Expires: exp,
			Rights: []auth.Grant{{Channels: []string{"*"}, Allow: allow}}}, secret, "")
		if err == nil {
			// Check what is handed out: a user name that cannot be a sub is the caller's error.
			_, err = v.Verify(tok)
		}
		if err != nil {
			http.Error(w, "user: want 1..48 characters of [A-Za-z0-9_.-]", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok, "expires": exp.UTC().Format(time.RFC3339)})
	})
}
