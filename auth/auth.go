// Package auth resolves the bearer token of a request into a principal: the
// operator, or a bridge. Tokens are URL-safe so they also fit an
// rtsp://user:token@host/ URL. Only token hashes are ever stored.
package auth

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/vigilcloud/vigil/internal/httpx"
)

// Kind says what a principal is.
type Kind int

// The principal kinds.
const (
	Anonymous Kind = iota
	Operator
	Bridge
	User    // a user of an account, by session or API token
	Billing // the billing system: meter and billing endpoints only
)

// Principal is who made a request.
type Principal struct {
	Kind    Kind
	ID      string // the bridge id for Bridge, the user id for User, the token id for Billing
	Account string // User: the user's account
	Role    string // User: admin or user
	TokenID string // User: the token it came with
	// Delegated: a user that someone outside its account (its reseller)
	// created. Privacy mode treats it as the reseller's: it does not see
	// the account's video nor switch privacy mode (docs/security.md).
	Delegated bool
}

// Actor names p in audit logs.
func (p Principal) Actor() string {
	switch p.Kind {
	case Operator:
		return "operator"
	case Bridge:
		return "bridge:" + p.ID
	case User:
		return "user:" + p.ID
	case Billing:
		return "billing:" + p.ID
	}
	return "anonymous"
}

type ctxKey struct{}

// FromContext returns the principal the middleware put on ctx.
func FromContext(ctx context.Context) Principal {
	p, _ := ctx.Value(ctxKey{}).(Principal)
	return p
}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// ErrUnknownToken is returned by a BridgeLookup for a token no bridge has.
var ErrUnknownToken = errors.New("auth: unknown token")

// BridgeLookup finds the bridge whose token hashes to hash (see HashToken).
type BridgeLookup interface {
	BridgeByTokenHash(ctx context.Context, hash string) (bridgeID string, err error)
}

// NewToken returns a fresh random URL-safe token (256 bits).
func NewToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashToken is the stored form of a token. Tokens carry 256 random bits, so
// a plain SHA-256 is enough and keeps lookups O(1).
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// DigestHA1 is hex MD5(user ":" realm ":" password), the stored secret of
// HTTP/RTSP Digest authentication (RFC 2617). MD5 is what RTSP clients
// such as ffmpeg speak; the tokens it covers are random, 32+ characters.
func DigestHA1(user, realm, password string) string {
	sum := md5.Sum([]byte(user + ":" + realm + ":" + password))
	return hex.EncodeToString(sum[:])
}

// UserLookup finds the user or billing principal whose token hashes to
// hash; ErrUnknownToken when none (or it expired, or was revoked).
type UserLookup interface {
	PrincipalByTokenHash(ctx context.Context, hash string) (Principal, error)
}

// Authenticator resolves bearer tokens.
type Authenticator struct {
	adminHash [32]byte
	bridges   BridgeLookup
	users     UserLookup
	lim       *Limiter
}

// WithUsers makes the authenticator accept user and billing tokens found
// by u. Call it before serving.
func (a *Authenticator) WithUsers(u UserLookup) { a.users = u }

// LimitFailures makes the middleware count failed authentications in l and
// answer 429 to sources that made too many. Call it before serving.
func (a *Authenticator) LimitFailures(l *Limiter) { a.lim = l }

type failureKey struct{}

// ReportFailure tells the middleware's limiter that the request failed an
// authentication the handler made itself (a bad URL signature). reason is
// a short metric label. Without the middleware it does nothing.
func ReportFailure(ctx context.Context, reason string) {
	if f, ok := ctx.Value(failureKey{}).(func(string)); ok {
		f(reason)
	}
}

// New returns an Authenticator that accepts adminToken as the operator and
// bridge tokens found by bridges.
func New(adminToken string, bridges BridgeLookup) *Authenticator {
	return &Authenticator{adminHash: sha256.Sum256([]byte(adminToken)), bridges: bridges}
}

// Resolve returns the principal of token. An unknown token is
// ErrUnknownToken; other errors mean the lookup failed (answer 503).
func (a *Authenticator) Resolve(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, ErrUnknownToken
	}
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], a.adminHash[:]) == 1 {
		return Principal{Kind: Operator}, nil
	}
	hash := hex.EncodeToString(h[:])
	if a.bridges != nil {
		id, err := a.bridges.BridgeByTokenHash(ctx, hash)
		if err == nil {
			return Principal{Kind: Bridge, ID: id}, nil
		}
		if !errors.Is(err, ErrUnknownToken) {
			return Principal{}, err
		}
	}
	if a.users == nil {
		return Principal{}, ErrUnknownToken
	}
	return a.users.PrincipalByTokenHash(ctx, hash)
}

// BearerToken extracts the token of an "Authorization: Bearer" header.
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
		return strings.TrimSpace(h[len(prefix):])
	}
	return ""
}

// Middleware puts the request's principal on its context. Requests without
// a token, or with an unknown one, get 401 unless allowAnonymous says the
// path is public (health checks, metrics) or checks its own credentials (a
// signed URL; the handler reports a bad one with ReportFailure). With a
// Limiter, a source that failed too often gets 429 with Retry-After before
// anything it sent is checked.
func (a *Authenticator) Middleware(next http.Handler, allowAnonymous func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := BearerToken(r)
		anonymous := token == "" && allowAnonymous != nil && allowAnonymous(r)
		if token == "" && !anonymous {
			// No secret tried, nothing guessed: not a failure.
			httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown bearer token")
			return
		}
		src := Source(r.RemoteAddr)
		if retry, ok := a.lim.Check("http", src, ""); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds(retry)))
			httpx.WriteError(w, http.StatusTooManyRequests, "too_many_auth_failures",
				"too many failed authentications from this address; retry later")
			return
		}
		if anonymous {
			ctx := context.WithValue(r.Context(), failureKey{}, func(reason string) {
				a.lim.Fail(r.Context(), "http", reason, src, "", slog.String("path", SafePath(r.URL.Path)))
			})
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		p, err := a.Resolve(r.Context(), token)
		switch {
		case errors.Is(err, ErrUnknownToken):
			a.lim.Fail(r.Context(), "http", "unknown_token", src, "", slog.String("path", SafePath(r.URL.Path)))
			httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown bearer token")
			return
		case err != nil:
			w.Header().Set("Retry-After", "1")
			httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", "token lookup failed: "+err.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// SafePath is a request path fit for a log line: an invitation link's
// path carries its token, which is a secret.
func SafePath(path string) string {
	if strings.HasPrefix(path, "/v1/invitations/") {
		return "/v1/invitations/{token}/accept"
	}
	return path
}

// RequireOperator wraps h so that only the operator reaches it.
func RequireOperator(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if FromContext(r.Context()).Kind != Operator {
			httpx.WriteError(w, http.StatusForbidden, "forbidden", "operator token required")
			return
		}
		h.ServeHTTP(w, r)
	})
}
