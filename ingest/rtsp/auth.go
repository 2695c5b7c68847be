package rtsp

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// defaultNonceTTL bounds how long a Digest nonce is accepted; a publisher
// then gets a fresh challenge with stale=true and retries without asking its user.
const defaultNonceTTL = 5 * time.Minute

// nonces makes stateless Digest nonces: expiry time + HMAC over it and the
// connection's random id, under a key that lives as long as the server. No
// per-nonce state is kept, yet a nonce (and so a captured Authorization
// header) is worth nothing on any other connection.
type nonces struct {
	key []byte
	ttl time.Duration
}

func (n nonces) mac(exp []byte, conn []byte) []byte {
	m := hmac.New(sha256.New, n.key)
	m.Write(exp)
	m.Write(conn)
	return m.Sum(nil)[:16]
}

func (n nonces) make(now time.Time, conn []byte) string {
	var b [8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.Add(n.ttl).Unix()))
	copy(b[8:], n.mac(b[:8], conn))
	return hex.EncodeToString(b[:])
}

// check reports whether nonce is one this server made for conn (valid) and
// whether it has expired (stale).
func (n nonces) check(nonce string, now time.Time, conn []byte) (valid, stale bool) {
	b, err := hex.DecodeString(nonce)
	if err != nil || len(b) != 24 {
		return false, false
	}
	if !hmac.Equal(n.mac(b[:8], conn), b[8:]) {
		return false, false
	}
	exp := time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0)
	return true, now.After(exp)
}

// digestURIMatches reports whether the uri of a Digest answer names the
// request's URL (RFC 7616 3.4.6): the same path, and the same host when
// both are absolute. Clients send either the absolute URL or its path.
func digestURIMatches(uri, reqURL string) bool {
	if uri == reqURL {
		return true
	}
	a, err1 := url.Parse(uri)
	b, err2 := url.Parse(reqURL)
	if err1 != nil || err2 != nil {
		return false
	}
	if a.Host != "" && b.Host != "" && !strings.EqualFold(a.Host, b.Host) {
		return false
	}
	return strings.TrimSuffix(a.Path, "/") == strings.TrimSuffix(b.Path, "/")
}

// credentials is a parsed Authorization header.
type credentials struct {
	Scheme   string // "basic" or "digest"
	User     string
	Password string            // basic
	Params   map[string]string // digest: realm, nonce, uri, response, qop, nc, cnonce, algorithm
}

var errBadAuthHeader = errors.New("malformed Authorization header")

func parseAuthorization(h string) (credentials, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	switch strings.ToLower(scheme) {
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if err != nil {
			return credentials{}, errBadAuthHeader
		}
		u, p, ok := strings.Cut(string(raw), ":")
		if !ok {
			return credentials{}, errBadAuthHeader
		}
		return credentials{Scheme: "basic", User: u, Password: p}, nil
	case "digest":
		params, err := parseAuthParams(rest)
		if err != nil {
			return credentials{}, err
		}
		for _, k := range []string{"username", "nonce", "uri", "response"} {
			if params[k] == "" {
				return credentials{}, fmt.Errorf("%w: digest without %s", errBadAuthHeader, k)
			}
		}
		return credentials{Scheme: "digest", User: params["username"], Params: params}, nil
	}
	return credentials{}, fmt.Errorf("%w: scheme %q", errBadAuthHeader, truncate(scheme, 20))
}

// parseAuthParams parses `k=v, k="v, with comma", ...` (RFC 7235 auth-params).
func parseAuthParams(s string) (map[string]string, error) {
	out := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return out, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, errBadAuthHeader
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, errBadAuthHeader
			}
			val, s = s[1:1+end], s[2+end:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if len(out) >= 32 {
			return nil, errBadAuthHeader
		}
		out[key] = val
	}
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// digestResponse computes the RFC 2617 response (MD5, qop absent or "auth").
func digestResponse(ha1, method string, p map[string]string) string {
	ha2 := md5hex(method + ":" + p["uri"])
	if p["qop"] != "" {
		return md5hex(ha1 + ":" + p["nonce"] + ":" + p["nc"] + ":" + p["cnonce"] + ":" + p["qop"] + ":" + ha2)
	}
	return md5hex(ha1 + ":" + p["nonce"] + ":" + ha2)
}

// digestHA1s returns the HA1s user may answer with (DigestHA1Set).
func (s *Server) digestHA1s(ctx context.Context, user string) ([]string, error) {
	if set, ok := s.h.(DigestHA1Set); ok {
		ha1s, err := set.DigestHA1s(ctx, user, s.cfg.Realm)
		if err == nil && len(ha1s) == 0 {
			err = ErrUnauthorized
		}
		return ha1s, err
	}
	ha1, err := s.h.DigestHA1(ctx, user, s.cfg.Realm)
	return []string{ha1}, err
}

// digestMatches reports whether response answers the challenge for one of
// ha1s; it computes every one, so the time does not tell which matched.
func digestMatches(ha1s []string, response, method string, p map[string]string) bool {
	ok := false
	for _, ha1 := range ha1s {
		ok = constantEqual(response, digestResponse(ha1, method, p)) || ok
	}
	return ok
}

func constantEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// challenges returns the WWW-Authenticate values offered on a 401: Digest
// first (publishers that can do it prefer it), then Basic.
func challenges(realm, nonce string, stale bool) []string {
	d := fmt.Sprintf(`Digest realm="%s", nonce="%s", algorithm=MD5`, realm, nonce)
	if stale {
		d += ", stale=true"
	}
	return []string{d, fmt.Sprintf(`Basic realm="%s"`, realm)}
}

// logOnlyLimiter is the AuthLimiter of a Server configured without one: it
// limits nothing and logs every failure.
type logOnlyLimiter struct{ log *slog.Logger }

func (logOnlyLimiter) Check(string, netip.Addr, string) (time.Duration, bool) { return 0, true }
func (logOnlyLimiter) Succeed(netip.Addr, string)                             {}
func (l logOnlyLimiter) Fail(ctx context.Context, proto, reason string, src netip.Addr, _ string, attrs ...slog.Attr) {
	l.log.LogAttrs(ctx, slog.LevelInfo, "rtsp: authentication failed",
		append([]slog.Attr{slog.String("source", src.String()), slog.String("reason", reason)}, attrs...)...)
}

// redactURL drops the user information (rtsp://user:password@host/...) of
// every URL in s, for logs: a client may put its credentials in the URL it
// requests, and one that swapped them has its token as the user.
func redactURL(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := strings.IndexAny(s, "/?# \t\"")
		if end < 0 {
			end = len(s)
		}
		if at := strings.LastIndexByte(s[:end], '@'); at >= 0 {
			b.WriteString("REDACTED@")
			s = s[at+1:]
		}
	}
}
