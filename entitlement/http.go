package entitlement

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// Patterns are the http.ServeMux patterns Handler serves.
func Patterns() []string {
	return []string{
		"POST /v1/entitlements",
		"GET /v1/entitlements",
		"GET /v1/entitlements/{id}",
		"POST /v1/entitlements/{id}/split",
		"POST /v1/entitlements/{id}/return",
		"POST /v1/entitlements/{id}/activate",
	}
}

// Handler serves the entitlement endpoints (docs/billing.md,
// "Entitlements"). Mount it behind auth.Middleware. The operator creates;
// reads need any role in scope (the owner's account or one above it);
// split and activate need an admin of the owner, taking a split back an
// admin of the parent's owner. An unknown id is 404 before any scope
// check (activation IDs are unguessable). Writes are idempotent under
// retry like every POST: the request id is the Idempotency-Key header or
// a hash of method, path and body.
func (reg *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/entitlements", reg.handleCreate)
	mux.HandleFunc("GET /v1/entitlements", reg.handleList)
	mux.HandleFunc("GET /v1/entitlements/{id}", cluster.WithID(reg.handleGet))
	mux.HandleFunc("POST /v1/entitlements/{id}/split", cluster.WithID(reg.handleSplit))
	mux.HandleFunc("POST /v1/entitlements/{id}/return", cluster.WithID(reg.handleReturn))
	mux.HandleFunc("POST /v1/entitlements/{id}/activate", cluster.WithID(reg.handleActivate))
	return mux
}

// View is an entitlement as the API shows it.
type View struct {
	Entitlement
	Available int    `json:"available"`
	Units     []Unit `json:"units"`
}

func (reg *Registry) view(e Entitlement) View {
	v := View{Entitlement: e, Available: e.Available(), Units: reg.units(e.ID)}
	if v.Units == nil {
		v.Units = []Unit{}
	}
	return v
}

func (reg *Registry) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if !accounts.WriteForbidden(w, err) {
		cluster.WriteError(w, r, reg.cfg.Log, err)
	}
}

func (reg *Registry) allow(w http.ResponseWriter, r *http.Request, account string, need accounts.Need) bool {
	if err := reg.cfg.Scope.Allowed(auth.FromContext(r.Context()), account, need); err != nil {
		reg.writeError(w, r, err)
		return false
	}
	return true
}

// CreateRequest is the body of POST /v1/entitlements.
type CreateRequest struct {
	Account    string `json:"account"`
	Product    string `json:"product"`
	Quantity   int    `json:"quantity"`
	TermMonths int    `json:"term_months"`
}

func (reg *Registry) handleCreate(w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	if p.Kind != auth.Operator {
		reg.writeError(w, r, fmt.Errorf("%w: only the operator creates entitlements", accounts.ErrForbidden))
		return
	}
	body, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	var in CreateRequest
	if !cluster.DecodeJSON(w, body, &in) {
		return
	}
	e, created, err := reg.Create(r.Context(), rid, p, CreateCmd{Account: in.Account, Product: in.Product, Quantity: in.Quantity, TermMonths: in.TermMonths})
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, cluster.CreatedStatus(created), reg.view(e))
}

const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
)

// handleList lists the entitlements in the caller's scope (?account= only
// that owner's), paged like the console's lists.
func (reg *Registry) handleList(w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	if p.Kind != auth.Operator {
		if err := reg.cfg.Scope.Allowed(p, p.Account, accounts.Read); err != nil { // bridges, billing: 403
			reg.writeError(w, r, err)
			return
		}
	}
	q := r.URL.Query()
	limit, after := defaultPageLimit, ""
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageLimit {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_limit", "limit is 1 to 1000")
			return
		}
		limit = n
	}
	if v := q.Get("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || !storage.ValidID(string(b)) {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_cursor", "malformed cursor")
			return
		}
		after = string(b)
	}
	account := q.Get("account")
	if account != "" {
		if !storage.ValidID(account) {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_id", "ids are [a-zA-Z0-9_-]{1,64}")
			return
		}
		if !reg.allow(w, r, account, accounts.Read) {
			return
		}
	}
	keep := func(owner string) bool {
		if account != "" && owner != account {
			return false
		}
		return p.Kind == auth.Operator || p.Account == owner || reg.cfg.Scope.Above(p.Account, owner)
	}
	all := reg.List(r.Context(), keep)
	i := 0
	for i < len(all) && all[i].ID <= after {
		i++
	}
	all = all[i:]
	out := map[string]any{}
	if len(all) > limit {
		all = all[:limit]
		out["next_cursor"] = base64.RawURLEncoding.EncodeToString([]byte(all[len(all)-1].ID))
	}
	views := make([]View, len(all))
	for i, e := range all {
		views[i] = reg.view(e)
	}
	out["entitlements"] = views
	httpx.WriteJSON(w, http.StatusOK, out)
}

// lookup answers 404 for an unknown entitlement.
func (reg *Registry) lookup(w http.ResponseWriter, r *http.Request, id string) (Entitlement, bool) {
	e, err := reg.Get(r.Context(), id)
	if err != nil {
		reg.writeError(w, r, err)
		return Entitlement{}, false
	}
	return e, true
}

func (reg *Registry) handleGet(w http.ResponseWriter, r *http.Request, id string) {
	e, ok := reg.lookup(w, r, id)
	if !ok || !reg.allow(w, r, e.Owner, accounts.Read) {
		return
	}
	httpx.WriteJSON(w, http.StatusOK, reg.view(e))
}

// SplitRequest is the body of POST /v1/entitlements/{id}/split.
type SplitRequest struct {
	Account  string `json:"account"`
	Quantity int    `json:"quantity"`
}

// ownerWrite checks that the caller is an admin of entitlement id's owner
// and decodes the body into in; it returns the request id, or false when it
// has written the refusal.
func (reg *Registry) ownerWrite(w http.ResponseWriter, r *http.Request, id string, in any) (string, bool) {
	e, ok := reg.lookup(w, r, id)
	if !ok || !reg.allow(w, r, e.Owner, accounts.Admin) {
		return "", false
	}
	body, rid, ok := cluster.ReadBody(w, r, true)
	return rid, ok && cluster.DecodeJSON(w, body, in)
}

func (reg *Registry) handleSplit(w http.ResponseWriter, r *http.Request, id string) {
	var in SplitRequest
	rid, ok := reg.ownerWrite(w, r, id, &in)
	if !ok {
		return
	}
	if !storage.ValidID(in.Account) {
		httpx.WriteError(w, http.StatusBadRequest, "invalid_id", "account: ids are [a-zA-Z0-9_-]{1,64}")
		return
	}
	c, created, err := reg.Split(r.Context(), rid, auth.FromContext(r.Context()), id, in.Account, in.Quantity)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, cluster.CreatedStatus(created), reg.view(c))
}

// handleReturn takes a split back: an admin of the account that split it
// (the parent's owner) or above it.
func (reg *Registry) handleReturn(w http.ResponseWriter, r *http.Request, id string) {
	e, ok := reg.lookup(w, r, id)
	if !ok {
		return
	}
	p := auth.FromContext(r.Context())
	if e.Parent == "" && p.Kind != auth.Operator {
		reg.writeError(w, r, fmt.Errorf("%w: entitlement %s was not split to its owner", accounts.ErrForbidden, id))
		return
	}
	if e.Parent != "" {
		parent, ok := reg.lookup(w, r, e.Parent)
		if !ok || !reg.allow(w, r, parent.Owner, accounts.Admin) {
			return
		}
	}
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	c, err := reg.TakeBack(r.Context(), rid, p, id)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, reg.view(c))
}

// ActivateRequest is the body of POST /v1/entitlements/{id}/activate.
type ActivateRequest struct {
	Streams []string `json:"streams"`
}

func (reg *Registry) handleActivate(w http.ResponseWriter, r *http.Request, id string) {
	var in ActivateRequest
	rid, ok := reg.ownerWrite(w, r, id, &in)
	if !ok {
		return
	}
	res, err := reg.Activate(r.Context(), rid, auth.FromContext(r.Context()), id, in.Streams)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"entitlement": reg.view(res.Entitlement), "units": res.Units})
}
