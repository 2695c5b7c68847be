package access_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/internal/mailpittest"
	"github.com/vigilcloud/vigil/mail"
)

const hashLen = 64

func nonce(id string) string { return id + ":" + strings.Repeat("a", hashLen-len(id)) + id }

func invite(h *machinetest.Harness, id, account, email, role, inv string) (json.RawMessage, error) {
	return h.Apply(cluster.CmdCreateUser, "", id+":"+auth.HashToken(inv), access.CreateUserCmd{Account: account, Email: email, Role: role, Actor: "operator"})
}

func TestUsersInvitationsAndTokens(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h) // r1 (reseller), s1 and s2 (its subs), r2
	inv1, inv2 := auth.NewToken(), auth.NewToken()
	_, err := invite(h, "u1", "s1", "  Ann@Example.COM ", access.RoleAdmin, inv1)
	require.NoError(t, err)

	// The e-mail is unique across every account, trimmed, in any case.
	_, err = invite(h, "u2", "r2", "ann@example.com", access.RoleUser, inv2)
	require.ErrorIs(t, err, cluster.ErrConflict)
	_, err = invite(h, "u2", "s2", "ANN@example.com", access.RoleUser, inv2)
	require.ErrorIs(t, err, cluster.ErrConflict)
	for name, p := range map[string]access.CreateUserCmd{
		"bad e-mail":      {Account: "s1", Email: "nope", Role: access.RoleUser},
		"bad role":        {Account: "s1", Email: "b@example.com", Role: "root"},
		"unknown account": {Account: "zz", Email: "b@example.com", Role: access.RoleUser},
	} {
		_, err := h.Apply(cluster.CmdCreateUser, "", "u9:"+auth.HashToken(inv2), p)
		require.Error(t, err, name)
	}

	pw, err := access.HashPassword("correct horse battery")
	require.NoError(t, err)
	accept := func(token string) error {
		_, err := h.Apply(cluster.CmdAcceptInvitation, "", "", access.AcceptCmd{Invitation: auth.HashToken(token), PasswordHash: pw})
		return err
	}
	require.ErrorIs(t, accept(auth.NewToken()), cluster.ErrNotFound, "an unknown invitation")
	require.NoError(t, accept(inv1))
	require.ErrorIs(t, accept(inv1), cluster.ErrNotFound, "an invitation works once")
	require.True(t, h.M.Access.Users["u1"].Active())
	require.Equal(t, "ann@example.com", h.M.Access.Users["u1"].Email)

	// Expiry at 48 h of command time.
	_, err = invite(h, "u3", "s2", "bob@example.com", access.RoleUser, inv2)
	require.NoError(t, err)
	h.Clock = h.Clock.Add(access.InvitationTTL) // the next command is one minute later
	require.Error(t, accept(inv2))
	var e *cluster.Error
	require.ErrorAs(t, accept(inv2), &e)
	require.Equal(t, "invitation_expired", e.Code)

	// Tokens: only for active users; removing the user drops them.
	_, err = h.Apply(cluster.CmdCreateToken, "", nonce("t1"), access.CreateTokenCmd{Kind: access.KindAPI, User: "u3", Name: "x"})
	require.ErrorIs(t, err, cluster.ErrNotFound, "u3 never activated")
	h.Must(cluster.CmdCreateToken, "", nonce("t1"), access.CreateTokenCmd{Kind: access.KindAPI, User: "u1", Name: "ci"})
	h.Must(cluster.CmdCreateToken, "", nonce("t2"), access.CreateTokenCmd{Kind: access.KindSession, User: "u1", TTLMS: 60_000})
	h.Must(cluster.CmdCreateToken, "", nonce("t3"), access.CreateTokenCmd{Kind: access.KindBilling, Name: "erp"})
	require.Len(t, h.M.Access.Tokens, 3)
	h.Must(cluster.CmdRemoveUser, "", "", access.RemoveUserCmd{ID: "u1", Actor: "operator"})
	require.Len(t, h.M.Access.Tokens, 1, "the billing token stays")
	require.Empty(t, h.M.Access.Emails["ann@example.com"], "the e-mail is free again")
	_, err = h.Apply(cluster.CmdRevokeToken, "", "", access.RevokeTokenCmd{ID: "t1"})
	require.ErrorIs(t, err, cluster.ErrNotFound)
	h.Must(cluster.CmdRevokeToken, "", "", access.RevokeTokenCmd{ID: "t3", Actor: "operator"})
	require.Empty(t, h.M.Access.Tokens)

	// The audit log has each change, under the user's account.
	var actions []string
	for _, a := range h.M.Access.Audit["s1"] {
		actions = append(actions, a.Action)
	}
	require.Equal(t, []string{"user.invited", "user.activated", "token.created", "user.removed"}, actions)

	// No secret in the state.
	js := machinetest.StateOf(t, h.M)
	for _, s := range []string{inv1, inv2, "correct horse battery"} {
		require.NotContains(t, string(js), s)
	}
}

func TestPasswordHash(t *testing.T) {
	h, err := access.HashPassword("0123456789")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(h, "$argon2id$v=19$"))
	require.True(t, access.CheckPassword(h, "0123456789"))
	require.False(t, access.CheckPassword(h, "0123456788"))
	require.False(t, access.CheckPassword("$argon2id$v=19$m=1,t=1,p=1$$", "x"))
	_, err = access.HashPassword("short")
	require.Error(t, err)
}

// server serves the provisioning and access endpoints of a real replica,
// with the node's authenticator and login limiter; logs go to logs.
func server(t *testing.T, logs *bytes.Buffer, burst int) (*httptest.Server, string) {
	t.Helper()
	const admin = "operator-secret-token-0123456789"
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := machinetest.OpenReplica(t, t.TempDir(), "127.0.0.1:0", nil)
	lim := auth.NewLimiter(auth.LimitConfig{Burst: burst, Refill: time.Hour, Logger: log})
	r.Access = access.New(r.Machine.Access, r.Peer, access.Config{Log: log, Limiter: lim, Accounts: r.Accounts})
	mux := http.NewServeMux()
	for _, p := range accounts.HandlerPatterns() {
		mux.Handle(p, r.Accounts.Handler())
	}
	for _, p := range access.Patterns() {
		mux.Handle(p, r.Access.Handler())
	}
	a := auth.New(admin, r.Accounts)
	a.WithUsers(r.Access)
	a.LimitFailures(lim)
	srv := httptest.NewServer(a.Middleware(mux, access.Anonymous))
	t.Cleanup(srv.Close)
	return srv, admin
}

func call(t *testing.T, srv *httptest.Server, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	return machinetest.Call(t, srv.URL, method, path, token, body)
}

func TestHTTPUsersSessionsTokens(t *testing.T) {
	var logs bytes.Buffer
	srv, admin := server(t, &logs, 100)
	for _, b := range []string{`{"id":"r1","name":"R"}`, `{"id":"s1","name":"S1","parent":"r1"}`, `{"id":"s2","name":"S2","parent":"r1"}`} {
		st, _ := call(t, srv, "POST", "/v1/accounts", admin, b)
		require.Equal(t, 201, st)
	}
	// The operator invites a sub-account admin; without SMTP the token
	// comes back, once.
	st, out := call(t, srv, "POST", "/v1/accounts/s1/users", admin, `{"email":"Ann@Example.com","role":"admin"}`)
	require.Equal(t, 201, st, out)
	inv := out["invitation"].(map[string]any)["token"].(string)
	st, _ = call(t, srv, "POST", "/v1/invitations/"+inv+"/accept", "", `{"password":"short"}`)
	require.Equal(t, 400, st)
	st, _ = call(t, srv, "POST", "/v1/invitations/"+inv+"/accept", "", `{"password":"a long enough password"}`)
	require.Equal(t, 200, st)
	st, _ = call(t, srv, "POST", "/v1/invitations/"+inv+"/accept", "", `{"password":"a long enough password"}`)
	require.Equal(t, 404, st, "once")

	st, _ = call(t, srv, "POST", "/v1/sessions", "", `{"email":"ann@example.com","password":"wrong password!"}`)
	require.Equal(t, 401, st)
	st, out = call(t, srv, "POST", "/v1/sessions", "", `{"email":" ANN@example.com ","password":"a long enough password"}`)
	require.Equal(t, 201, st, out)
	session := out["token"].(string)

	// Scope: own account yes, a sibling no; plain reads need no admin.
	st, _ = call(t, srv, "GET", "/v1/accounts/s1/users", session, "")
	require.Equal(t, 200, st)
	st, _ = call(t, srv, "GET", "/v1/accounts/s2/users", session, "")
	require.Equal(t, 403, st)
	st, _ = call(t, srv, "GET", "/v1/accounts/r1/users", session, "")
	require.Equal(t, 403, st, "a sub-account's user does not reach its reseller")
	st, out = call(t, srv, "POST", "/v1/accounts/s1/users", session, `{"email":"bob@example.com","role":"user"}`)
	require.Equal(t, 201, st, out)

	// API tokens: created by their user, listed without the secret, revoked.
	st, out = call(t, srv, "POST", "/v1/tokens", session, `{"name":"ci"}`)
	require.Equal(t, 201, st, out)
	api, apiID := out["token"].(string), out["id"].(string)
	st, out = call(t, srv, "GET", "/v1/tokens", api, "")
	require.Equal(t, 200, st)
	js, _ := json.Marshal(out)
	require.NotContains(t, string(js), api)
	require.NotContains(t, string(js), session)
	st, _ = call(t, srv, "DELETE", "/v1/tokens/"+apiID, session, "")
	require.Equal(t, 200, st)
	st, _ = call(t, srv, "GET", "/v1/tokens", api, "")
	require.Equal(t, 401, st, "revoked")

	// A billing token is the operator's to make, and manages no account.
	st, _ = call(t, srv, "POST", "/v1/tokens", session, `{"name":"erp","kind":"billing"}`)
	require.Equal(t, 403, st)
	st, out = call(t, srv, "POST", "/v1/tokens", admin, `{"name":"erp","kind":"billing"}`)
	require.Equal(t, 201, st, out)
	billing := out["token"].(string)
	st, _ = call(t, srv, "GET", "/v1/accounts/s1/users", billing, "")
	require.Equal(t, 403, st)

	// The audit log, read within scope.
	st, out = call(t, srv, "GET", "/v1/accounts/s1/audit?limit=2", session, "")
	require.Equal(t, 200, st)
	require.Len(t, out["entries"], 2)
	require.NotEmpty(t, out["next_cursor"])

	// Removing the user ends its session at once.
	st, out = call(t, srv, "GET", "/v1/accounts/s1/users", admin, "")
	require.Equal(t, 200, st)
	var ann string
	for _, u := range out["users"].([]any) {
		if u.(map[string]any)["email"] == "ann@example.com" {
			ann = u.(map[string]any)["id"].(string)
		}
	}
	st, _ = call(t, srv, "DELETE", "/v1/users/"+ann, admin, "")
	require.Equal(t, 200, st)
	st, _ = call(t, srv, "GET", "/v1/accounts/s1/users", session, "")
	require.Equal(t, 401, st)

	// Secrets are never logged.
	for _, s := range []string{inv, session, api, billing, "a long enough password"} {
		require.NotContains(t, logs.String(), s)
	}
}

func TestLoginLimited(t *testing.T) {
	var logs bytes.Buffer
	srv, admin := server(t, &logs, 3)
	st, _ := call(t, srv, "POST", "/v1/accounts", admin, `{"id":"r1","name":"R"}`)
	require.Equal(t, 201, st)
	for range 3 {
		st, _ = call(t, srv, "POST", "/v1/sessions", "", `{"email":"x@example.com","password":"guess guess guess"}`)
		require.Equal(t, 401, st)
	}
	req, err := http.NewRequestWithContext(context.Background(), "POST", srv.URL+"/v1/sessions", strings.NewReader(`{"email":"x@example.com","password":"guess guess guess"}`))
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 429, res.StatusCode)
	require.NotEmpty(t, res.Header.Get("Retry-After"))
}

// TestInvitationByMail: with SMTP configured, creating a user mails the
// invitation (mailpit, a real SMTP server on loopback) and returns no token;
// the link in the mail activates the user through vigil's own endpoint.
func TestInvitationByMail(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{Username: "vigil", Password: "smtp-secret-password"})
	s, err := mail.New(mail.Config{Host: mp.Host, Port: mp.Port, Username: "vigil", Password: "smtp-secret-password",
		From: "vigil@example.com", TLS: "none", Timeout: 5 * time.Second})
	require.NoError(t, err)
	var logs bytes.Buffer
	const admin = "operator-secret-token-0123456789"
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := machinetest.OpenReplica(t, t.TempDir(), "127.0.0.1:0", nil)
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(nil)
	srv.Start()
	t.Cleanup(srv.Close)
	r.Access = access.New(r.Machine.Access, r.Peer, access.Config{Log: log, Accounts: r.Accounts,
		Mailer: mail.Invitations{Sender: s, BaseURL: srv.URL}, PublicURL: srv.URL})
	for _, p := range accounts.HandlerPatterns() {
		mux.Handle(p, r.Accounts.Handler())
	}
	for _, p := range access.Patterns() {
		mux.Handle(p, r.Access.Handler())
	}
	a := auth.New(admin, r.Accounts)
	a.WithUsers(r.Access)
	srv.Config.Handler = a.Middleware(mux, access.Anonymous)

	st, _ := call(t, srv, "POST", "/v1/accounts", admin, `{"id":"r1","name":"R"}`)
	require.Equal(t, 201, st)
	st, out := call(t, srv, "POST", "/v1/accounts/r1/users", admin, `{"email":"Carol@Example.com","role":"user"}`)
	require.Equal(t, 201, st, out)
	inv := out["invitation"].(map[string]any)
	require.Equal(t, true, inv["sent"])
	require.Nil(t, inv["token"], "a mailed invitation's token is not returned")

	msg := mp.WaitMessage(t, "carol@example.com")
	var link string
	for _, line := range strings.Split(msg.Text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), srv.URL+"/v1/invitations/") {
			link = strings.TrimSpace(line)
		}
	}
	require.NotEmpty(t, link, msg.Text)
	st, _ = call(t, srv, "POST", strings.TrimPrefix(link, srv.URL), "", `{"password":"a long enough password"}`)
	require.Equal(t, 200, st)
	st, out = call(t, srv, "POST", "/v1/sessions", "", `{"email":"carol@example.com","password":"a long enough password"}`)
	require.Equal(t, 201, st, out)
	token := strings.TrimSuffix(strings.TrimPrefix(link, srv.URL+"/v1/invitations/"), "/accept")
	require.NotContains(t, logs.String(), token)
	require.NotContains(t, logs.String(), "smtp-secret-password")
}
