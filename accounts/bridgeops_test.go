package accounts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/replica"
)

// rotate rotates bridge's token and returns the new one.
func (c *console) rotate(t *testing.T, bridge, token, body string, hdr ...string) string {
	t.Helper()
	st, out := c.call(t, "POST", "/v1/bridges/"+bridge+"/token", token, body, hdr...)
	require.Equal(t, 201, st, out)
	tok, _ := out["token"].(string)
	require.NotEmpty(t, tok)
	return tok
}

// authenticates reports whether token is a known bridge token: a bridge
// gets 403 on the console, an unknown token 401.
func (c *console) authenticates(t *testing.T, token string) bool {
	t.Helper()
	st, _ := c.call(t, "GET", "/v1/accounts", token, "")
	require.Contains(t, []int{401, 403}, st)
	return st == 403
}

func TestRotateBridgeToken(t *testing.T) {
	c := newConsole(t)
	c.must(t, 201, "POST", "/v1/accounts", consoleAdmin, `{"id":"r1","name":"R1"}`)
	c.must(t, 201, "POST", "/v1/accounts", consoleAdmin, `{"id":"s1","name":"S1","parent":"r1"}`)
	c.must(t, 201, "POST", "/v1/accounts", consoleAdmin, `{"id":"s2","name":"S2","parent":"r1"}`)
	subUser := c.user(t, "s1", "su@example.com", "user")
	sibling := c.user(t, "s2", "sib@example.com", "admin")
	resellerAdmin := c.user(t, "r1", "ra@example.com", "admin")
	t0 := c.bridge(t, "s1", "b1")
	reg := c.rep.Accounts
	ctx := context.Background()
	ha1 := func(tok string) string { return auth.DigestHA1("b1", accounts.DigestRealm, tok) }

	// Admin on the bridge's account only; bad grace is 400.
	c.must(t, 403, "POST", "/v1/bridges/b1/token", subUser, "")
	c.must(t, 403, "POST", "/v1/bridges/b1/token", sibling, "")
	c.must(t, 403, "POST", "/v1/bridges/b1/token", t0, "")
	c.must(t, 404, "POST", "/v1/bridges/nope/token", consoleAdmin, "")
	for _, b := range []string{`{"grace_seconds":-1}`, `{"grace_seconds":604801}`, `{"grace":1}`, `{`} {
		c.must(t, 400, "POST", "/v1/bridges/b1/token", consoleAdmin, b)
	}
	require.True(t, c.authenticates(t, t0), "nothing rotated so far")

	// A rotation with the default grace: both tokens work for an hour.
	start := c.clk.now()
	st, out := c.call(t, "POST", "/v1/bridges/b1/token", resellerAdmin, "")
	require.Equal(t, 201, st, out)
	t1 := out["token"].(string)
	until, err := time.Parse(time.RFC3339Nano, out["previous_valid_until"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, start.Add(time.Hour), until, time.Second)

	// The same request again (a client retry) rotates nothing and shows no
	// token: t1 stays the bridge's.
	st, out = c.call(t, "POST", "/v1/bridges/b1/token", resellerAdmin, "")
	require.Equal(t, 200, st, out)
	require.NotContains(t, out, "token")
	require.True(t, c.authenticates(t, t0))
	require.True(t, c.authenticates(t, t1))
	ha1s, err := reg.BridgeDigestHA1s(ctx, "b1")
	require.NoError(t, err)
	require.Equal(t, []string{ha1(t1), ha1(t0)}, ha1s)
	out = c.must(t, 200, "GET", "/v1/bridges/b1", subUser, "")
	require.NotEmpty(t, out["previous_token_valid_until"])

	// At the end of the grace (the node's clock) the old token stops.
	c.clk.add(time.Hour - time.Second)
	require.True(t, c.authenticates(t, t0))
	c.clk.add(time.Second)
	require.False(t, c.authenticates(t, t0))
	require.True(t, c.authenticates(t, t1))
	ha1s, err = reg.BridgeDigestHA1s(ctx, "b1")
	require.NoError(t, err)
	require.Equal(t, []string{ha1(t1)}, ha1s)
	out = c.must(t, 200, "GET", "/v1/bridges/b1", subUser, "")
	require.NotContains(t, out, "previous_token_valid_until")

	// Another rotation (its own Idempotency-Key) replaces t1, keeping it
	// for its grace; one more drops the expired t0 entry and t1 with it.
	t2 := c.rotate(t, "b1", consoleAdmin, `{"grace_seconds":60}`, "Idempotency-Key", "k2")
	require.True(t, c.authenticates(t, t1))
	require.True(t, c.authenticates(t, t2))
	t3 := c.rotate(t, "b1", consoleAdmin, `{"grace_seconds":0}`, "Idempotency-Key", "k3")
	for tok, want := range map[string]bool{t0: false, t1: false, t2: false, t3: true} {
		require.Equal(t, want, c.authenticates(t, tok))
	}
	h, err := reg.BridgeDigestHA1(ctx, "b1")
	require.NoError(t, err)
	require.Equal(t, ha1(t3), h)
	require.Len(t, c.rep.Machine.Accounts.TokenIndex, 1, "only the current token is indexed")

	// No plaintext token in the state, a snapshot or the logs; a restored
	// replica knows the current and the previous token apart.
	t4 := c.rotate(t, "b1", consoleAdmin, `{"grace_seconds":300}`, "Idempotency-Key", "k4")
	state := string(machinetest.StateOf(t, c.rep.Machine))
	snap := machinetest.Persist(t, c.rep.Machine)
	for _, tok := range []string{t0, t1, t2, t3, t4} {
		require.NotContains(t, state, tok)
		require.NotContains(t, string(snap), tok)
		require.NotContains(t, c.logs.String(), tok)
	}
	m2 := replica.NewMachine(nil)
	require.NoError(t, m2.Restore(io.NopCloser(bytes.NewReader(snap))))
	require.Equal(t, auth.HashToken(t4), m2.Accounts.Bridges["b1"].TokenHash)
	reg2 := accounts.New(m2.Accounts, nil, nil).WithClock(c.clk.now)
	for tok, want := range map[string]bool{t3: true, t4: true, t2: false} {
		_, err := reg2.BridgeByTokenHash(ctx, auth.HashToken(tok))
		require.Equal(t, want, err == nil)
	}
	require.Equal(t, snap, machinetest.Persist(t, m2), "restoring changes nothing")
}

// The apply functions on their own: refusals change nothing, and the
// expiry is the proposer's time plus the grace.
func TestBridgeOpsApply(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	tok := auth.NewToken()
	nonce := accounts.BridgeNonce("b1", tok)
	state := func() map[string]any {
		var m map[string]any
		require.NoError(t, json.Unmarshal(h.State(), &m))
		delete(m, "applied_index")
		return m
	}
	before := state()
	for name, p := range map[string]accounts.RotateBridgeTokenCmd{
		"unknown bridge": {ID: "zz", GraceMS: 1000},
		"negative grace": {ID: "b1", GraceMS: -1},
		"grace too long": {ID: "b1", GraceMS: accounts.MaxTokenGrace.Milliseconds() + 1},
	} {
		_, err := h.Apply(cluster.CmdRotateBridgeToken, "", nonce, p)
		require.Error(t, err, name)
	}
	_, err := h.Apply(cluster.CmdRotateBridgeToken, "", "plain-but-short", accounts.RotateBridgeTokenCmd{ID: "b1"})
	require.Error(t, err, "no token hash")
	_, err = h.Apply(cluster.CmdDeleteBridge, "", "", accounts.DeleteBridgeCmd{ID: "zz"})
	require.ErrorIs(t, err, cluster.ErrNotFound)
	require.Equal(t, before, state(), "refusals change nothing")

	old := h.M.Accounts.Bridges["b1"].TokenHash
	at := h.Clock
	h.MustAt(at, cluster.CmdRotateBridgeToken, "rot", nonce, accounts.RotateBridgeTokenCmd{ID: "b1", GraceMS: 90_000})
	b := h.M.Accounts.Bridges["b1"]
	require.Equal(t, auth.HashToken(tok), b.TokenHash)
	require.Equal(t, "b1", h.M.Accounts.TokenIndex[old])
	// The same request id again is the first result: no second rotation.
	h.MustAt(at.Add(time.Minute), cluster.CmdRotateBridgeToken, "rot", accounts.BridgeNonce("b1", auth.NewToken()), accounts.RotateBridgeTokenCmd{ID: "b1", GraceMS: 90_000})
	require.Equal(t, auth.HashToken(tok), h.M.Accounts.Bridges["b1"].TokenHash)
	reg := accounts.New(h.M.Accounts, nil, nil)
	for now, want := range map[time.Time]bool{at.Add(89 * time.Second): true, at.Add(90 * time.Second): false} {
		_, err := reg.WithClock(func() time.Time { return now }).BridgeByTokenHash(context.Background(), old)
		require.Equal(t, want, err == nil, "at +%s", now.Sub(at))
	}

	h.Must(cluster.CmdCreateCamera, "c", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "c1-s"})})
	_, err = h.Apply(cluster.CmdDeleteBridge, "", "", accounts.DeleteBridgeCmd{ID: "b1"})
	var e *cluster.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "bridge_has_cameras", e.Code)
	h.Must(cluster.CmdDeleteCamera, "", "purge-c1", accounts.DeleteCameraCmd{ID: "c1"})
	h.Must(cluster.CmdDeleteBridge, "", "", accounts.DeleteBridgeCmd{ID: "b1"})
	require.Empty(t, h.M.Accounts.TokenIndex[old])
	require.Empty(t, h.M.Accounts.TokenIndex[auth.HashToken(tok)])
	_, err = h.Apply(cluster.CmdCreateCamera, "", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c2", accounts.NewStream{ID: "c2-s"})})
	require.ErrorIs(t, err, cluster.ErrNotFound)
	_, err = h.Apply(cluster.CmdRotateBridgeToken, "", accounts.BridgeNonce("b1", auth.NewToken()), accounts.RotateBridgeTokenCmd{ID: "b1"})
	require.ErrorIs(t, err, cluster.ErrNotFound)
	_, err = reg.BridgeDigestHA1(context.Background(), "b1")
	require.ErrorIs(t, err, accounts.ErrNotFound)
}
