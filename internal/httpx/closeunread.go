package httpx

import (
	"io"
	"net/http"
	"sync/atomic"
)

// CloseUnread closes the connection after a response that starts before the
// request body was read to its end (an early 401, 404 or 503). Otherwise
// net/http reads up to 256 KiB of the rest of the body to reuse the
// connection, and a client that stalls its body would hold the connection,
// and the response it waits for, indefinitely.
func CloseUnread(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		b := &eofBody{ReadCloser: r.Body}
		r.Body = b
		h.ServeHTTP(&closeUnreadWriter{ResponseWriter: w, body: b}, r)
	})
}

type eofBody struct {
	io.ReadCloser
	eof atomic.Bool
}

func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.eof.Store(true) // EOF, or an error after which the connection is closed anyway
	}
	return n, err
}

type closeUnreadWriter struct {
	http.ResponseWriter
	body  *eofBody
	wrote bool
}

func (w *closeUnreadWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		if !w.body.eof.Load() {
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *closeUnreadWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Flush keeps streaming responses streaming.
func (w *closeUnreadWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the connection.
func (w *closeUnreadWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
