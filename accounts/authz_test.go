package accounts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/purge"
	"github.com/vigilcloud/vigil/replica"
)

const operatorToken = "operator-secret-token-0123456789"

// The roles of the authorization matrix. Reseller r1 has the sub-accounts
// s1 and s2; reseller r2 has t1. The "sub" users belong to s1, the bridge
// to s1, the other reseller's admin to r2.
const (
	roleOperator      = "operator"
	roleBilling       = "billing"
	roleResellerAdmin = "reseller admin"
	roleResellerUser  = "reseller user"
	roleSubAdmin      = "sub admin"
	roleSubUser       = "sub user"
	roleBridge        = "bridge"
	roleOtherAdmin    = "other reseller admin"
	roleNone          = "no token"
)

var allRoles = []string{roleOperator, roleBilling, roleResellerAdmin, roleResellerUser, roleSubAdmin, roleSubUser, roleBridge, roleOtherAdmin, roleNone}

// targets, named by their relation to the sub users (s1): their reseller,
// their own account, a sibling, a foreign sub-account.
var targets = []string{"r1", "s1", "s2", "t1"}

// world is a real single-node replica serving the provisioning, purge,
// meter, billing and access endpoints behind the node's authenticator.
type world struct {
	t      *testing.T
	r      *replica.Replica
	srv    *httptest.Server
	tokens map[string]string // role → bearer token
	purges map[string]string // account → a purge job of it
	n      int
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	r := machinetest.OpenReplica(t, t.TempDir(), "127.0.0.1:0", nil)
	require.NoError(t, r.Billing.SetSKUPrefix("Mx-"))
	mux := http.NewServeMux()
	mount := func(h http.Handler, patterns []string) {
		for _, p := range patterns {
			mux.Handle(p, h)
		}
	}
	mount(r.Accounts.Handler(), accounts.HandlerPatterns())
	mount(r.Accounts.ConsoleHandler(), accounts.ConsolePatterns())
	mount(r.Purges.Handler(r.Accounts), purge.Patterns())
	mount(r.Meter.Handler(r.Accounts, "Mx-"), meter.Patterns())
	mount(r.Billing.Handler(), billing.Patterns())
	mount(r.Access.Handler(), access.Patterns())
	a := auth.New(operatorToken, r.Accounts)
	a.WithUsers(r.Access)
	srv := httptest.NewServer(a.Middleware(mux, access.Anonymous))
	t.Cleanup(srv.Close)
	w := &world{t: t, r: r, srv: srv, tokens: map[string]string{roleOperator: operatorToken}, purges: map[string]string{}}

	op := auth.Principal{Kind: auth.Operator}
	for _, a := range []accounts.NewAccount{{ID: "r1", Name: "R1"}, {ID: "s1", Name: "S1", Parent: "r1"},
		{ID: "s2", Name: "S2", Parent: "r1"}, {ID: "r2", Name: "R2"}, {ID: "t1", Name: "T1", Parent: "r2"}} {
		_, err := r.Accounts.CreateAccount(ctx, "", a)
		require.NoError(t, err)
	}
	for _, x := range targets {
		b, err := r.Accounts.CreateBridge(ctx, "", x, accounts.NewBridge{ID: "b-" + x, Name: "B"})
		require.NoError(t, err)
		if x == "s1" {
			w.tokens[roleBridge] = b.Token
		}
		w.camera("b-"+x, "c-"+x, "st-"+x)
		w.camera("b-"+x, "cp-"+x, "sp-"+x)
		d, err := r.Accounts.DeleteCamera(ctx, "", "cp-"+x)
		require.NoError(t, err)
		w.purges[x] = d.PurgeID
	}
	for role, u := range map[string][2]string{roleResellerAdmin: {"r1", access.RoleAdmin}, roleResellerUser: {"r1", access.RoleUser},
		roleSubAdmin: {"s1", access.RoleAdmin}, roleSubUser: {"s1", access.RoleUser}, roleOtherAdmin: {"r2", access.RoleAdmin}} {
		user, inv, err := r.Access.CreateUser(ctx, "", op, u[0], strings.ReplaceAll(role, " ", ".")+"@example.com", u[1])
		require.NoError(t, err)
		_, err = r.Access.AcceptInvitation(ctx, inv.Token, "a long enough password")
		require.NoError(t, err)
		tok, _, err := r.Access.CreateToken(ctx, "", auth.Principal{Kind: auth.User, ID: user.ID, Account: u[0], Role: u[1]}, user.ID, "matrix")
		require.NoError(t, err)
		w.tokens[role] = tok
	}
	tok, _, err := r.Access.CreateToken(ctx, "", op, "", "erp")
	require.NoError(t, err)
	w.tokens[roleBilling] = tok
	return w
}

// id returns a fresh id.
func (w *world) id(prefix string) string {
	w.n++
	return fmt.Sprintf("%s%d", prefix, w.n)
}

// camera creates a camera with streams under bridge, as the operator.
func (w *world) camera(bridge, id string, streams ...string) {
	w.t.Helper()
	c := accounts.NewCamera{ID: id, Name: id}
	for _, s := range streams {
		c.Streams = append(c.Streams, accounts.NewStream{ID: s})
	}
	_, err := w.r.Accounts.CreateCamera(context.Background(), "", bridge, c)
	require.NoError(w.t, err)
}

// do sends a request as role and returns the status and the JSON body
// (nil when it is not a JSON object).
func (w *world) do(role, method, path, body string) (int, map[string]any) {
	w.t.Helper()
	req, err := http.NewRequest(method, w.srv.URL+path, strings.NewReader(body))
	require.NoError(w.t, err)
	if tok := w.tokens[role]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(w.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(w.t, err)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return res.StatusCode, out
}

// Who reaches which target, written out (not derived from the code).
var (
	readers = map[string][]string{
		roleOperator: targets, roleResellerAdmin: {"r1", "s1", "s2"}, roleResellerUser: {"r1", "s1", "s2"},
		roleSubAdmin: {"s1"}, roleSubUser: {"s1"}, roleOtherAdmin: {"t1"},
	}
	admins = map[string][]string{
		roleOperator: targets, roleResellerAdmin: {"r1", "s1", "s2"}, roleSubAdmin: {"s1"}, roleOtherAdmin: {"t1"},
	}
	metered = map[string][]string{roleOperator: targets, roleBilling: targets}
)

func TestAuthorizationMatrix(t *testing.T) {
	w := newWorld(t)
	month := time.Now().UTC().Format("2006-01")
	type endpoint struct {
		name    string
		allowed map[string][]string
		ok      int
		req     func(x string) (method, path, body string)
	}
	endpoints := []endpoint{
		{"GET account", readers, 200, func(x string) (string, string, string) { return "GET", "/v1/accounts/" + x, "" }},
		{"PATCH account name", admins, 200, func(x string) (string, string, string) {
			return "PATCH", "/v1/accounts/" + x, `{"name":"Renamed"}`
		}},
		{"POST bridge", admins, 201, func(x string) (string, string, string) {
			return "POST", "/v1/accounts/" + x + "/bridges", fmt.Sprintf(`{"id":%q,"name":"B"}`, w.id("nb"))
		}},
		{"POST camera", admins, 201, func(x string) (string, string, string) {
			return "POST", "/v1/bridges/b-" + x + "/cameras", fmt.Sprintf(`{"id":%q,"name":"C","streams":[{"id":%q}]}`, w.id("nc"), w.id("ns"))
		}},
		{"PATCH stream", admins, 200, func(x string) (string, string, string) {
			return "PATCH", "/v1/streams/st-" + x, `{"retention_days":7}`
		}},
		{"DELETE camera", admins, 202, func(x string) (string, string, string) {
			c := w.id("dc")
			w.camera("b-"+x, c, w.id("ds"))
			return "DELETE", "/v1/cameras/" + c, ""
		}},
		{"DELETE stream", admins, 202, func(x string) (string, string, string) {
			s := w.id("ds")
			w.camera("b-"+x, w.id("dc"), s, w.id("ds"))
			return "DELETE", "/v1/streams/" + s, ""
		}},
		{"GET purge", readers, 200, func(x string) (string, string, string) { return "GET", "/v1/purges/" + w.purges[x], "" }},
		{"GET meter stream", metered, 200, func(x string) (string, string, string) { return "GET", "/v1/meter/streams/st-" + x, "" }},
		{"GET meter status", metered, 200, func(string) (string, string, string) { return "GET", "/v1/meter/status", "" }},
		{"GET billing run", metered, 200, func(string) (string, string, string) { return "GET", "/v1/billing/runs/" + month, "" }},
		// Users, the audit log and the console's lists.
		{"GET users", readers, 200, func(x string) (string, string, string) { return "GET", "/v1/accounts/" + x + "/users", "" }},
		{"POST user", admins, 201, func(x string) (string, string, string) {
			return "POST", "/v1/accounts/" + x + "/users", fmt.Sprintf(`{"email":"%s@example.com","role":"user"}`, w.id("u"))
		}},
		{"GET audit", readers, 200, func(x string) (string, string, string) { return "GET", "/v1/accounts/" + x + "/audit", "" }},
		{"GET bridges", readers, 200, func(x string) (string, string, string) { return "GET", "/v1/accounts/" + x + "/bridges", "" }},
		{"GET bridge's cameras", readers, 200, func(x string) (string, string, string) { return "GET", "/v1/bridges/b-" + x + "/cameras", "" }},
		{"GET camera", readers, 200, func(x string) (string, string, string) { return "GET", "/v1/cameras/c-" + x, "" }},
		// Only r1's admin creates sub-accounts, of r1; the operator's
		// creates under a sub-account are refused as invalid (400).
		{"POST sub-account", map[string][]string{roleOperator: {"r1"}, roleResellerAdmin: {"r1"}}, 201, func(x string) (string, string, string) {
			return "POST", "/v1/accounts", fmt.Sprintf(`{"id":%q,"name":"N","parent":%q}`, w.id("na"), x)
		}},
	}
	// Every cell again under each billing lock and privacy state of s1:
	// the lock binds s1's own users only where it locks (new cameras and
	// streams, stream settings); privacy mode guards video, not
	// provisioning, so it changes no cell here.
	locks := []string{`{"lock_billing_settings":false}`, `{"lock_billing_settings":true}`}
	privacy := []string{`{"privacy_mode":false}`, `{"privacy_mode":true,"privacy_suspended_until":null}`, `{"privacy_suspended_until":"2099-01-01T00:00:00Z"}`}
	st, _ := w.do(roleOperator, "PATCH", "/v1/accounts/s1", `{"privacy_mode_allowed":true}`)
	require.Equal(t, 200, st)
	for li, lock := range locks {
		for _, pm := range privacy {
			for _, b := range []string{lock, pm} {
				st, out := w.do(roleOperator, "PATCH", "/v1/accounts/s1", b)
				require.Equal(t, 200, st, out)
			}
			for _, e := range endpoints {
				for _, role := range allRoles {
					for _, x := range targets {
						want := 403
						switch {
						case role == roleNone:
							want = 401
						case li == 1 && role == roleSubAdmin && x == "s1" && (e.name == "POST camera" || e.name == "PATCH stream"):
							want = 403 // billing_settings_locked
						case slices.Contains(e.allowed[role], x):
							want = e.ok
						case e.name == "POST sub-account" && role == roleOperator:
							want = 400
						}
						method, path, body := e.req(x)
						st, out := w.do(role, method, path, body)
						require.Equal(t, want, st, "%s by %s on %s (%s %s): %v", e.name, role, x, lock, pm, out)
					}
				}
			}
		}
	}

	// Resellers are the operator's to create.
	for _, role := range allRoles {
		want := map[string]int{roleOperator: 201, roleNone: 401}[role]
		if want == 0 {
			want = 403
		}
		st, out := w.do(role, "POST", "/v1/accounts", fmt.Sprintf(`{"id":%q,"name":"R"}`, w.id("nr")))
		require.Equal(t, want, st, "POST reseller by %s: %v", role, out)
	}

	// The configured SKU prefix is in the meter's record and the runs.
	st, out := w.do(roleBilling, "GET", "/v1/meter/streams/st-s1", "")
	require.Equal(t, 200, st)
	require.Equal(t, "Mx-HD1-D7", out["sku"])
	st, out = w.do(roleBilling, "GET", "/v1/billing/runs/"+month, "")
	require.Equal(t, 200, st)
	js, _ := json.Marshal(out)
	require.Contains(t, string(js), `"sku":"Mx-HD1-D7"`)
	require.Contains(t, string(js), `"Mx-HD1-D7":`, "summaries count prefixed SKUs")
	require.NotContains(t, string(js), `"sku":"HD1`)
	req, err := http.NewRequest("GET", w.srv.URL+"/v1/billing/runs/"+month+"?format=csv", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+w.tokens[roleBilling])
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	csv, err := io.ReadAll(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	require.Contains(t, string(csv), ",Mx-HD1-D7,")
	require.NotContains(t, string(csv), ",HD1-D7,")
}

func TestDeleteSubAccountScope(t *testing.T) {
	w := newWorld(t)
	sub := func(parent string) string {
		id := w.id("del")
		_, err := w.r.Accounts.CreateAccount(context.Background(), "", accounts.NewAccount{ID: id, Name: "D", Parent: parent})
		require.NoError(t, err)
		return id
	}
	for _, c := range []struct {
		role, account string
		want          int
	}{
		{roleOperator, sub("r1"), 202},
		{roleOperator, "r1", 400}, // a reseller is not deleted
		{roleResellerAdmin, sub("r1"), 202},
		{roleResellerAdmin, sub("r2"), 403},
		{roleResellerAdmin, "r1", 403},
		{roleResellerUser, sub("r1"), 403},
		{roleSubAdmin, "s1", 403}, // not its own account
		{roleSubUser, "s1", 403},
		{roleSubAdmin, sub("r1"), 403},
		{roleBridge, sub("r1"), 403},
		{roleBilling, sub("r1"), 403},
		{roleOtherAdmin, sub("r1"), 403},
		{roleOtherAdmin, sub("r2"), 202},
		{roleNone, sub("r1"), 401},
	} {
		st, out := w.do(c.role, "DELETE", "/v1/accounts/"+c.account, "")
		require.Equal(t, c.want, st, "DELETE %s by %s: %v", c.account, c.role, out)
	}
	_, err := w.r.Accounts.Account(context.Background(), "s1")
	require.NoError(t, err, "s1 was not deleted")
}

func TestLockedBillingSettings(t *testing.T) {
	w := newWorld(t)
	camera := func() string {
		return fmt.Sprintf(`{"id":%q,"name":"C","streams":[{"id":%q}]}`, w.id("lc"), w.id("ls"))
	}
	code := func(out map[string]any) any { return out["code"] }
	// Only the reseller sets the lock.
	for _, role := range []string{roleSubAdmin, roleSubUser, roleOtherAdmin, roleResellerUser} {
		st, _ := w.do(role, "PATCH", "/v1/accounts/s1", `{"lock_billing_settings":true}`)
		require.Equal(t, 403, st, role)
	}
	st, out := w.do(roleResellerAdmin, "PATCH", "/v1/accounts/s1", `{"lock_billing_settings":true}`)
	require.Equal(t, 200, st, out)
	require.Equal(t, true, out["lock_billing_settings"])

	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/bridges/b-s1/cameras", camera()},
		{"PATCH", "/v1/streams/st-s1", `{"retention_days":14}`},
		{"PATCH", "/v1/streams/st-s1", `{"width":1920,"height":1080}`},
		{"PATCH", "/v1/streams/st-s1", `{"analytics":["people"]}`},
		{"PATCH", "/v1/accounts/s1", `{"defaults":{"retention_days":14}}`},
		{"PATCH", "/v1/accounts/s1", `{"billing_cycle":"annual"}`},
	} {
		st, out := w.do(roleSubAdmin, c.method, c.path, c.body)
		require.Equal(t, 403, st, "%s %s %s", c.method, c.path, c.body)
		require.Equal(t, "billing_settings_locked", code(out), out)
	}
	// What the lock does not cover, and the reseller, still go through.
	st, _ = w.do(roleSubAdmin, "PATCH", "/v1/accounts/s1", `{"name":"Still mine"}`)
	require.Equal(t, 200, st)
	st, _ = w.do(roleSubAdmin, "POST", "/v1/accounts/s1/bridges", `{"id":"lb1","name":"B"}`)
	require.Equal(t, 201, st)
	st, _ = w.do(roleResellerAdmin, "POST", "/v1/bridges/b-s1/cameras", camera())
	require.Equal(t, 201, st)
	st, _ = w.do(roleResellerAdmin, "PATCH", "/v1/streams/st-s1", `{"retention_days":14}`)
	require.Equal(t, 200, st)
	st, _ = w.do(roleResellerAdmin, "PATCH", "/v1/accounts/s1", `{"defaults":{"retention_days":14},"billing_cycle":"annual"}`)
	require.Equal(t, 200, st)
	st, _ = w.do(roleOperator, "PATCH", "/v1/streams/st-s1", `{"retention_days":21}`)
	require.Equal(t, 200, st)
	// A sibling without the lock is not bound.
	st, _ = w.do(roleResellerAdmin, "PATCH", "/v1/streams/st-s2", `{"retention_days":14}`)
	require.Equal(t, 200, st)

	// Off again: the sub-account's admin changes its settings, but the
	// billing cycle stays the reseller's.
	st, _ = w.do(roleResellerAdmin, "PATCH", "/v1/accounts/s1", `{"lock_billing_settings":false}`)
	require.Equal(t, 200, st)
	st, _ = w.do(roleSubAdmin, "POST", "/v1/bridges/b-s1/cameras", camera())
	require.Equal(t, 201, st)
	st, out = w.do(roleSubAdmin, "PATCH", "/v1/streams/st-s1", `{"retention_days":30}`)
	require.Equal(t, 200, st, out)
	require.EqualValues(t, 30, out["retention_days"])
	st, _ = w.do(roleSubAdmin, "PATCH", "/v1/accounts/s1", `{"defaults":{"retention_days":30}}`)
	require.Equal(t, 200, st)
	st, out = w.do(roleSubAdmin, "PATCH", "/v1/accounts/s1", `{"billing_cycle":"monthly"}`)
	require.Equal(t, 403, st)
	require.Equal(t, "forbidden", code(out))
	st, _ = w.do(roleSubUser, "PATCH", "/v1/streams/st-s1", `{"retention_days":30}`)
	require.Equal(t, 403, st, "a plain user reads and watches")
}

func TestPrivacyPatchRules(t *testing.T) {
	w := newWorld(t)
	patch := func(role, body string) (int, map[string]any) { return w.do(role, "PATCH", "/v1/accounts/s1", body) }
	get := func() map[string]any {
		st, out := w.do(roleOperator, "GET", "/v1/accounts/s1", "")
		require.Equal(t, 200, st)
		return out
	}
	// The allowance is the reseller's.
	st, _ := patch(roleSubAdmin, `{"privacy_mode_allowed":true}`)
	require.Equal(t, 403, st)
	st, _ = patch(roleResellerAdmin, `{"privacy_mode_allowed":true}`)
	require.Equal(t, 200, st)
	// Switching it on is the customer's admin's alone.
	for _, role := range []string{roleResellerAdmin, roleResellerUser, roleSubUser, roleOtherAdmin, roleBridge, roleBilling} {
		st, _ := patch(role, `{"privacy_mode":true}`)
		require.Equal(t, 403, st, role)
	}
	st, out := patch(roleSubAdmin, `{"privacy_mode":true}`)
	require.Equal(t, 200, st, out)
	require.Equal(t, true, out["privacy_mode"])
	// The reseller can neither switch it off nor suspend it...
	st, _ = patch(roleResellerAdmin, `{"privacy_mode":false}`)
	require.Equal(t, 403, st)
	st, _ = patch(roleResellerAdmin, `{"privacy_suspended_until":"2030-01-01T00:00:00Z"}`)
	require.Equal(t, 403, st)
	st, _ = patch(roleResellerAdmin, `{"privacy_suspended_until":null}`)
	require.Equal(t, 403, st)
	// ...nor end it by withdrawing the allowance.
	st, _ = patch(roleResellerAdmin, `{"privacy_mode_allowed":false}`)
	require.Equal(t, 200, st)
	a := get()
	require.Equal(t, true, a["privacy_mode"], "withdrawing the allowance does not end privacy mode")
	require.Nil(t, a["privacy_mode_allowed"])

	// The customer suspends it, and null ends the suspension.
	st, out = patch(roleSubAdmin, `{"privacy_suspended_until":"2030-01-01T00:00:00Z"}`)
	require.Equal(t, 200, st, out)
	require.Equal(t, "2030-01-01T00:00:00Z", get()["privacy_suspended_until"])
	st, _ = patch(roleSubAdmin, `{"name":"S1"}`)
	require.Equal(t, 200, st)
	require.Equal(t, "2030-01-01T00:00:00Z", get()["privacy_suspended_until"], "an absent field leaves the suspension")
	st, _ = patch(roleSubAdmin, `{"privacy_suspended_until":null}`)
	require.Equal(t, 200, st)
	require.Nil(t, get()["privacy_suspended_until"], "null ends a suspension")
	// Switched off, it cannot come back without the allowance.
	st, _ = patch(roleSubAdmin, `{"privacy_mode":false}`)
	require.Equal(t, 200, st)
	st, out = patch(roleSubAdmin, `{"privacy_mode":true}`)
	require.Equal(t, 400, st)
	require.Equal(t, "privacy_mode_not_allowed", out["code"])
	// The operator reaches everything, privacy mode included.
	st, _ = patch(roleOperator, `{"privacy_mode_allowed":true,"privacy_mode":true}`)
	require.Equal(t, 200, st)

	// Every change is in s1's audit log, with who made it.
	st, out = w.do(roleResellerAdmin, "GET", "/v1/accounts/s1/audit?limit=100", "")
	require.Equal(t, 200, st, out)
	var got []string
	users := map[string]string{}
	for _, role := range []string{roleResellerAdmin, roleSubAdmin} {
		p, err := w.r.Access.PrincipalByTokenHash(context.Background(), auth.HashToken(w.tokens[role]))
		require.NoError(t, err)
		users["user:"+p.ID] = role
	}
	refused := 0
	for _, e := range out["entries"].([]any) {
		e := e.(map[string]any)
		if e["action"] == "privacy.change_refused" {
			refused++
			continue
		}
		if !strings.HasPrefix(e["action"].(string), "privacy.") {
			continue
		}
		actor := e["actor"].(string)
		if r, ok := users[actor]; ok {
			actor = r
		}
		got = append(got, actor+" "+e["action"].(string))
	}
	// The refused attempts of users in scope (the reseller's and the
	// customer's plain user) are audited too; bridges, billing tokens and
	// the foreign reseller are refused before they reach privacy.
	require.Equal(t, 6, refused)
	require.Equal(t, []string{
		"reseller admin privacy.allowed",
		"sub admin privacy.on",
		"reseller admin privacy.disallowed",
		"sub admin privacy.suspended",
		"sub admin privacy.resumed",
		"sub admin privacy.off",
		"operator privacy.allowed",
		"operator privacy.on",
	}, got)
}

// TestPrivacyDelegatedAdmin: an admin the reseller creates in the
// customer's account (through POST /v1/accounts/s1/users, whose invitation
// it receives) cannot switch privacy mode off or suspend it.
func TestPrivacyDelegatedAdmin(t *testing.T) {
	w := newWorld(t)
	st, _ := w.do(roleResellerAdmin, "PATCH", "/v1/accounts/s1", `{"privacy_mode_allowed":true}`)
	require.Equal(t, 200, st)
	st, _ = w.do(roleSubAdmin, "PATCH", "/v1/accounts/s1", `{"privacy_mode":true}`)
	require.Equal(t, 200, st)
	st, out := w.do(roleResellerAdmin, "POST", "/v1/accounts/s1/users", `{"email":"spy@example.com","role":"admin"}`)
	require.Equal(t, 201, st, out)
	require.Equal(t, true, out["user"].(map[string]any)["delegated"])
	inv := out["invitation"].(map[string]any)["token"].(string)
	_, err := w.r.Access.AcceptInvitation(context.Background(), inv, "a long enough password")
	require.NoError(t, err)
	spy, _, err := w.r.Access.Login(context.Background(), "spy@example.com", "a long enough password")
	require.NoError(t, err)
	w.tokens["spy"] = spy
	for _, body := range []string{`{"privacy_mode":false}`, `{"privacy_suspended_until":"2030-01-01T00:00:00Z"}`} {
		st, _ := w.do("spy", "PATCH", "/v1/accounts/s1", body)
		require.Equal(t, 403, st, body)
	}
	st, _ = w.do(roleResellerAdmin, "PATCH", "/v1/accounts/s1", `{"privacy_mode":false}`)
	require.Equal(t, 403, st)
	// Each attempt is in the customer's audit log, with who tried; so is a
	// bridge token rotation.
	st, _ = w.do(roleSubAdmin, "POST", "/v1/bridges/b-s1/token", `{}`)
	require.Equal(t, 201, st)
	st, out = w.do(roleSubAdmin, "GET", "/v1/accounts/s1/audit?limit=1000", "")
	require.Equal(t, 200, st)
	var refused []string
	rotated := false
	for _, e := range out["entries"].([]any) {
		e := e.(map[string]any)
		switch e["action"] {
		case "privacy.change_refused":
			refused = append(refused, e["actor"].(string)[:5])
		case "bridge.token_rotated":
			rotated = true
		}
	}
	require.Equal(t, []string{"user:", "user:", "user:"}, refused)
	require.True(t, rotated)
	// A user the customer's own admin creates is the customer's.
	st, out = w.do(roleSubAdmin, "POST", "/v1/accounts/s1/users", `{"email":"own@example.com","role":"admin"}`)
	require.Equal(t, 201, st, out)
	require.Nil(t, out["user"].(map[string]any)["delegated"])
}
