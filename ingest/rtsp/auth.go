package rtsp

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// nonceTTL bounds how long a Digest nonce is accepted; a publisher then gets
// a fresh challenge with stale=true and retries without asking its user.
const nonceTTL = 5 * time.Minute

// nonces makes stateless Digest nonces: expiry time + HMAC over it under a
// key that lives as long as the server, so no per-nonce state is kept.
type nonces struct{ key []byte }

func (n nonces) make(now time.Time) string {
	var b [8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.Add(nonceTTL).Unix()))
	m := hmac.New(sha256.New, n.key)
	m.Write(b[:8])
	copy(b[8:], m.Sum(nil))
	return hex.EncodeToString(b[:])
}

// check reports whether nonce is one of ours (valid) and whether it has expired (stale).
func (n nonces) check(nonce string, now time.Time) (valid, stale bool) {
	b, err := hex.DecodeString(nonce)
	if err != nil || len(b) != 24 {
		return false, false
	}
	m := hmac.New(sha256.New, n.key)
	m.Write(b[:8])
	if !hmac.Equal(m.Sum(nil)[:16], b[8:]) {
		return false, false
	}
	exp := time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0)
	return true, now.After(exp)
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
