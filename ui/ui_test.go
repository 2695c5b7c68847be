package ui_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/ui"
)

// server mounts the page as cmd/vigil does: on a ServeMux (which cleans
// paths) behind the contract's JSON errors.
func server(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	page := ui.New()
	for _, p := range ui.Patterns() {
		mux.Handle(p, page)
	}
	s := httptest.NewServer(httpx.JSONMux(mux))
	t.Cleanup(s.Close)
	return s
}

func get(t *testing.T, method, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestServesThePage(t *testing.T) {
	s := server(t)
	for path, ctype := range map[string]string{
		"/ui/":               "text/html; charset=utf-8",
		"/ui/index.html":     "text/html; charset=utf-8",
		"/ui/app.js":         "text/javascript; charset=utf-8",
		"/ui/app.css":        "text/css; charset=utf-8",
		"/ui/hls.min.js":     "text/javascript; charset=utf-8",
		"/ui/hls.js.LICENSE": "text/plain; charset=utf-8",
		"/ui/?stream=x":      "text/html; charset=utf-8",
	} {
		resp, body := get(t, "GET", s.URL+path, nil)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ctype || body == "" {
			t.Errorf("GET %s: %d %q (%d bytes), want 200 %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), ctype)
		}
		h := resp.Header
		if h.Get("Content-Security-Policy") != ui.CSP || h.Get("X-Content-Type-Options") != "nosniff" ||
			h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: security headers %v", path, h)
		}
	}
	// HEAD, and a revalidation by ETag.
	resp, body := get(t, "HEAD", s.URL+"/ui/app.js", nil)
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("ETag") == "" {
		t.Fatalf("HEAD: %d %q etag %q", resp.StatusCode, body, resp.Header.Get("ETag"))
	}
	resp, _ = get(t, "GET", s.URL+"/ui/app.js", map[string]string{"If-None-Match": resp.Header.Get("ETag")})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: %d, want 304", resp.StatusCode)
	}
	// The page is public: it holds no secret, so no credential is asked
	// for, and a wrong one is not a failed authentication.
	resp, _ = get(t, "GET", s.URL+"/ui/", map[string]string{"Authorization": "Bearer not-a-token"})
	if resp.StatusCode != 200 {
		t.Errorf("with a wrong token: %d", resp.StatusCode)
	}
	// Truncated, out-of-order and duplicated ranges: refused (416) or
	// ignored (the whole file), never a wrong slice.
	for _, rng := range []string{"bytes=", "bytes=9-0", "bytes=-", "bytes=0-1,0-1,0-1", "bytes=999999999-"} {
		resp, body := get(t, "GET", s.URL+"/ui/app.css", map[string]string{"Range": rng})
		switch resp.StatusCode {
		case http.StatusRequestedRangeNotSatisfiable, http.StatusOK:
		case http.StatusPartialContent:
			if rng != "bytes=0-1,0-1,0-1" || !strings.Contains(resp.Header.Get("Content-Type"), "multipart/byteranges") {
				t.Errorf("Range %q: 206 %q", rng, body)
			}
		default:
			t.Errorf("Range %q: %d", rng, resp.StatusCode)
		}
	}
	// A range of a file (players and download managers ask for them).
	resp, body = get(t, "GET", s.URL+"/ui/hls.min.js", map[string]string{"Range": "bytes=0-9"})
	if resp.StatusCode != http.StatusPartialContent || len(body) != 10 {
		t.Errorf("range: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// TestRefusesWhatIsNotThePage sends malformed, traversing, oversized,
// duplicated and wrong-method requests: each gets a JSON error (or a
// redirect to the clean path), never a file from elsewhere.
func TestRefusesWhatIsNotThePage(t *testing.T) {
	s := server(t)
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/ui/nope.js", 404, "not_found"},
		{"GET", "/ui/static/app.js", 404, "not_found"},
		{"GET", "/ui/" + strings.Repeat("a", 8000), 404, "not_found"},
		{"GET", "/ui/app.js/", 404, "not_found"},
		{"GET", "/ui/APP.JS", 404, "not_found"},
		{"GET", "/ui/app.js%00", 404, "not_found"},
		{"GET", "/ui/%2e%2e/go.mod", 404, "not_found"},
		{"GET", "/ui/..%2fui.go", 404, "not_found"},
		{"GET", "/ui/ui.go", 404, "not_found"},
		{"POST", "/ui/", 405, "method_not_allowed"},
		{"DELETE", "/ui/app.js", 405, "method_not_allowed"},
		{"PUT", "/ui/app.js", 405, "method_not_allowed"},
	} {
		resp, body := get(t, c.method, s.URL+c.path, nil)
		var e httpx.Error
		if resp.StatusCode != c.status || json.Unmarshal([]byte(body), &e) != nil || e.Code != c.code {
			t.Errorf("%s %.40s: %d %q, want %d %s", c.method, c.path, resp.StatusCode, body, c.status, c.code)
		}
	}
	// Unclean paths are redirected to the clean one, which is then served
	// or refused as above; /ui to /ui/.
	for path, want := range map[string]string{"/ui": "/ui/", "/ui//app.js": "/ui/app.js", "/ui/x/../app.js": "/ui/app.js"} {
		resp, _ := get(t, "GET", s.URL+path, nil)
		if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != want {
			t.Errorf("GET %s: %d to %q, want a redirect to %s", path, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
}

// TestPageHoldsNoInlineCode keeps the page within its CSP: no inline
// script, handler or style, every file it loads embedded, and the token
// only ever in a header.
func TestPageHoldsNoInlineCode(t *testing.T) {
	html, err := os.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	page := string(html)
	if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).MatchString(page) || regexp.MustCompile(`(?i)\son[a-z]+=|<style|\sstyle=`).MatchString(page) {
		t.Error("index.html has inline code or style, which the CSP refuses")
	}
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1) {
		if ref := m[1]; !strings.HasPrefix(ref, "data:") {
			if _, err := os.Stat("static/" + ref); err != nil {
				t.Errorf("index.html loads %s, which is not embedded: %v", ref, err)
			}
		}
	}
	js, err := os.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "localStorage", "document.cookie", "token=", "?token"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}

// TestEmbedsPinnedHLSJS checks offline that the embedded hls.js is the
// version ui/package.json pins (scripts/hlsjs.sh --check compares bytes
// with the registry's).
func TestEmbedsPinnedHLSJS(t *testing.T) {
	var pkg struct{ Dependencies map[string]string }
	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	v := pkg.Dependencies["hls.js"]
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(v) {
		t.Fatalf("package.json pins hls.js %q: want an exact version", v)
	}
	var lock struct {
		Packages map[string]struct{ Version, Integrity string }
	}
	b, err = os.ReadFile("package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		t.Fatal(err)
	}
	if l := lock.Packages["node_modules/hls.js"]; l.Version != v || !strings.HasPrefix(l.Integrity, "sha512-") {
		t.Errorf("package-lock.json has hls.js %+v, package.json pins %s", l, v)
	}
	js, err := os.ReadFile("static/hls.min.js")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"`+v+`"`) {
		t.Errorf("static/hls.min.js is not hls.js %s", v)
	}
}
