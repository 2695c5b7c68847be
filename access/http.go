package access

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/httpx"
)

// Patterns are the http.ServeMux patterns Handler serves.
func Patterns() []string {
	return []string{
		"POST /v1/accounts/{id}/users",
		"GET /v1/accounts/{id}/users",
		"DELETE /v1/users/{id}",
		"POST /v1/invitations/{token}/accept",
		"POST /v1/sessions",
		"POST /v1/tokens",
		"GET /v1/tokens",
		"DELETE /v1/tokens/{id}",
		"GET /v1/accounts/{id}/audit",
	}
}

// Anonymous reports the requests that carry their own credential instead
// of a bearer token: a login and an invitation's acceptance.
func Anonymous(r *http.Request) bool {
	return r.Method == http.MethodPost && (r.URL.Path == "/v1/sessions" ||
		strings.HasPrefix(r.URL.Path, "/v1/invitations/") && strings.HasSuffix(r.URL.Path, "/accept"))
}

// Handler serves users, invitations, sessions, tokens and the audit log.
// Mount it behind auth.Middleware with Anonymous among its anonymous paths.
func (reg *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/accounts/{id}/users", cluster.WithID(reg.handleCreateUser))
	mux.HandleFunc("GET /v1/accounts/{id}/users", cluster.WithID(reg.handleListUsers))
	mux.HandleFunc("DELETE /v1/users/{id}", cluster.WithID(reg.handleRemoveUser))
	mux.HandleFunc("POST /v1/invitations/{token}/accept", reg.handleAccept)
	mux.HandleFunc("POST /v1/sessions", reg.handleLogin)
	mux.HandleFunc("POST /v1/tokens", reg.handleCreateToken)
	mux.HandleFunc("GET /v1/tokens", reg.handleListTokens)
	mux.HandleFunc("DELETE /v1/tokens/{id}", cluster.WithID(reg.handleRevokeToken))
	mux.HandleFunc("GET /v1/accounts/{id}/audit", cluster.WithID(reg.handleAudit))
	return mux
}

// WriteError answers err, mapping ErrForbidden to 403.
func (reg *Registry) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	if accounts.WriteForbidden(w, err) {
		return
	}
	cluster.WriteError(w, r, reg.cfg.Log, err)
}

func (reg *Registry) handleCreateUser(w http.ResponseWriter, r *http.Request, account string) {
	p := auth.FromContext(r.Context())
	if err := reg.cfg.Accounts.Allowed(p, account, accounts.Admin); err != nil {
		reg.WriteError(w, r, err)
		return
	}
	body, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	var in struct {
		Email string `json:"email"`
		Role  string `json:"role"`
	}
	if !cluster.DecodeJSON(w, body, &in) {
		return
	}
	u, inv, err := reg.CreateUser(r.Context(), rid, p, account, in.Email, in.Role)
	if err != nil {
		reg.WriteError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"user": u, "invitation": inv})
}

func (reg *Registry) handleListUsers(w http.ResponseWriter, r *http.Request, account string) {
	if err := reg.cfg.Accounts.Allowed(auth.FromContext(r.Context()), account, accounts.Read); err != nil {
		reg.WriteError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"users": reg.Users(r.Context(), account)})
}

func (reg *Registry) handleRemoveUser(w http.ResponseWriter, r *http.Request, id string) {
	p := auth.FromContext(r.Context())
	u, err := reg.User(r.Context(), id)
	if err == nil {
		err = reg.cfg.Accounts.Allowed(p, u.Account, accounts.Admin)
	}
	if err != nil {
		reg.WriteError(w, r, err)
		return
	}
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	if _, err := reg.RemoveUser(r.Context(), rid, p, id); err != nil {
		reg.WriteError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"removed": id})
}

// limited answers 429 when src or identity failed too often.
func (reg *Registry) limited(w http.ResponseWriter, r *http.Request, identity string) bool {
	if reg.cfg.Limiter == nil {
		return false
	}
	if retry, ok := reg.cfg.Limiter.Check("login", auth.Source(r.RemoteAddr), identity); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(auth.RetryAfterSeconds(retry)))
		httpx.WriteError(w, http.StatusTooManyRequests, "too_many_auth_failures", "too many failed attempts; retry later")
		return true
	}
	return false
}

func (reg *Registry) fail(r *http.Request, reason, identity string) {
	if reg.cfg.Limiter != nil {
		reg.cfg.Limiter.Fail(r.Context(), "login", reason, auth.Source(r.RemoteAddr), identity)
	}
}

func (reg *Registry) handleAccept(w http.ResponseWriter, r *http.Request) {
	token := r.PathValue("token")
	if !validToken(token) {
		httpx.WriteError(w, http.StatusBadRequest, "invalid_token", "malformed invitation token")
		return
	}
	if reg.limited(w, r, "") {
		return
	}
	body, _, ok := cluster.ReadBody(w, r, false)
	if !ok {
		return
	}
	var in struct {
		Password string `json:"password"`
	}
	if !cluster.DecodeJSON(w, body, &in) {
		return
	}
	u, err := reg.AcceptInvitation(r.Context(), token, in.Password)
	if errors.Is(err, cluster.ErrNotFound) {
		reg.fail(r, "unknown_invitation", "")
	}
	if err != nil {
		reg.WriteError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"user": u})
}

func (reg *Registry) handleLogin(w http.ResponseWriter, r *http.Request) {
	body, _, ok := cluster.ReadBody(w, r, false)
	if !ok {
		return
	}
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if !cluster.DecodeJSON(w, body, &in) {
		return
	}
	email := NormalizeEmail(in.Email)
	if reg.limited(w, r, email) {
		return
	}
	token, t, err := reg.Login(r.Context(), email, in.Password)
	if errors.Is(err, ErrLogin) {
		reg.fail(r, "wrong_password", email)
		httpx.WriteError(w, http.StatusUnauthorized, "login_failed", "wrong e-mail or password")
		return
	}
	if err != nil {
		reg.WriteError(w, r, err)
		return
	}
	if reg.cfg.Limiter != nil {
		reg.cfg.Limiter.Succeed(auth.Source(r.RemoteAddr), email)
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"token": token, "expires_at": t.ExpiresAt, "id": t.ID})
}

func (reg *Registry) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	body, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	var in struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"` // "billing": the operator's billing token
	}
	if !cluster.DecodeJSON(w, body, &in) {
		return
	}
	user := ""
	switch {
	case p.Kind == auth.User && in.Kind == "":
		user = p.ID
	case p.Kind == auth.Operator && in.Kind == KindBilling:
	default:
		reg.WriteError(w, r, errors.Join(accounts.ErrForbidden, errors.New("users create their own API tokens; the operator creates billing tokens (kind billing)")))
		return
	}
	token, t, err := reg.CreateToken(r.Context(), rid, p, user, in.Name)
	if err != nil {
		reg.WriteError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"token": token, "id": t.ID, "name": t.Name, "kind": t.Kind})
}

func (reg *Registry) handleListTokens(w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	switch p.Kind {
	case auth.User:
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"tokens": reg.Tokens(r.Context(), p.ID)})
	case auth.Operator:
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"tokens": reg.Tokens(r.Context(), "")})
	default:
		httpx.WriteError(w, http.StatusForbidden, "forbidden", "tokens are listed by their user or the operator")
	}
}

func (reg *Registry) handleRevokeToken(w http.ResponseWriter, r *http.Request, id string) {
	p := auth.FromContext(r.Context())
	user := ""
	switch p.Kind {
	case auth.User:
		user = p.ID // only one's own
	case auth.Operator:
	default:
		httpx.WriteError(w, http.StatusForbidden, "forbidden", "tokens are revoked by their user or the operator")
		return
	}
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	if _, err := reg.RevokeToken(r.Context(), rid, p, user, id); err != nil {
		reg.WriteError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"revoked": id})
}

func (reg *Registry) handleAudit(w http.ResponseWriter, r *http.Request, account string) {
	if err := reg.cfg.Accounts.Allowed(auth.FromContext(r.Context()), account, accounts.Read); err != nil {
		reg.WriteError(w, r, err)
		return
	}
	limit, from := 100, 0
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_limit", "limit is 1 to 1000")
			return
		}
		limit = n
	}
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_cursor", "malformed cursor")
			return
		}
		from = n
	}
	entries, next := reg.AuditLog(r.Context(), account, from, limit)
	out := map[string]any{"entries": entries}
	if next > 0 {
		out["next_cursor"] = strconv.Itoa(next)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// validToken: tokens are URL-safe base64 of 256 bits (auth.NewToken).
func validToken(t string) bool {
	if len(t) < 16 || len(t) > 128 {
		return false
	}
	for _, c := range []byte(t) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
