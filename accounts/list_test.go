package accounts_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/replica"
)

const consoleAdmin = "operator-secret-token-0123456789"

// clock is a settable clock for the proposer and the token lookups.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type console struct {
	srv  *httptest.Server
	rep  *replica.Replica
	clk  *clock
	logs *bytes.Buffer
}

// newConsole serves the provisioning, console and access endpoints of a
// real single-voter replica behind the node's authenticator.
func newConsole(t *testing.T) *console {
	t.Helper()
	c := &console{clk: &clock{t: time.Now().UTC()}, logs: &bytes.Buffer{}}
	log := slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c.rep = machinetest.OpenReplica(t, t.TempDir(), "127.0.0.1:0", c.clk.now)
	c.rep.Accounts = accounts.New(c.rep.Machine.Accounts, c.rep.Peer, log).WithClock(c.clk.now)
	c.rep.Access = access.New(c.rep.Machine.Access, c.rep.Peer, access.Config{Log: log, Now: c.clk.now, Accounts: c.rep.Accounts})
	mux := http.NewServeMux()
	for _, p := range accounts.HandlerPatterns() {
		mux.Handle(p, c.rep.Accounts.Handler())
	}
	for _, p := range accounts.ConsolePatterns() {
		mux.Handle(p, c.rep.Accounts.ConsoleHandler())
	}
	for _, p := range access.Patterns() {
		mux.Handle(p, c.rep.Access.Handler())
	}
	a := auth.New(consoleAdmin, c.rep.Accounts)
	a.WithUsers(c.rep.Access)
	c.srv = httptest.NewServer(a.Middleware(mux, access.Anonymous))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *console) call(t *testing.T, method, path, token, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	return machinetest.Call(t, c.srv.URL, method, path, token, body, hdr...)
}

// must asserts the status of a request and returns its answer.
func (c *console) must(t *testing.T, want int, method, path, token, body string) map[string]any {
	t.Helper()
	st, out := c.call(t, method, path, token, body)
	require.Equal(t, want, st, "%s %s: %v", method, path, out)
	return out
}

// user creates an active user in account and returns a session token.
func (c *console) user(t *testing.T, account, email, role string) string {
	t.Helper()
	out := c.must(t, 201, "POST", "/v1/accounts/"+account+"/users", consoleAdmin, fmt.Sprintf(`{"email":%q,"role":%q}`, email, role))
	inv := out["invitation"].(map[string]any)["token"].(string)
	c.must(t, 200, "POST", "/v1/invitations/"+inv+"/accept", "", `{"password":"a long enough password"}`)
	out = c.must(t, 201, "POST", "/v1/sessions", "", fmt.Sprintf(`{"email":%q,"password":"a long enough password"}`, email))
	return out["token"].(string)
}

// bridge creates a bridge and returns its token.
func (c *console) bridge(t *testing.T, account, id string) string {
	t.Helper()
	out := c.must(t, 201, "POST", "/v1/accounts/"+account+"/bridges", consoleAdmin, fmt.Sprintf(`{"id":%q,"name":"B"}`, id))
	return out["token"].(string)
}

func (c *console) camera(t *testing.T, bridge, id string) {
	t.Helper()
	c.must(t, 201, "POST", "/v1/bridges/"+bridge+"/cameras", consoleAdmin,
		fmt.Sprintf(`{"id":%q,"name":"C","streams":[{"id":%q},{"id":%q}]}`, id, id+"-main", id+"-sub"))
}

// ids pages through path with limit and returns the ids of key's items
// in order, failing on a repeat.
func (c *console) ids(t *testing.T, path, key, token string, limit int) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 100, "paging does not end")
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		q := fmt.Sprintf("%s%slimit=%d", path, sep, limit)
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		res := c.must(t, 200, "GET", q, token, "")
		items := res[key].([]any)
		require.LessOrEqual(t, len(items), limit)
		for _, it := range items {
			id := it.(map[string]any)["id"].(string)
			require.False(t, seen[id], "%s listed twice", id)
			seen[id] = true
			out = append(out, id)
		}
		next, _ := res["next_cursor"].(string)
		if next == "" {
			return out
		}
		require.Len(t, items, limit, "a page before the last is full")
		cursor = next
	}
}

func TestConsoleListsWithinScope(t *testing.T) {
	c := newConsole(t)
	for _, b := range []string{`{"id":"r1","name":"R1"}`, `{"id":"s1","name":"S1","parent":"r1"}`,
		`{"id":"s2","name":"S2","parent":"r1"}`, `{"id":"s3","name":"S3","parent":"r1"}`, `{"id":"r2","name":"R2"}`} {
		c.must(t, 201, "POST", "/v1/accounts", consoleAdmin, b)
	}
	c.must(t, 202, "DELETE", "/v1/accounts/s3", consoleAdmin, "")
	resellerAdmin := c.user(t, "r1", "ra@example.com", "admin")
	subUser := c.user(t, "s1", "su@example.com", "user")
	subAdmin := c.user(t, "s1", "sa@example.com", "admin")
	foreign := c.user(t, "r2", "fa@example.com", "admin")
	var s1Bridges []string
	for i := range 7 {
		id := fmt.Sprintf("b%d", 7-i) // created out of order; listed by id
		c.bridge(t, "s1", id)
		s1Bridges = append([]string{id}, s1Bridges...)
	}
	bridgeToken := c.bridge(t, "s2", "x1")
	c.bridge(t, "r2", "y1")
	for _, id := range []string{"cam3", "cam1", "cam2", "cam4"} {
		c.camera(t, "b1", id)
	}
	c.camera(t, "x1", "xcam")
	c.must(t, 202, "DELETE", "/v1/cameras/cam2", consoleAdmin, "")
	c.must(t, 202, "DELETE", "/v1/streams/cam4-sub", consoleAdmin, "")

	// Accounts: the operator sees all live ones, a reseller's user its
	// account and sub-accounts, a sub-account's user its own; deleted s3 is
	// not listed. Every page size returns each once, in id order.
	for _, limit := range []int{1, 2, 3, 100} {
		require.Equal(t, []string{"r1", "r2", "s1", "s2"}, c.ids(t, "/v1/accounts", "accounts", consoleAdmin, limit))
	}
	require.Equal(t, []string{"r1", "s1", "s2"}, c.ids(t, "/v1/accounts", "accounts", resellerAdmin, 2))
	require.Equal(t, []string{"s1"}, c.ids(t, "/v1/accounts", "accounts", subUser, 1))
	require.Equal(t, []string{"r2"}, c.ids(t, "/v1/accounts", "accounts", foreign, 10))
	c.must(t, 403, "GET", "/v1/accounts", bridgeToken, "")
	c.must(t, 401, "GET", "/v1/accounts", "", "")

	// Bad paging is 400.
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=%21%21", "cursor=" + "Zm9vL2Jhcg"} { // "foo/bar" is no id
		st, out := c.call(t, "GET", "/v1/accounts?"+q, consoleAdmin, "")
		require.Equal(t, 400, st, "%s: %v", q, out)
	}

	// Bridges of an account: own, child; a sibling's and a foreign one's
	// are 403; an unknown or deleted account 404.
	for _, tok := range []string{consoleAdmin, resellerAdmin, subUser} {
		for _, limit := range []int{1, 3, 1000} {
			require.Equal(t, s1Bridges, c.ids(t, "/v1/accounts/s1/bridges", "bridges", tok, limit))
		}
	}
	c.must(t, 403, "GET", "/v1/accounts/s2/bridges", subUser, "")
	c.must(t, 403, "GET", "/v1/accounts/s1/bridges", foreign, "")
	c.must(t, 403, "GET", "/v1/accounts/r1/bridges", subUser, "")
	c.must(t, 403, "GET", "/v1/accounts/s1/bridges", bridgeToken, "")
	c.must(t, 404, "GET", "/v1/accounts/nope/bridges", resellerAdmin, "")
	c.must(t, 404, "GET", "/v1/accounts/s3/bridges", consoleAdmin, "")
	out := c.must(t, 200, "GET", "/v1/bridges/b1", subUser, "")
	require.Equal(t, "s1", out["account"])
	require.NotContains(t, out, "token_hash")
	c.must(t, 403, "GET", "/v1/bridges/x1", subUser, "")
	c.must(t, 404, "GET", "/v1/bridges/nope", subUser, "")

	// Cameras of a bridge, without the deleted one; a camera with its live
	// streams only.
	require.Equal(t, []string{"cam1", "cam3", "cam4"}, c.ids(t, "/v1/bridges/b1/cameras", "cameras", subUser, 2))
	c.must(t, 403, "GET", "/v1/bridges/x1/cameras", subUser, "")
	c.must(t, 404, "GET", "/v1/bridges/nope/cameras", consoleAdmin, "")
	out = c.must(t, 200, "GET", "/v1/cameras/cam4", resellerAdmin, "")
	require.Equal(t, []any{"cam4-main"}, out["camera"].(map[string]any)["streams"])
	require.Len(t, out["streams"], 1)
	require.Equal(t, "cam4-main", out["streams"].([]any)[0].(map[string]any)["id"])
	c.must(t, 404, "GET", "/v1/cameras/cam2", consoleAdmin, "")
	c.must(t, 404, "GET", "/v1/cameras/nope", subUser, "")
	c.must(t, 403, "GET", "/v1/cameras/xcam", subUser, "")
	c.must(t, 403, "GET", "/v1/cameras/cam1", foreign, "")
	c.must(t, 200, "GET", "/v1/cameras/xcam", resellerAdmin, "")
	c.must(t, 400, "GET", "/v1/bridges/b1/cameras?limit=-1", subUser, "")

	// Deleting a bridge: Admin on its account; refused while it has live
	// cameras.
	c.must(t, 403, "DELETE", "/v1/bridges/b1", subUser, "")
	c.must(t, 403, "DELETE", "/v1/bridges/x1", subAdmin, "")
	c.must(t, 403, "DELETE", "/v1/bridges/b1", foreign, "")
	c.must(t, 404, "DELETE", "/v1/bridges/nope", consoleAdmin, "")
	out = c.must(t, 409, "DELETE", "/v1/bridges/b1", subAdmin, "")
	require.Equal(t, "bridge_has_cameras", out["code"], out)
	for _, id := range []string{"cam1", "cam3", "cam4"} {
		c.must(t, 202, "DELETE", "/v1/cameras/"+id, consoleAdmin, "")
	}
	b1Token := c.rotate(t, "b1", consoleAdmin, `{"grace_seconds":600}`) // its previous token too
	out = c.must(t, 200, "DELETE", "/v1/bridges/b1", subAdmin, "")
	require.Equal(t, "b1", out["bridge"])
	c.must(t, 200, "DELETE", "/v1/bridges/b1", subAdmin, "") // a retry answers the same
	c.must(t, 401, "GET", "/v1/accounts", b1Token, "")       // the token is gone at once
	c.must(t, 404, "GET", "/v1/bridges/b1", consoleAdmin, "")
	c.must(t, 404, "GET", "/v1/bridges/b1/cameras", consoleAdmin, "")
	c.must(t, 404, "POST", "/v1/bridges/b1/token", consoleAdmin, "")
	require.Equal(t, s1Bridges[1:], c.ids(t, "/v1/accounts/s1/bridges", "bridges", subUser, 4))
	c.must(t, 404, "POST", "/v1/bridges/b1/cameras", consoleAdmin, `{"id":"cam9","name":"C","streams":[{"id":"cam9-main"}]}`)
	out = c.must(t, 409, "POST", "/v1/accounts/s1/bridges", consoleAdmin, `{"id":"b1","name":"again"}`)
	require.Equal(t, "deleted_id", out["code"], out)
	require.NotContains(t, c.logs.String(), b1Token)
}
