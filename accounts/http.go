package accounts

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/vigilcloud/vigil/auth"
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
// (DESIGN.md section 3). Mount it behind auth.Middleware: each endpoint
// asks the scope rule (Allowed) about the account of its target, and a
// sub-account's lock_billing_settings binds its own users
// (docs/accounts.md, "Who may provision what").
//
// Every write is idempotent under retry: the request id is the
// Idempotency-Key header (scoped to method and path) or, for POST and
// DELETE without one, a hash of method, path and body, so resending the
// same request is safe. PATCH without a key gets a fresh id: it sets
// absolute values, so applying it twice is harmless, and a derived id would
// wrongly swallow a deliberate A→B→A change.
func (reg *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/accounts", reg.handleCreateAccount)
	mux.HandleFunc("GET /v1/accounts/{id}", cluster.WithID(reg.handleGetAccount))
	mux.HandleFunc("PATCH /v1/accounts/{id}", cluster.WithID(reg.handleUpdateAccount))
	mux.HandleFunc("POST /v1/accounts/{id}/bridges", cluster.WithID(reg.handleCreateBridge))
	mux.HandleFunc("POST /v1/bridges/{id}/cameras", cluster.WithID(reg.handleCreateCamera))
	mux.HandleFunc("PATCH /v1/streams/{id}", cluster.WithID(reg.handleUpdateStream))
	mux.HandleFunc("DELETE /v1/cameras/{id}", cluster.WithID(reg.handleDeleteCamera))
	mux.HandleFunc("DELETE /v1/accounts/{id}", cluster.WithID(reg.handleDeleteAccount))
	mux.HandleFunc("DELETE /v1/streams/{id}", cluster.WithID(reg.handleDeleteStream))
	return mux
}

// ErrBillingLocked is a sub-account's own user changing what its reseller
// locked with lock_billing_settings (403 billing_settings_locked).
var ErrBillingLocked = fmt.Errorf("%w: the reseller locked the billing settings of this account", ErrForbidden)

// writeError answers err: 403 for a refusal of scope or lock, else as
// cluster.WriteError does.
func (reg *Registry) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrBillingLocked) {
		httpx.WriteError(w, http.StatusForbidden, "billing_settings_locked", err.Error())
		return
	}
	if WriteForbidden(w, err) {
		return
	}
	cluster.WriteError(w, r, reg.log, err)
}

// allow answers the refusal, and reports false, unless the request's
// principal may act with need on account.
func (reg *Registry) allow(w http.ResponseWriter, r *http.Request, account string, need Need) bool {
	if err := reg.Allowed(auth.FromContext(r.Context()), account, need); err != nil {
		reg.writeError(w, r, err)
		return false
	}
	return true
}

// lockedFor reports whether account is a sub-account whose billing
// settings its reseller locked, and p one of its own users: the
// reseller's users and the operator are not bound by the lock.
func (reg *Registry) lockedFor(p auth.Principal, account string) bool {
	if p.Kind != auth.User || p.Account != account {
		return false
	}
	a, ok := reg.accountRecord(account)
	return ok && a.Parent != "" && a.LockBillingSettings
}

// mayCreateAccount: the operator creates resellers (and anything); a
// reseller's admin creates sub-accounts of its own reseller only.
func (reg *Registry) mayCreateAccount(p auth.Principal, parent string) error {
	if p.Kind == auth.Operator {
		return nil
	}
	if parent == "" {
		return fmt.Errorf("%w: only the operator creates resellers", ErrForbidden)
	}
	if err := reg.Allowed(p, parent, Admin); err != nil {
		return err
	}
	if reg.Level(parent) == LevelCustomer {
		return fmt.Errorf("%w: a reseller's admin creates sub-accounts of its own reseller only", ErrForbidden)
	}
	return nil
}

// mayPatchAccount: Admin in the account; what only the reseller sets
// (lock_billing_settings, privacy_mode_allowed, billing_cycle) needs the
// reseller of a sub-account; what only the customer switches
// (privacy_mode, privacy_suspended_until) needs the account's own admin;
// the operator may do all of it. The lock binds the sub-account's own
// users.
func (reg *Registry) mayPatchAccount(p auth.Principal, id string, patch *AccountPatch) error {
	if err := reg.Allowed(p, id, Admin); err != nil || p.Kind == auth.Operator {
		return err
	}
	a, _ := reg.accountRecord(id)
	if patch.billing() && reg.lockedFor(p, id) {
		return ErrBillingLocked
	}
	if patch.resellerOnly() && (a.Parent == "" || !reg.Above(p.Account, id)) {
		return fmt.Errorf("%w: only the reseller sets lock_billing_settings, privacy_mode_allowed and billing_cycle of a sub-account", ErrForbidden)
	}
	if patch.privacy() && (p.Account != id || p.Delegated) {
		return fmt.Errorf("%w: only the account's own admin switches privacy mode or suspends it (not one its reseller created)", ErrForbidden)
	}
	return nil
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
	if err := reg.mayCreateAccount(auth.FromContext(r.Context()), a.Parent); err != nil {
		reg.writeError(w, r, err)
		return
	}
	res, err := reg.CreateAccount(r.Context(), rid, a)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, cluster.CreatedStatus(res.Created), res.Account)
}

func (reg *Registry) handleGetAccount(w http.ResponseWriter, r *http.Request, id string) {
	if !reg.allow(w, r, id, Read) {
		return
	}
	a, err := reg.Account(r.Context(), id)
	if err != nil {
		reg.writeError(w, r, err)
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
	actor := auth.FromContext(r.Context())
	if err := reg.mayPatchAccount(actor, id, &p); err != nil {
		if p.privacy() && errors.Is(err, ErrForbidden) && reg.auditor != nil && reg.Allowed(actor, id, Read) == nil {
			// A way around privacy mode tried: the customer sees it.
			if aerr := reg.auditor.Audit(r.Context(), id, actor, "privacy.change_refused", "account:"+id); aerr != nil {
				reg.log.Warn("accounts: audit of a refused privacy change", "account", id, "err", aerr)
			}
		}
		reg.writeError(w, r, err)
		return
	}
	a, err := reg.UpdateAccount(r.Context(), rid, actor, id, p)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, a)
}

func (reg *Registry) handleCreateBridge(w http.ResponseWriter, r *http.Request, account string) {
	if !reg.allow(w, r, account, Admin) {
		return
	}
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
		reg.writeError(w, r, err)
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
	account := reg.ownerOf(ownedBridge, bridge)
	if !reg.allow(w, r, account, Admin) {
		return
	}
	if reg.lockedFor(auth.FromContext(r.Context()), account) {
		reg.writeError(w, r, ErrBillingLocked)
		return
	}
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
		reg.writeError(w, r, err)
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
	account := reg.ownerOf(ownedStream, id)
	if !reg.allow(w, r, account, Admin) {
		return
	}
	if p != (StreamPatch{}) && reg.lockedFor(auth.FromContext(r.Context()), account) {
		reg.writeError(w, r, ErrBillingLocked)
		return
	}
	s, err := reg.UpdateStream(r.Context(), rid, id, p)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, s)
}

func (reg *Registry) handleDeleteCamera(w http.ResponseWriter, r *http.Request, id string) {
	if !reg.allow(w, r, reg.ownerOf(ownedCamera, id), Admin) {
		return
	}
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	res, err := reg.DeleteCamera(r.Context(), rid, id)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"purge": res.PurgeID, "camera": res.Camera, "deleted_at": res.DeletedAt})
}

func (reg *Registry) handleDeleteStream(w http.ResponseWriter, r *http.Request, id string) {
	if !reg.allow(w, r, reg.ownerOf(ownedStream, id), Admin) {
		return
	}
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	res, err := reg.DeleteStream(r.Context(), rid, id)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, res)
}

// handleDeleteAccount: the operator, or an admin of the sub-account's
// reseller (not the sub-account's own admin).
func (reg *Registry) handleDeleteAccount(w http.ResponseWriter, r *http.Request, id string) {
	if p := auth.FromContext(r.Context()); p.Kind != auth.Operator {
		a, _ := reg.accountRecord(id)
		if a.Parent == "" || !reg.Above(p.Account, id) {
			reg.writeError(w, r, fmt.Errorf("%w: only the reseller (or an account above it) deletes a sub-account", ErrForbidden))
			return
		}
		if !reg.allow(w, r, a.Parent, Admin) {
			return
		}
	}
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	res, err := reg.DeleteAccount(r.Context(), rid, id)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, res)
}
