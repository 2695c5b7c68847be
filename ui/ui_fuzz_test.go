package ui_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vigilcloud/vigil/ui"
)

// FuzzHandler sends any path and method: the answer is a file of the page
// (200, 206, 304), a redirect to /ui/, or a JSON error, and never panics.
func FuzzHandler(f *testing.F) {
	for _, s := range []string{"/ui/", "/ui", "/ui/app.js", "/ui/../x", "/ui/%2e%2e", "/ui/hls.min.js", "/ui/\x00", "/other"} {
		f.Add("GET", s, "")
	}
	f.Add("HEAD", "/ui/app.css", "bytes=0-3")
	f.Add("POST", "/ui/", "")
	h := ui.New()
	f.Fuzz(func(t *testing.T, method, path, rng string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Method = method
		req.URL.Path = path
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch c := w.Code; {
		case c == 200 || c == 206 || c == 304 || c == 416:
			if w.Header().Get("Content-Security-Policy") != ui.CSP {
				t.Fatalf("%s %q: %d without the CSP", method, path, c)
			}
		case c == 301:
			if w.Header().Get("Location") != ui.Prefix {
				t.Fatalf("%s %q: redirect to %q", method, path, w.Header().Get("Location"))
			}
		case c == 404 || c == 405:
			if !strings.Contains(w.Body.String(), `"code"`) {
				t.Fatalf("%s %q: %d %q is not a JSON error", method, path, c, w.Body.String())
			}
		default:
			t.Fatalf("%s %q: status %d", method, path, c)
		}
	})
}
