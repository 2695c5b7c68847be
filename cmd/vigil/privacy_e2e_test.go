package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/bench"
)

// TestPrivacyModePlaybackE2E drives the real binary: a reseller's admin
// watches its sub-account until the sub-account switches privacy mode on;
// then the recordings list stays visible, the video and a signed URL minted
// before are refused and audited once, the sub-account's own user still
// watches, a suspension lets the reseller in, and a removed user's signed
// URL is refused.
func TestPrivacyModePlaybackE2E(t *testing.T) {
	n := startVigil(t, nil)
	ctx := context.Background()
	op := n.api
	var br struct{ Token string }
	br.Token = n.privacyTenants("st")

	user := n.newUser
	reseller, _ := user("r1", "admin@reseller.example", "admin")
	customer, _ := user("s1", "owner@customer.example", "user")
	leaver, leaverID := user("s1", "leaver@customer.example", "user")
	foreign, _ := user("r2", "admin@other.example", "admin")

	mp4, ctype := realSegment(t, bench.PayloadFMP4)
	start := time.Now().Add(-time.Minute).Truncate(2 * time.Second).UnixMilli()
	for i := range 2 {
		if st, _ := put(t, n.base, br.Token, "st", start+int64(i)*2000, mp4, ctype); st != http.StatusCreated {
			t.Fatalf("upload %d: %d", i, st)
		}
	}
	w := fmt.Sprintf("?start=%d&end=%d", start, start+4000)
	paths := map[string]string{
		"segment":  fmt.Sprintf("/v1/streams/st/segments/%d", start),
		"playlist": "/v1/streams/st/playlist.m3u8" + w,
		"clip":     "/v1/streams/st/clip.mp4" + w,
	}
	recordings := "/v1/streams/st/recordings" + w
	expect := func(token, path string, status int, code string) {
		t.Helper()
		st, c := statusCode(t, n.base+path, token)
		if st != status || (code != "" && c != code) {
			t.Fatalf("GET %s: %d %q, want %d %q", path, st, c, status, code)
		}
	}
	signed := func(token string) string {
		t.Helper()
		resp, err := authGet(n.base+paths["playlist"], token, "")
		must(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "/media.m4s?") {
				return "/v1/streams/st/" + strings.TrimSpace(l)
			}
		}
		t.Fatalf("no signed URL in the playlist (%d):\n%s", resp.StatusCode, b)
		return ""
	}

	// Before privacy mode: the reseller watches, the foreign one does not.
	for _, p := range paths {
		expect(reseller, p, 200, "")
		expect(foreign, p, 403, "forbidden")
		expect(br.Token, p, 403, "forbidden")
	}
	resellerURL, leaverURL := signed(reseller), signed(leaver)
	expect("", resellerURL, 200, "")
	expect("", leaverURL, 200, "")

	must(t, op.do(ctx, "PATCH", "/v1/accounts/s1", map[string]any{"privacy_mode": true}, nil))
	expect(reseller, recordings, 200, "")
	for _, p := range paths {
		expect(reseller, p, 403, "privacy_mode")
		expect(customer, p, 200, "")
	}
	expect("", resellerURL, 403, "privacy_mode")
	var audit struct {
		Entries []struct{ Actor, Action, Target string }
	}
	must(t, op.do(ctx, "GET", "/v1/accounts/s1/audit?limit=1000", nil, &audit))
	var refused int
	for _, e := range audit.Entries {
		if e.Action == "privacy.refused" {
			refused++
			if e.Target != "stream:st" || !strings.HasPrefix(e.Actor, "user:") {
				t.Errorf("audit entry %+v", e)
			}
		}
	}
	if refused != 1 {
		t.Fatalf("%d privacy.refused entries within a minute, want 1: %+v", refused, audit.Entries)
	}

	// Suspended until later: the reseller is let in; until a past time: not.
	must(t, op.do(ctx, "PATCH", "/v1/accounts/s1", map[string]any{"privacy_suspended_until": time.Now().Add(time.Hour)}, nil))
	expect(reseller, paths["segment"], 200, "")
	must(t, op.do(ctx, "PATCH", "/v1/accounts/s1", map[string]any{"privacy_suspended_until": time.Now().Add(-time.Hour)}, nil))
	expect(reseller, paths["segment"], 403, "privacy_mode")

	// A removed user's signed URL stops working.
	must(t, op.do(ctx, "DELETE", "/v1/users/"+leaverID, nil, nil))
	expect("", leaverURL, 403, "signer_revoked")
}

// privacyTenants provisions reseller r1, its sub-account s1 (privacy
// mode allowed) with bridge br and camera cam of one 320x240 stream, and
// another reseller r2; it returns br's token.
func (n *vigilNode) privacyTenants(stream string) string {
	t, ctx, op := n.t, context.Background(), n.api
	must(t, op.do(ctx, "POST", "/v1/accounts", map[string]any{"id": "r1", "name": "Reseller"}, nil))
	must(t, op.do(ctx, "POST", "/v1/accounts", map[string]any{"id": "s1", "name": "Customer", "parent": "r1"}, nil))
	must(t, op.do(ctx, "POST", "/v1/accounts", map[string]any{"id": "r2", "name": "Other reseller"}, nil))
	must(t, op.do(ctx, "PATCH", "/v1/accounts/s1", map[string]any{"privacy_mode_allowed": true}, nil))
	var br struct{ Token string }
	must(t, op.do(ctx, "POST", "/v1/accounts/s1/bridges", map[string]any{"id": "br", "name": "Bridge"}, &br))
	must(t, op.do(ctx, "POST", "/v1/bridges/br/cameras", map[string]any{"id": "cam", "name": "Cam",
		"streams": []map[string]any{{"id": stream, "width": 320, "height": 240, "retention_days": 30}}}, nil))
	return br.Token
}

// newUser invites a user into account, accepts the invitation and signs
// in, and returns the session token and the user id.
func (n *vigilNode) newUser(account, email, role string) (token, id string) {
	t, ctx := n.t, context.Background()
	var cr struct {
		User       struct{ ID string }
		Invitation struct{ Token string }
	}
	must(t, n.api.do(ctx, "POST", "/v1/accounts/"+account+"/users", map[string]any{"email": email, "role": role}, &cr))
	anon := &apiClient{base: n.base}
	must(t, anon.do(ctx, "POST", "/v1/invitations/"+cr.Invitation.Token+"/accept", map[string]any{"password": "a long enough password"}, nil))
	var s struct{ Token string }
	must(t, anon.do(ctx, "POST", "/v1/sessions", map[string]any{"email": email, "password": "a long enough password"}, &s))
	return s.Token, cr.User.ID
}

// statusCode GETs url with token (none when empty) and returns the status
// and the JSON error code, if any.
func statusCode(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	must(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Code string }
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Code
}
