package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
)

type fakeBridges map[string]string // token hash → bridge id

func (f fakeBridges) BridgeByTokenHash(_ context.Context, hash string) (string, error) {
	id, ok := f[hash]
	if !ok {
		return "", ErrUnknownToken
	}
	return id, nil
}

func TestNewTokenIsURLSafeAndUnique(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
	seen := map[string]bool{}
	for range 100 {
		tok := NewToken()
		if !re.MatchString(tok) {
			t.Fatalf("token %q is not 43 URL-safe characters", tok)
		}
		if seen[tok] {
			t.Fatalf("token %q repeated", tok)
		}
		seen[tok] = true
	}
}

func TestMiddleware(t *testing.T) {
	bridgeTok := NewToken()
	a := New("admin-secret", fakeBridges{HashToken(bridgeTok): "br1"})
	var got Principal
	h := a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = FromContext(r.Context())
	}), func(r *http.Request) bool { return r.URL.Path == "/public" })

	cases := []struct {
		name, path, header string
		status             int
		want               Principal
	}{
		{"operator", "/x", "Bearer admin-secret", 200, Principal{Kind: Operator}},
		{"operator lower-case scheme", "/x", "bearer admin-secret", 200, Principal{Kind: Operator}},
		{"bridge", "/x", "Bearer " + bridgeTok, 200, Principal{Kind: Bridge, ID: "br1"}},
		{"no token", "/x", "", 401, Principal{}},
		{"wrong token", "/x", "Bearer nope", 401, Principal{}},
		{"basic scheme", "/x", "Basic admin-secret", 401, Principal{}},
		{"admin token prefix", "/x", "Bearer admin-secre", 401, Principal{}},
		{"public without token", "/public", "", 200, Principal{}},
		{"public with a bad token", "/public", "Bearer nope", 401, Principal{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got = Principal{Kind: -1}
			req := httptest.NewRequest("GET", c.path, nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d (%s)", rec.Code, c.status, rec.Body)
			}
			if c.status == 200 && got != c.want {
				t.Fatalf("principal %+v, want %+v", got, c.want)
			}
		})
	}
}

type downBridges struct{}

func (downBridges) BridgeByTokenHash(context.Context, string) (string, error) {
	return "", errors.New("registry down")
}

func TestMiddlewareLookupFailureIs503(t *testing.T) {
	a := New("admin", downBridges{})
	h := a.Middleware(http.NotFoundHandler(), nil)
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("Authorization", "Bearer something")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
}

func TestRequireOperator(t *testing.T) {
	h := RequireOperator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for _, c := range []struct {
		p    Principal
		want int
	}{{Principal{Kind: Operator}, 204}, {Principal{Kind: Bridge, ID: "b"}, 403}, {Principal{}, 403}} {
		req := httptest.NewRequest("GET", "/", nil).WithContext(WithPrincipal(context.Background(), c.p))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("%+v: status %d, want %d", c.p, rec.Code, c.want)
		}
	}
}

func TestSafePath(t *testing.T) {
	if got := SafePath("/v1/invitations/c2VjcmV0LXRva2VuLXZhbHVl/accept"); got != "/v1/invitations/{token}/accept" {
		t.Fatalf("invitation path logged as %q", got)
	}
	if got := SafePath("/v1/streams/s/segments/1"); got != "/v1/streams/s/segments/1" {
		t.Fatalf("path changed to %q", got)
	}
}
