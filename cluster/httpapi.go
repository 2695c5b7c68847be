package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/internal/httpx"
)

// The HTTP side of replicated writes, shared by the domains' handlers.

// MaxBody bounds provisioning request bodies.
const MaxBody = 1 << 20

// Operator lets only the operator principal through.
func Operator(h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if auth.FromContext(r.Context()).Kind != auth.Operator {
			httpx.WriteError(w, http.StatusForbidden, "forbidden", "operator token required")
			return
		}
		h(w, r)
	}
}

// IDHandler is a handler of a path with an {id}.
type IDHandler func(w http.ResponseWriter, r *http.Request, id string)

// WithID checks the path's {id} before h sees it.
func WithID(h IDHandler) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !validID(id) {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_id", "ids are [a-zA-Z0-9_-]{1,64}")
			return
		}
		h(w, r, id)
	}
}

// ReadBody reads the request body (bounded) and returns it with the
// request id of the write; on failure it has written the error response.
// The request id is the Idempotency-Key header (scoped to method and path)
// or, with derive (POST and DELETE), a hash of method, path and body, so
// resending the same request is safe. Without either it is empty: a fresh
// random id (a PATCH sets absolute values, so applying it twice is
// harmless, and a derived id would wrongly swallow a deliberate A→B→A).
func ReadBody(w http.ResponseWriter, r *http.Request, derive bool) ([]byte, string, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpx.WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds 1 MiB")
		} else {
			httpx.WriteError(w, http.StatusBadRequest, "malformed_body", "reading body: "+err.Error())
		}
		return nil, "", false
	}
	h := sha256.New()
	h.Write([]byte(r.Method + " " + r.URL.Path + "\n"))
	switch key := r.Header.Get("Idempotency-Key"); {
	case key != "":
		if len(key) > 255 {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key is at most 255 bytes")
			return nil, "", false
		}
		h.Write([]byte("key\n" + key))
	case derive:
		h.Write([]byte("body\n"))
		h.Write(body)
	default:
		return body, "", true // a fresh random id
	}
	return body, hex.EncodeToString(h.Sum(nil)), true
}

// DecodeJSON decodes body into v, refusing unknown fields and trailing
// data; on failure it has written the 400.
func DecodeJSON(w http.ResponseWriter, body []byte, v any) bool {
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	err := d.Decode(v)
	if err == nil && d.More() {
		err = errors.New("trailing data after the JSON object")
	}
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "malformed_json", "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

// WriteError answers a failed read or write: a refusal with its code, a
// write whose fate is unknown with 503 (a retry with the same id is safe),
// anything else with a logged 500.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var e *Error
	switch {
	case errors.As(err, &e) && errors.Is(e.Kind, ErrInvalid):
		httpx.WriteError(w, http.StatusBadRequest, e.Code, e.Msg)
	case errors.As(err, &e) && errors.Is(e.Kind, ErrNotFound):
		httpx.WriteError(w, http.StatusNotFound, e.Code, e.Msg)
	case errors.As(err, &e) && errors.Is(e.Kind, ErrConflict):
		httpx.WriteError(w, http.StatusConflict, e.Code, e.Msg)
	case errors.Is(err, ErrNotFound):
		httpx.WriteError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, ErrNotLeader), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The write may have committed; a retry with the same id is safe.
		w.Header().Set("Retry-After", "1")
		httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	default:
		log.Error("meter: request failed", "method", r.Method, "path", auth.SafePath(r.URL.Path), "err", err)
		httpx.WriteError(w, http.StatusInternalServerError, "internal", "internal error")
	}
}

// CreatedStatus is 201 for a create that created, 200 for a repeat.
func CreatedStatus(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}
