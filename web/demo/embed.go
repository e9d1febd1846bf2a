// Package demo serves the actionsync ToDo board demo: a React + Redux Toolkit page whose
// store is synced through the server by @actionsync/redux. The page is built by
// scripts/build-demo.sh into dist/, which is committed and embedded in the binary, so
// serving it needs no Node.js.
package demo

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed dist
var dist embed.FS

// file is one embedded file, ready to serve.
type file struct {
	name  string // base name, for the content type
	data  []byte
	etag  string // strong, from the content
	ctype string
}

// contentSecurityPolicy lets the page load only its own script and style, while its
// script may call any actionsync server (?api=URL names one on another origin).
const contentSecurityPolicy = "default-src 'self'; connect-src 'self' http: https:; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler returns a handler that serves the demo: index.html at "/", the bundle, the
// style sheet and the service worker (the offline app shell) beside it, and 404 for any
// other path. It answers GET and HEAD only (405
// otherwise). Every response carries Cache-Control: no-cache and a strong ETag from the
// content, so browsers revalidate (a 304 when nothing changed) and never run a stale
// bundle against a newer server. The handler is safe for concurrent use.
func Handler() http.Handler {
	files, err := load(dist)
	if err != nil {
		// Cannot happen with files embedded at build time; answer rather than panic.
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "demo: read embedded files: "+err.Error(), http.StatusInternalServerError)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		if name == "" {
			name = "index.html"
		}
		f, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		if f.name == "index.html" {
			h.Set("Content-Security-Policy", contentSecurityPolicy)
			h.Set("Referrer-Policy", "no-referrer")
		}
		// ServeContent answers If-None-Match with 304 and handles HEAD and ranges.
		http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.data))
	})
}

// load reads every file under dist/ of fsys, keyed by its path below dist/.
func load(fsys fs.FS) (map[string]*file, error) {
	sub, err := fs.Sub(fsys, "dist")
	if err != nil {
		return nil, err
	}
	files := make(map[string]*file)
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		files[p] = &file{
			name:  path.Base(p),
			data:  data,
			etag:  `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`,
			ctype: contentType(p, data),
		}
		return nil
	})
	return files, err
}

// contentType returns the type of the file at p. The types of the files the build
// writes are fixed here rather than read from the system's MIME tables, which differ
// between machines.
func contentType(p string, data []byte) string {
	switch path.Ext(p) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	default:
		return http.DetectContentType(data)
	}
}
