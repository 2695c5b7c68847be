package playback

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/replica"
	fsstore "github.com/vigilcloud/vigil/storage/fs"
)

// scopeEnv is a node over a real replica: accounts and users in the
// replicated registry, the real authenticator, the ingest PUT and playback
// on one mux. Reseller r1 has sub-accounts s1 (bridge b1, stream st1) and
// s2; r2 is a foreign reseller.
type scopeEnv struct {
	*env
	rep   *replica.Replica
	clock atomic.Int64 // playback's clock, Unix ms
	// Tokens by role.
	bridge, billing                           string
	r1Admin, r1User, s1User, s2Admin, r2Admin string
	r1UserID                                  string
	// Users of s1 made by its reseller's admin (delegated) and by its own
	// admin.
	s1ByReseller, s1ByOwnAdmin string
	start                      int64 // first of the two uploaded segments
}

func newScopeEnv(t *testing.T) *scopeEnv {
	t.Helper()
	ctx := context.Background()
	rep := machinetest.OpenReplica(t, t.TempDir(), "127.0.0.1:0", nil)
	e := &scopeEnv{rep: rep}
	e.clock.Store(time.Now().UnixMilli())
	acc := rep.Accounts
	for _, a := range []accounts.NewAccount{{ID: "r1", Name: "R1"}, {ID: "s1", Name: "S1", Parent: "r1"},
		{ID: "s2", Name: "S2", Parent: "r1"}, {ID: "r2", Name: "R2"}} {
		_, err := acc.CreateAccount(ctx, "", a)
		require.NoError(t, err)
	}
	allowed := true
	_, err := acc.UpdateAccount(ctx, "", auth.Principal{Kind: auth.Operator}, "s1", accounts.AccountPatch{PrivacyModeAllowed: &allowed})
	require.NoError(t, err)
	b, err := acc.CreateBridge(ctx, "", "s1", accounts.NewBridge{ID: "b1", Name: "B1"})
	require.NoError(t, err)
	e.bridge = b.Token
	_, err = acc.CreateCamera(ctx, "", "b1", accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "st1"}}})
	require.NoError(t, err)

	op := auth.Principal{Kind: auth.Operator}
	loginBy := func(by auth.Principal, account, email, role string) (string, string) {
		u, inv, err := rep.Access.CreateUser(ctx, "", by, account, email, role)
		require.NoError(t, err)
		_, err = rep.Access.AcceptInvitation(ctx, inv.Token, "a long enough password")
		require.NoError(t, err)
		tok, _, err := rep.Access.Login(ctx, email, "a long enough password")
		require.NoError(t, err)
		return tok, u.ID
	}
	login := func(account, email, role string) (string, string) { return loginBy(op, account, email, role) }
	var r1AdminID, s1AdminID string
	e.r1Admin, r1AdminID = login("r1", "r1admin@example.com", access.RoleAdmin)
	_, s1AdminID = login("s1", "s1admin@example.com", access.RoleAdmin)
	e.s1ByReseller, _ = loginBy(auth.Principal{Kind: auth.User, ID: r1AdminID, Account: "r1", Role: access.RoleAdmin},
		"s1", "spy@example.com", access.RoleAdmin)
	e.s1ByOwnAdmin, _ = loginBy(auth.Principal{Kind: auth.User, ID: s1AdminID, Account: "s1", Role: access.RoleAdmin},
		"s1", "friend@example.com", access.RoleUser)
	e.r1User, e.r1UserID = login("r1", "r1user@example.com", access.RoleUser)
	e.s1User, _ = login("s1", "s1user@example.com", access.RoleUser)
	e.s2Admin, _ = login("s2", "s2admin@example.com", access.RoleAdmin)
	e.r2Admin, _ = login("r2", "r2admin@example.com", access.RoleAdmin)
	e.billing, _, err = rep.Access.CreateToken(ctx, "", op, "", "erp")
	require.NoError(t, err)

	fsb, err := fsstore.New(t.TempDir())
	require.NoError(t, err)
	idx := embedded.New(fsb, embedded.Options{})
	mux := http.NewServeMux()
	mux.Handle(ingest.SegmentPattern, ingest.New(ingest.Config{Registerer: prometheus.NewRegistry()}, fsb, idx, acc))
	mux.Handle(Pattern, NewWithOptions(fsb, idx, acc, Options{
		URLKey: DeriveURLKey(adminToken), URLTTL: time.Hour,
		Now:   func() time.Time { return time.UnixMilli(e.clock.Load()) },
		Audit: rep.Access, Signers: rep.Access,
	}))
	authn := auth.New(adminToken, acc)
	authn.WithUsers(rep.Access)
	srv := httptest.NewServer(authn.Middleware(mux, HasURLSignature))
	t.Cleanup(srv.Close)
	e.env = &env{srv: srv, store: fsb, idx: idx, bodies: map[int64][]byte{}}

	// Two real fMP4 segments, uploaded by the bridge as it does.
	e.start = recentBase()
	for i, seg := range ffmpegSegments(t, 2, "mp4") {
		u := e.srv.URL + "/v1/streams/st1/segments/" + strconv.FormatInt(e.start+int64(i)*6000, 10) + "?duration_ms=6000"
		req, err := http.NewRequest(http.MethodPut, u, strings.NewReader(string(seg)))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+e.bridge)
		req.Header.Set("Content-Type", "video/mp4")
		resp, err := e.srv.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusCreated, resp.StatusCode)
	}
	return e
}

// paths are the stream's routes: the recordings list first, then video.
func (e *scopeEnv) paths() map[string]string {
	s := strconv.FormatInt(e.start, 10)
	w := window(e.start, e.start+12_000)
	return map[string]string{
		"recordings": "/v1/streams/st1/recordings" + w,
		"segment":    "/v1/streams/st1/segments/" + s,
		"init":       "/v1/streams/st1/segments/" + s + "/init.mp4",
		"media":      "/v1/streams/st1/segments/" + s + "/media.m4s",
		"playlist":   "/v1/streams/st1/playlist.m3u8" + w,
		"live":       "/v1/streams/st1/live.m3u8",
		"clip":       "/v1/streams/st1/clip.mp4" + window(e.start, e.start+8000),
	}
}

func (e *scopeEnv) setPrivacy(t *testing.T, on bool, until *time.Time) {
	t.Helper()
	patch := accounts.AccountPatch{PrivacyMode: &on}
	if until != nil {
		patch.PrivacySuspendedUntil = accounts.OptionalTime{Set: true, Time: until}
	}
	_, err := e.rep.Accounts.UpdateAccount(context.Background(), "", auth.Principal{Kind: auth.Operator}, "s1", patch)
	require.NoError(t, err)
}

// refusals returns the privacy.refused entries of s1's audit log.
func (e *scopeEnv) refusals() []access.AuditEntry {
	all, _ := e.rep.Access.AuditLog(context.Background(), "s1", 0, 1000)
	var out []access.AuditEntry
	for _, a := range all {
		if a.Action == ActionPrivacyRefused {
			out = append(out, a)
		}
	}
	return out
}

// signedURI fetches the playlist with token and returns its first signed
// media URI, as a player would request it.
func (e *scopeEnv) signedURI(t *testing.T, token string) string {
	t.Helper()
	resp, pl := e.get(t, e.paths()["playlist"], token, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", pl)
	for _, u := range playlistURIs(string(pl)) {
		if strings.Contains(u, "/media.m4s?") {
			return "/v1/streams/st1/" + u
		}
	}
	t.Fatalf("no signed media URI in\n%s", pl)
	return ""
}

func TestPrivacyScopeMatrix(t *testing.T) {
	e := newScopeEnv(t)
	type want struct{ recordings, video int }
	cases := []struct {
		name, token string
		off, on     want
		onCode      string
	}{
		{"operator", adminToken, want{200, 200}, want{200, 200}, ""},
		{"reseller admin", e.r1Admin, want{200, 200}, want{200, 403}, "privacy_mode"},
		{"reseller user", e.r1User, want{200, 200}, want{200, 403}, "privacy_mode"},
		{"sub-account's own user", e.s1User, want{200, 200}, want{200, 200}, ""},
		{"user its own admin created", e.s1ByOwnAdmin, want{200, 200}, want{200, 200}, ""},
		// The reseller cannot get around privacy mode through a user it
		// creates in the customer's account.
		{"user the reseller created in it", e.s1ByReseller, want{200, 200}, want{200, 403}, "privacy_mode"},
		{"sibling sub-account's admin", e.s2Admin, want{403, 403}, want{403, 403}, "forbidden"},
		{"foreign reseller admin", e.r2Admin, want{403, 403}, want{403, 403}, "forbidden"},
		{"bridge", e.bridge, want{403, 403}, want{403, 403}, "forbidden"},
		{"billing", e.billing, want{403, 403}, want{403, 403}, "forbidden"},
		{"no token", "", want{401, 401}, want{401, 401}, "unauthorized"},
	}
	run := func(t *testing.T, on bool) {
		for _, c := range cases {
			for route, path := range e.paths() {
				t.Run(c.name+"/"+route, func(t *testing.T) {
					w := c.off
					if on {
						w = c.on
					}
					status := w.video
					if route == "recordings" {
						status = w.recordings
					}
					resp, b := e.get(t, path, c.token, nil)
					assert.Equal(t, status, resp.StatusCode, "%s", b)
					if status == 200 && route == "segment" {
						assert.NotEmpty(t, b)
					}
					if status >= 400 && on {
						assert.Equal(t, c.onCode, code(t, b))
					}
				})
			}
		}
	}
	t.Run("privacy off", func(t *testing.T) { run(t, false) })
	e.setPrivacy(t, true, nil)
	t.Run("privacy on", func(t *testing.T) { run(t, true) })

	// Suspended until a later time: the reseller watches again.
	later := time.UnixMilli(e.clock.Load()).Add(time.Hour)
	e.setPrivacy(t, true, &later)
	t.Run("suspended", func(t *testing.T) { run(t, false) })
	// The suspension ran out: privacy mode holds again.
	e.clock.Add((2 * time.Hour).Milliseconds())
	t.Run("suspension over", func(t *testing.T) { run(t, true) })
}

func TestPrivacyRefusalsAuditedOncePerMinute(t *testing.T) {
	e := newScopeEnv(t)
	e.setPrivacy(t, true, nil)
	p := e.paths()
	for range 3 {
		for _, route := range []string{"segment", "playlist", "clip"} {
			resp, b := e.get(t, p[route], e.r1Admin, nil)
			require.Equal(t, http.StatusForbidden, resp.StatusCode, "%s", b)
		}
	}
	resp, _ := e.get(t, p["recordings"], e.r1Admin, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "metadata stays visible and is not a refusal")
	got := e.refusals()
	require.Len(t, got, 1, "%+v", got)
	assert.Equal(t, "stream:st1", got[0].Target)
	r1Admin, err := e.rep.Access.PrincipalByTokenHash(context.Background(), auth.HashToken(e.r1Admin))
	require.NoError(t, err)
	assert.Equal(t, r1Admin.Actor(), got[0].Actor)

	// Another actor is its own entry; the same one again after a minute.
	resp, _ = e.get(t, p["segment"], e.r1User, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Len(t, e.refusals(), 2)
	e.clock.Add((59 * time.Second).Milliseconds())
	resp, _ = e.get(t, p["segment"], e.r1Admin, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Len(t, e.refusals(), 2, "within the minute")
	e.clock.Add((time.Second).Milliseconds())
	resp, _ = e.get(t, p["segment"], e.r1Admin, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Len(t, e.refusals(), 3, "a minute later")
}

func TestSignedURLsCheckedWhenUsed(t *testing.T) {
	e := newScopeEnv(t)
	reseller := e.signedURI(t, e.r1Admin)
	own := e.signedURI(t, e.s1User)
	op := e.signedURI(t, adminToken)
	removed := e.signedURI(t, e.r1User)
	require.Contains(t, reseller, "&by=user.")
	require.Contains(t, op, "&by=operator&")
	for _, u := range []string{reseller, own, op, removed} {
		resp, b := e.get(t, u, "", nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", u, b)
	}

	// Minted before privacy mode went on, refused after; the refusal is
	// audited under the signer.
	e.setPrivacy(t, true, nil)
	resp, b := e.get(t, reseller, "", nil)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "privacy_mode", code(t, b))
	got := e.refusals()
	require.Len(t, got, 1)
	assert.True(t, strings.HasPrefix(got[0].Actor, "user:"), got[0].Actor)
	for _, u := range []string{own, op} {
		resp, b := e.get(t, u, "", nil)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", u, b)
	}

	// A removed user's URL is refused, whatever privacy says.
	e.setPrivacy(t, false, nil)
	_, err := e.rep.Access.RemoveUser(context.Background(), "", auth.Principal{Kind: auth.Operator}, e.r1UserID)
	require.NoError(t, err)
	resp, b = e.get(t, removed, "", nil)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "signer_revoked", code(t, b))

	// A revoked token's URL too: log in again, sign, revoke the session.
	tok, tk, err := e.rep.Access.Login(context.Background(), "s1user@example.com", "a long enough password")
	require.NoError(t, err)
	u := e.signedURI(t, tok)
	resp, _ = e.get(t, u, "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, err = e.rep.Access.RevokeToken(context.Background(), "", auth.Principal{Kind: auth.Operator}, "", tk.ID)
	require.NoError(t, err)
	resp, b = e.get(t, u, "", nil)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "signer_revoked", code(t, b))

	// The identity cannot be swapped: the reseller's URL as the
	// sub-account's user (whose ids are public in the audit log).
	p, q, _ := strings.Cut(reseller, "?")
	exp, by, sig := splitSigned(t, q)
	f := strings.Split(by, ".")
	f[2] = "s1"
	resp, b = e.get(t, p+"?exp="+exp+"&by="+strings.Join(f, ".")+"&sig="+sig, "", nil)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "bad_signature", code(t, b))

	// A first-format URL (exp and sig only) says so.
	resp, b = e.get(t, p+"?exp="+exp+"&sig="+sig, "", nil)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "signed_url_outdated", code(t, b))
}
