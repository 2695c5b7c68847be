// Package ui serves the viewer page, /ui/: sign in, the cameras in scope
// with their health, a 24-hour timeline, playback, live view and clip
// export, all from the files under static/, embedded in the binary so that
// `go build` needs nothing else.
//
// The page is static: it holds no secret and talks to the API with the
// viewer's own bearer token (kept in the tab's sessionStorage, sent only
// in the Authorization header; segment URLs are the playlists' signed
// ones). Every answer carries a Content-Security-Policy that allows only
// the page's own files, so an injected script or style does not run.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/internal/httpx"
)

// Prefix is the path the page is served under.
const Prefix = "/ui/"

// Patterns are the ServeMux patterns Handler serves (GET matches HEAD too).
func Patterns() []string { return []string{"GET /ui", "GET /ui/"} }

// CSP is the page's Content-Security-Policy. Media come from blob: URLs
// (MediaSource) and downloads of clips too; hls.js runs without its
// worker, so no script, worker or style comes from anywhere but /ui/.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

// file is one embedded file, ready to serve.
type file struct {
	body  []byte
	ctype string
	etag  string
}

// Handler serves the page. It is safe for concurrent use.
type Handler struct {
	files map[string]file // by name under static/
}

// New returns the handler over the embedded files.
func New() *Handler {
	h := &Handler{files: map[string]file{}}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "text/plain; charset=utf-8" // the licence
		}
		sum := sha256.Sum256(b)
		h.files[strings.TrimPrefix(p, "static/")] = file{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("ui: embedded files: " + err.Error()) // cannot happen: the FS is compiled in
	}
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return
	}
	if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if name == "" {
		name = "index.html"
	}
	f, found := h.files[name]
	if !ok || !found {
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no such file under "+Prefix)
		return
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	// Revalidated on every load (cheap: an ETag), so a new binary's page
	// is never mixed with an old cached script.
	hd.Set("Cache-Control", "no-cache")
	hd.Set("Content-Type", f.ctype)
	hd.Set("ETag", f.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
