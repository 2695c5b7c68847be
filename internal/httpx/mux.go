package httpx

import (
	"net/http"
	"strings"
)

// JSONMux serves mux, answering requests that match none of its patterns
// with the contract's JSON error instead of ServeMux's plain text: 404
// not_found, or 405 method_not_allowed with the Allow header the mux computed.
func JSONMux(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// No pattern: the mux's own 404 or 405. Let it decide which, then
		// write our body.
		rec := &statusRecorder{header: http.Header{}}
		mux.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed",
				r.Method+" is not allowed on "+r.URL.Path+" (allowed: "+strings.ReplaceAll(rec.header.Get("Allow"), " ", "")+")")
			return
		}
		WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	})
}

// statusRecorder keeps the status and headers a handler writes and drops
// its body.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}
