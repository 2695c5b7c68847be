package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestJSONMuxErrors(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /things/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("PUT /things/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.HandleFunc("/tree/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	h := JSONMux(mux)
	for _, c := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/things/1", 204, "", ""},
		{"PUT", "/things/1", 201, "", ""},
		{"GET", "/tree", 307, "", ""}, // the mux's redirect is kept
		{"GET", "/nope", 404, "not_found", ""},
		{"DELETE", "/things/1", 405, "method_not_allowed", "GET, HEAD, PUT"},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
		if w.Code != c.status {
			t.Errorf("%s %s: status %d, want %d", c.method, c.path, w.Code, c.status)
			continue
		}
		if c.code == "" {
			continue
		}
		var e Error
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", c.method, c.path, ct)
		}
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code != c.code || e.Error == "" {
			t.Errorf("%s %s: body %q (%v), want code %q", c.method, c.path, w.Body, err, c.code)
		}
		if got := w.Header().Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
}
