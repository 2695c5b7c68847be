package accounts_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/purge"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/replica"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/auth"
)

const adminToken = "admin-secret-token"

type client struct {
	t   *testing.T
	url string
}

func serve(t *testing.T, m *replica.Replica) *client {
	mux := http.NewServeMux()
	for _, p := range accounts.HandlerPatterns() {
		mux.Handle(p, m.Accounts.Handler())
	}
	for _, p := range purge.Patterns() {
		mux.Handle(p, m.Purges.Handler(m.Accounts))
	}
	for _, p := range meter.Patterns() {
		mux.Handle(p, m.Meter.Handler(m.Accounts, ""))
	}
	srv := httptest.NewServer(auth.New(adminToken, m.Accounts).Middleware(mux, nil))
	t.Cleanup(srv.Close)
	return &client{t: t, url: srv.URL}
}

type resp struct {
	status int
	body   map[string]any
	header http.Header
}

func (c *client) do(method, path, token, body string, hdr ...string) resp {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(body))
	require.NoError(c.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(c.t, err)
	r := resp{status: res.StatusCode, header: res.Header}
	if len(b) > 0 {
		require.NoError(c.t, json.Unmarshal(b, &r.body), string(b))
	}
	return r
}

func (c *client) op(method, path, body string, hdr ...string) resp {
	c.t.Helper()
	return c.do(method, path, adminToken, body, hdr...)
}

func provision(t *testing.T, c *client) (bridgeToken string) {
	t.Helper()
	require.Equal(t, 201, c.op("POST", "/v1/accounts", `{"id":"r1","name":"Reseller","defaults":{"retention_days":60}}`).status)
	require.Equal(t, 201, c.op("POST", "/v1/accounts", `{"id":"s1","name":"Sub","parent":"r1","billing_cycle":"annual"}`).status)
	r := c.op("POST", "/v1/accounts/s1/bridges", `{"id":"b1","name":"Bridge"}`)
	require.Equal(t, 201, r.status, r.body)
	tok, _ := r.body["token"].(string)
	require.Len(t, tok, 43)
	r = c.op("POST", "/v1/bridges/b1/cameras", `{"id":"c1","name":"Door","streams":[{"id":"c1-main","width":1920,"height":1080},{"id":"c1-sub","width":640,"height":480,"retention_days":7,"analytics":["people"]}]}`)
	require.Equal(t, 201, r.status, r.body)
	return tok
}

func TestHTTPProvisioning(t *testing.T) {
	m := machinetest.OpenReplica(t, t.TempDir(), "127.0.0.1:0", func() time.Time { return machinetest.T0 })
	defer m.Close()
	c := serve(t, m)
	tok := provision(t, c)

	// The bridge token works for auth lookups.
	id, err := m.Accounts.BridgeByTokenHash(context.Background(), auth.HashToken(tok))
	require.NoError(t, err)
	require.Equal(t, "b1", id)

	r := c.op("GET", "/v1/meter/streams/c1-main", "")
	require.Equal(t, 200, r.status)
	require.Equal(t, "HD2-D60", r.body["sku"])
	require.Equal(t, "HD2", r.body["tier"])
	require.Len(t, r.body["history"], 1)
	r = c.op("GET", "/v1/meter/streams/c1-sub", "")
	require.Equal(t, "SD1-D7", r.body["sku"])

	r = c.op("PATCH", "/v1/streams/c1-main", `{"retention_days":90,"width":3840,"height":2160}`)
	require.Equal(t, 200, r.status, r.body)
	r = c.op("GET", "/v1/meter/streams/c1-main", "")
	require.Equal(t, "HD10-D90", r.body["sku"])
	require.Len(t, r.body["history"], 2)

	r = c.op("PATCH", "/v1/accounts/s1", `{"defaults":{"retention_days":14},"privacy_mode_allowed":true,"privacy_mode":true}`)
	require.Equal(t, 200, r.status, r.body)
	require.Equal(t, true, r.body["privacy_mode"])

	r = c.op("DELETE", "/v1/cameras/c1", "")
	require.Equal(t, 202, r.status, r.body)
	purge, _ := r.body["purge"].(string)
	require.NotEmpty(t, purge)
	// A retried DELETE gets the same purge.
	r = c.op("DELETE", "/v1/cameras/c1", "")
	require.Equal(t, 202, r.status)
	require.Equal(t, purge, r.body["purge"])
	// Deleted: gone for live use, still in the meter.
	_, err = m.Accounts.Stream(context.Background(), "c1-main")
	require.ErrorIs(t, err, accounts.ErrNotFound)
	_, err = m.Accounts.Camera(context.Background(), "c1")
	require.ErrorIs(t, err, accounts.ErrNotFound)
	r = c.op("GET", "/v1/meter/streams/c1-main", "")
	require.Equal(t, 200, r.status)
	require.NotEmpty(t, r.body["deleted_at"])
	require.Equal(t, 404, c.op("PATCH", "/v1/streams/c1-main", `{"retention_days":7}`).status)
	streams, err := m.Accounts.Streams(context.Background())
	require.NoError(t, err)
	require.Empty(t, streams)
}

func TestHTTPIdempotentRetries(t *testing.T) {
	m := machinetest.OpenReplica(t, t.TempDir(), "127.0.0.1:0", func() time.Time { return machinetest.T0 })
	defer m.Close()
	c := serve(t, m)
	provision(t, c)

	// Same POST again (no key): the derived request id replays the
	// creation, but the token was shown once: 200 without it.
	r1 := c.op("POST", "/v1/accounts/s1/bridges", `{"id":"b2","name":"Two"}`)
	r2 := c.op("POST", "/v1/accounts/s1/bridges", `{"id":"b2","name":"Two"}`)
	require.Equal(t, 201, r1.status)
	require.NotEmpty(t, r1.body["token"])
	require.Equal(t, 200, r2.status)
	require.Nil(t, r2.body["token"])
	// The first token stays the bridge's.
	id, err := m.Accounts.BridgeByTokenHash(context.Background(), auth.HashToken(r1.body["token"].(string)))
	require.NoError(t, err)
	require.Equal(t, "b2", id)

	// With an Idempotency-Key, the same.
	k1 := c.op("POST", "/v1/accounts/s1/bridges", `{"id":"b3","name":"Three"}`, "Idempotency-Key", "k-1")
	k2 := c.op("POST", "/v1/accounts/s1/bridges", `{"id":"b3","name":"Three"}`, "Idempotency-Key", "k-1")
	require.Equal(t, 201, k1.status)
	require.NotEmpty(t, k1.body["token"])
	require.Equal(t, 200, k2.status)
	require.Nil(t, k2.body["token"])
	// Another key for the identical bridge: success without a token.
	k3 := c.op("POST", "/v1/accounts/s1/bridges", `{"id":"b3","name":"Three"}`, "Idempotency-Key", "k-2")
	require.Equal(t, 200, k3.status)
	require.Nil(t, k3.body["token"])
	// The same key for a different body is refused.
	k4 := c.op("POST", "/v1/accounts/s1/bridges", `{"id":"b4","name":"Four"}`, "Idempotency-Key", "k-1")
	require.Equal(t, 409, k4.status)
	require.Equal(t, "idempotency_key_reused", k4.body["code"])

	// Re-creating an account with the same fields: 200; different: 409.
	require.Equal(t, 200, c.op("POST", "/v1/accounts", `{"id":"r1","name":"Reseller","defaults":{"retention_days":60}}`, "Idempotency-Key", "x").status)
	r := c.op("POST", "/v1/accounts", `{"id":"r1","name":"Other"}`)
	require.Equal(t, 409, r.status)
	require.Equal(t, "conflict", r.body["code"])

	// A→B→A on PATCH without keys: each applies.
	for _, d := range []int{7, 30, 7} {
		r := c.op("PATCH", "/v1/streams/c1-main", `{"retention_days":`+itoa(d)+`}`)
		require.Equal(t, 200, r.status)
	}
	s, err := m.Accounts.Stream(context.Background(), "c1-main")
	require.NoError(t, err)
	require.Equal(t, 7, s.RetentionDays)
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestHTTPErrors(t *testing.T) {
	m := machinetest.OpenReplica(t, t.TempDir(), "127.0.0.1:0", func() time.Time { return machinetest.T0 })
	defer m.Close()
	c := serve(t, m)
	bridgeToken := provision(t, c)

	big := `{"id":"x","name":"` + strings.Repeat("a", 1<<20) + `"}`
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"malformed json", "POST", "/v1/accounts", `{"id":`, 400, "malformed_json"},
		{"unknown field", "POST", "/v1/accounts", `{"id":"a","name":"A","colour":"red"}`, 400, "malformed_json"},
		{"trailing data", "POST", "/v1/accounts", `{"id":"a","name":"A"} {}`, 400, "malformed_json"},
		{"oversized", "POST", "/v1/accounts", big, 413, "body_too_large"},
		{"bad body id", "POST", "/v1/accounts", `{"id":"a b","name":"A"}`, 400, "invalid_id"},
		{"long id", "POST", "/v1/accounts", `{"id":"` + strings.Repeat("a", 65) + `","name":"A"}`, 400, "invalid_id"},
		{"bad path id", "PATCH", "/v1/streams/a.b", `{}`, 400, "invalid_id"},
		{"unknown parent", "POST", "/v1/accounts", `{"id":"a","name":"A","parent":"nope"}`, 400, "unknown_parent"},
		{"unknown account for bridge", "POST", "/v1/accounts/nope/bridges", `{"id":"bx","name":"B"}`, 404, "not_found"},
		{"unknown bridge", "POST", "/v1/bridges/nope/cameras", `{"id":"cx","name":"C","streams":[{"id":"sx"}]}`, 400, "unknown_bridge"},
		{"retention 0", "POST", "/v1/bridges/b1/cameras", `{"id":"cx","name":"C","streams":[{"id":"sx","retention_days":0}]}`, 400, "invalid_retention"},
		{"retention 3651", "PATCH", "/v1/streams/c1-main", `{"retention_days":3651}`, 400, "invalid_retention"},
		{"width 0", "POST", "/v1/bridges/b1/cameras", `{"id":"cx","name":"C","streams":[{"id":"sx","width":0,"height":720}]}`, 400, "invalid_resolution"},
		{"height negative", "PATCH", "/v1/streams/c1-main", `{"height":-5}`, 400, "invalid_resolution"},
		{"bad cycle", "PATCH", "/v1/accounts/s1", `{"billing_cycle":"weekly"}`, 400, "invalid_billing_cycle"},
		{"unknown stream", "PATCH", "/v1/streams/nope", `{"retention_days":7}`, 404, "not_found"},
		{"unknown account", "PATCH", "/v1/accounts/nope", `{"name":"x"}`, 404, "not_found"},
		{"unknown camera", "DELETE", "/v1/cameras/nope", ``, 404, "not_found"},
		{"unknown meter stream", "GET", "/v1/meter/streams/nope", ``, 404, "not_found"},
		{"conflicting camera", "POST", "/v1/bridges/b1/cameras", `{"id":"c1","name":"Other","streams":[{"id":"c1-main"}]}`, 409, "conflict"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.op(tc.method, tc.path, tc.body)
			require.Equal(t, tc.status, r.status, r.body)
			require.Equal(t, tc.code, r.body["code"], r.body)
			require.NotEmpty(t, r.body["error"])
		})
	}

	// Unauthorised: a bridge principal gets 403, no token 401.
	r := c.do("POST", "/v1/accounts", bridgeToken, `{"id":"a","name":"A"}`)
	require.Equal(t, 403, r.status)
	require.Equal(t, "forbidden", r.body["code"])
	r = c.do("GET", "/v1/meter/streams/c1-main", bridgeToken, "")
	require.Equal(t, 403, r.status)
	r = c.do("POST", "/v1/accounts", "", `{"id":"a","name":"A"}`)
	require.Equal(t, 401, r.status)
	_, err := m.Accounts.Account(context.Background(), "a")
	require.ErrorIs(t, err, accounts.ErrNotFound)
}

func TestRestartSurvival(t *testing.T) {
	dir := t.TempDir()
	m := machinetest.OpenReplica(t, dir, "127.0.0.1:0", func() time.Time { return machinetest.T0 })
	addr := m.Node().Addr()
	c := serve(t, m)
	tok := provision(t, c)
	require.Equal(t, 200, c.op("PATCH", "/v1/streams/c1-sub", `{"retention_days":30}`).status)
	require.NoError(t, m.Node().Snapshot())
	// After the snapshot: replayed from the WAL on restart.
	require.Equal(t, 201, c.op("POST", "/v1/bridges/b1/cameras", `{"id":"c2","name":"Yard","streams":[{"id":"c2-main"}]}`).status)
	require.Equal(t, 202, c.op("DELETE", "/v1/cameras/c2", "").status)
	before, err := m.Accounts.StreamRecord(context.Background(), "c1-sub")
	require.NoError(t, err)
	require.NoError(t, m.Close())

	m2 := machinetest.OpenReplica(t, dir, addr, func() time.Time { return machinetest.T0 })
	defer m2.Close()
	after, err := m2.Accounts.StreamRecord(context.Background(), "c1-sub")
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.Len(t, after.History, 2)
	id, err := m2.Accounts.BridgeByTokenHash(context.Background(), auth.HashToken(tok))
	require.NoError(t, err)
	require.Equal(t, "b1", id)
	_, err = m2.Accounts.Stream(context.Background(), "c2-main")
	require.ErrorIs(t, err, accounts.ErrNotFound)
	a, err := m2.Accounts.Account(context.Background(), "s1")
	require.NoError(t, err)
	require.Equal(t, accounts.CycleAnnual, a.BillingCycle)

	// The bridge token still authenticates over HTTP (403 = known, not operator).
	c2 := serve(t, m2)
	require.Equal(t, 403, c2.do("GET", "/v1/meter/streams/c1-sub", tok, "").status)
	// A retry of a request from before the restart is still recognised,
	// and still does not show the token again.
	r := c2.op("POST", "/v1/accounts/s1/bridges", `{"id":"b1","name":"Bridge"}`)
	require.Equal(t, 200, r.status)
	require.Nil(t, r.body["token"])
}
