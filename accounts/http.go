package accounts

import (
	"net/http"

	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/httpx"
)

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
		"DELETE /v1/accounts/{id}",
		"DELETE /v1/streams/{id}",
	}
}

// Handler serves the provisioning endpoints
// (DESIGN.md section 3). Mount it behind auth.Middleware: it requires the
// operator principal.
//
// Every write is idempotent under retry: the request id is the
// Idempotency-Key header (scoped to method and path) or, for POST and
// DELETE without one, a hash of method, path and body, so resending the
// same request is safe. PATCH without a key gets a fresh id: it sets
// absolute values, so applying it twice is harmless, and a derived id would
// wrongly swallow a deliberate A→B→A change.
func (reg *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/accounts", cluster.Operator(reg.handleCreateAccount))
	mux.HandleFunc("GET /v1/accounts/{id}", cluster.Operator(cluster.WithID(reg.handleGetAccount)))
	mux.HandleFunc("PATCH /v1/accounts/{id}", cluster.Operator(cluster.WithID(reg.handleUpdateAccount)))
	mux.HandleFunc("POST /v1/accounts/{id}/bridges", cluster.Operator(cluster.WithID(reg.handleCreateBridge)))
	mux.HandleFunc("POST /v1/bridges/{id}/cameras", cluster.Operator(cluster.WithID(reg.handleCreateCamera)))
	mux.HandleFunc("PATCH /v1/streams/{id}", cluster.Operator(cluster.WithID(reg.handleUpdateStream)))
	mux.HandleFunc("DELETE /v1/cameras/{id}", cluster.Operator(cluster.WithID(reg.handleDeleteCamera)))
	mux.HandleFunc("DELETE /v1/accounts/{id}", cluster.Operator(cluster.WithID(reg.handleDeleteAccount)))
	mux.HandleFunc("DELETE /v1/streams/{id}", cluster.Operator(cluster.WithID(reg.handleDeleteStream))) // purge.go
	return mux
}

func (reg *Registry) handleCreateAccount(w http.ResponseWriter, r *http.Request) {
	body, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	var a NewAccount
	if !cluster.DecodeJSON(w, body, &a) {
		return
	}
	res, err := reg.CreateAccount(r.Context(), rid, a)
	if err != nil {
		cluster.WriteError(w, r, reg.log, err)
		return
	}
	httpx.WriteJSON(w, cluster.CreatedStatus(res.Created), res.Account)
}

func (reg *Registry) handleGetAccount(w http.ResponseWriter, r *http.Request, id string) {
	a, err := reg.Account(r.Context(), id)
	if err != nil {
		cluster.WriteError(w, r, reg.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, a)
}

func (reg *Registry) handleUpdateAccount(w http.ResponseWriter, r *http.Request, id string) {
	body, rid, ok := cluster.ReadBody(w, r, false)
	if !ok {
		return
	}
	var p AccountPatch
	if !cluster.DecodeJSON(w, body, &p) {
		return
	}
	a, err := reg.UpdateAccount(r.Context(), rid, id, p)
	if err != nil {
		cluster.WriteError(w, r, reg.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, a)
}

func (reg *Registry) handleCreateBridge(w http.ResponseWriter, r *http.Request, account string) {
	body, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	var b NewBridge
	if !cluster.DecodeJSON(w, body, &b) {
		return
	}
	res, err := reg.CreateBridge(r.Context(), rid, account, b)
	if err != nil {
		cluster.WriteError(w, r, reg.log, err)
		return
	}
	// An identical bridge created by an earlier request, or by an earlier
	// attempt of this one: 200 without the token, which was shown once.
	httpx.WriteJSON(w, cluster.CreatedStatus(res.Created), struct {
		ID    string `json:"id"`
		Token string `json:"token,omitempty"`
	}{res.Bridge.ID, res.Token})
}

func (reg *Registry) handleCreateCamera(w http.ResponseWriter, r *http.Request, bridge string) {
	body, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	var c NewCamera
	if !cluster.DecodeJSON(w, body, &c) {
		return
	}
	res, err := reg.CreateCamera(r.Context(), rid, bridge, c)
	if err != nil {
		cluster.WriteError(w, r, reg.log, err)
		return
	}
	httpx.WriteJSON(w, cluster.CreatedStatus(res.Created), res)
}

func (reg *Registry) handleUpdateStream(w http.ResponseWriter, r *http.Request, id string) {
	body, rid, ok := cluster.ReadBody(w, r, false)
	if !ok {
		return
	}
	var p StreamPatch
	if !cluster.DecodeJSON(w, body, &p) {
		return
	}
	s, err := reg.UpdateStream(r.Context(), rid, id, p)
	if err != nil {
		cluster.WriteError(w, r, reg.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, s)
}

func (reg *Registry) handleDeleteCamera(w http.ResponseWriter, r *http.Request, id string) {
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	res, err := reg.DeleteCamera(r.Context(), rid, id)
	if err != nil {
		cluster.WriteError(w, r, reg.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"purge": res.PurgeID, "camera": res.Camera, "deleted_at": res.DeletedAt})
}

func (reg *Registry) handleDeleteStream(w http.ResponseWriter, r *http.Request, id string) {
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	res, err := reg.DeleteStream(r.Context(), rid, id)
	if err != nil {
		cluster.WriteError(w, r, reg.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, res)
}

func (reg *Registry) handleDeleteAccount(w http.ResponseWriter, r *http.Request, id string) {
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	res, err := reg.DeleteAccount(r.Context(), rid, id)
	if err != nil {
		cluster.WriteError(w, r, reg.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, res)
}
