package meter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// maxBody bounds provisioning request bodies.
const maxBody = 1 << 20

// HandlerPatterns are the http.ServeMux patterns Handler serves, for the
// caller that mounts it on a shared mux.
func HandlerPatterns() []string {
	return []string{
		"POST /v1/accounts",
		"GET /v1/accounts/{id}",
		"PATCH /v1/accounts/{id}",
		"POST /v1/accounts/{id}/bridges",
		"POST /v1/bridges/{id}/cameras",
		"PATCH /v1/streams/{id}",
		"DELETE /v1/cameras/{id}",
		"GET /v1/meter/streams/{id}",
		"GET /v1/purges/{id}",
		"DELETE /v1/accounts/{id}",
	}
}

// Handler serves the provisioning endpoints and the meter's stream view
// (DESIGN.md section 3). Mount it behind auth.Middleware: it requires the
// operator principal.
//
// Every write is idempotent under retry: the request id is the
// Idempotency-Key header (scoped to method and path) or, for POST and
// DELETE without one, a hash of method, path and body, so resending the
// same request is safe. PATCH without a key gets a fresh id: it sets
// absolute values, so applying it twice is harmless, and a derived id would
// wrongly swallow a deliberate A→B→A change.
func (m *Meter) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/accounts", m.operator(m.handleCreateAccount))
	mux.HandleFunc("GET /v1/accounts/{id}", m.operator(m.withID(m.handleGetAccount)))
	mux.HandleFunc("PATCH /v1/accounts/{id}", m.operator(m.withID(m.handleUpdateAccount)))
	mux.HandleFunc("POST /v1/accounts/{id}/bridges", m.operator(m.withID(m.handleCreateBridge)))
	mux.HandleFunc("POST /v1/bridges/{id}/cameras", m.operator(m.withID(m.handleCreateCamera)))
	mux.HandleFunc("PATCH /v1/streams/{id}", m.operator(m.withID(m.handleUpdateStream)))
	mux.HandleFunc("DELETE /v1/cameras/{id}", m.operator(m.withID(m.handleDeleteCamera)))
	mux.HandleFunc("GET /v1/meter/streams/{id}", m.operator(m.withID(m.handleGetStream)))
	mux.HandleFunc("GET /v1/purges/{id}", m.operator(m.withID(m.handleGetPurge)))           // purge.go
	mux.HandleFunc("DELETE /v1/accounts/{id}", m.operator(m.withID(m.handleDeleteAccount))) // purge.go
	return mux
}

type handler func(w http.ResponseWriter, r *http.Request, id string)

func (m *Meter) operator(h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if auth.FromContext(r.Context()).Kind != auth.Operator {
			httpx.WriteError(w, http.StatusForbidden, "forbidden", "operator token required")
			return
		}
		h(w, r)
	}
}

func (m *Meter) withID(h handler) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !storage.ValidID(id) {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_id", "ids are [a-zA-Z0-9_-]{1,64}")
			return
		}
		h(w, r, id)
	}
}

// readBody reads the request body (bounded) and returns it with the
// request id; on failure it has written the error response.
func readBody(w http.ResponseWriter, r *http.Request, derive bool) ([]byte, string, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
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

func decodeJSON(w http.ResponseWriter, body []byte, v any) bool {
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

func (m *Meter) writeErr(w http.ResponseWriter, r *http.Request, err error) {
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
	case isNotLeader(err), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The write may have committed; a retry with the same id is safe.
		w.Header().Set("Retry-After", "1")
		httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	default:
		m.log.Error("meter: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		httpx.WriteError(w, http.StatusInternalServerError, "internal", "internal error")
	}
}

func createdStatus(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func (m *Meter) handleCreateAccount(w http.ResponseWriter, r *http.Request) {
	body, rid, ok := readBody(w, r, true)
	if !ok {
		return
	}
	var a NewAccount
	if !decodeJSON(w, body, &a) {
		return
	}
	res, err := m.CreateAccount(r.Context(), rid, a)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, createdStatus(res.Created), res.Account)
}

func (m *Meter) handleGetAccount(w http.ResponseWriter, r *http.Request, id string) {
	a, err := m.Account(r.Context(), id)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, a)
}

func (m *Meter) handleUpdateAccount(w http.ResponseWriter, r *http.Request, id string) {
	body, rid, ok := readBody(w, r, false)
	if !ok {
		return
	}
	var p AccountPatch
	if !decodeJSON(w, body, &p) {
		return
	}
	a, err := m.UpdateAccount(r.Context(), rid, id, p)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, a)
}

func (m *Meter) handleCreateBridge(w http.ResponseWriter, r *http.Request, account string) {
	body, rid, ok := readBody(w, r, true)
	if !ok {
		return
	}
	var b NewBridge
	if !decodeJSON(w, body, &b) {
		return
	}
	res, err := m.CreateBridge(r.Context(), rid, account, b)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	// An identical bridge created by an earlier request, or by an earlier
	// attempt of this one: 200 without the token, which was shown once.
	httpx.WriteJSON(w, createdStatus(res.Created), struct {
		ID    string `json:"id"`
		Token string `json:"token,omitempty"`
	}{res.Bridge.ID, res.Token})
}

func (m *Meter) handleCreateCamera(w http.ResponseWriter, r *http.Request, bridge string) {
	body, rid, ok := readBody(w, r, true)
	if !ok {
		return
	}
	var c NewCamera
	if !decodeJSON(w, body, &c) {
		return
	}
	res, err := m.CreateCamera(r.Context(), rid, bridge, c)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, createdStatus(res.Created), res)
}

func (m *Meter) handleUpdateStream(w http.ResponseWriter, r *http.Request, id string) {
	body, rid, ok := readBody(w, r, false)
	if !ok {
		return
	}
	var p StreamPatch
	if !decodeJSON(w, body, &p) {
		return
	}
	s, err := m.UpdateStream(r.Context(), rid, id, p)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, s)
}

func (m *Meter) handleDeleteCamera(w http.ResponseWriter, r *http.Request, id string) {
	_, rid, ok := readBody(w, r, true)
	if !ok {
		return
	}
	res, err := m.DeleteCamera(r.Context(), rid, id)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"purge": res.PurgeID, "camera": res.Camera, "deleted_at": res.DeletedAt})
}

func (m *Meter) handleGetStream(w http.ResponseWriter, r *http.Request, id string) {
	rec, err := m.StreamRecord(r.Context(), id)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	u, err := m.StreamUsage(r.Context(), id) // usage.go
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, struct {
		StreamRecord
		StreamUsage
		Settings StreamSettings `json:"settings"`
	}{rec, u, rec.Settings()})
}
