package playback

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// Signed segment URLs. A playlist is fetched with a bearer token, but the
// player that reads it (Safari, a <video> element, ffmpeg) fetches the
// segments it lists without that header. So the playlist's segment URLs
// carry ?exp=UNIX&by=SIGNER&sig=HMAC-SHA256(key, "v2", path, exp, signer):
// each signature opens exactly one segment, init or media path of one
// stream, only until exp, and only for the principal who fetched the
// playlist. SIGNER is "operator" or
// "user.<user id>.<account>.<role>.<token id>". The handler checks the
// signer again when the URL is used: its token must still resolve to the
// same principal, and that principal must be in scope and not kept out by
// privacy mode at that moment. URLs of the first format (no signer) are
// refused with code signed_url_outdated.

// Query parameters of a signed URL.
const (
	paramExp = "exp"
	paramBy  = "by"
	paramSig = "sig"
)

// Signature errors; all answer 403.
var (
	errSigExpired  = errors.New("signed URL expired")
	errSigInvalid  = errors.New("invalid URL signature")
	errSigOutdated = errors.New("signed URL of an old format (no signer); fetch the playlist again")
)

// Signers resolves the signer of a signed URL when the URL is used
// (package access provides it): the principal that user's token tokenID
// stands for now, or auth.ErrUnknownToken once the user was removed or the
// token revoked or expired.
type Signers interface {
	SignerPrincipal(ctx context.Context, user, tokenID string) (auth.Principal, error)
}

// DeriveURLKey derives the URL signing key from a cluster-wide secret (the
// operator token), so that every node verifies what any node signed
// without a further setting. Changing the secret invalidates every URL.
func DeriveURLKey(secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("vigil playback URL signing v1"))
	return m.Sum(nil)
}

// signer signs and verifies URL paths.
type signer struct {
	key []byte
}

// sum MACs the signed fields. They cannot run into each other: an escaped
// path has no NUL, exp is digits, and by is [A-Za-z0-9_.-]. The "v2"
// prefix keeps a first-format MAC (path "|" exp) from ever verifying.
func (s signer) sum(path string, exp int64, by string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("v2\x00"))
	m.Write([]byte(path))
	m.Write([]byte{0})
	m.Write([]byte(strconv.FormatInt(exp, 10)))
	m.Write([]byte{0})
	m.Write([]byte(by))
	return m.Sum(nil)
}

const byOperator = "operator"

// encodeSigner is p's "by" value; false when p cannot sign (bridges,
// billing tokens, or fields outside the id alphabet).
func encodeSigner(p auth.Principal) (string, bool) {
	switch p.Kind {
	case auth.Operator:
		return byOperator, true
	case auth.User:
		for _, f := range []string{p.ID, p.Account, p.Role, p.TokenID} {
			if !storage.ValidID(f) {
				return "", false
			}
		}
		return strings.Join([]string{"user", p.ID, p.Account, p.Role, p.TokenID}, "."), true
	}
	return "", false
}

// decodeSigner is encodeSigner's inverse.
func decodeSigner(by string) (auth.Principal, bool) {
	if by == byOperator {
		return auth.Principal{Kind: auth.Operator}, true
	}
	f := strings.Split(by, ".")
	if len(f) != 5 || f[0] != "user" {
		return auth.Principal{}, false
	}
	p := auth.Principal{Kind: auth.User, ID: f[1], Account: f[2], Role: f[3], TokenID: f[4]}
	if e, ok := encodeSigner(p); !ok || e != by {
		return auth.Principal{}, false
	}
	return p, true
}

// query returns the "exp=..&by=..&sig=.." query string that opens path for
// p until exp; false when p cannot sign.
func (s signer) query(path string, p auth.Principal, exp time.Time) (string, bool) {
	by, ok := encodeSigner(p)
	if !ok {
		return "", false
	}
	e := exp.Unix()
	return paramExp + "=" + strconv.FormatInt(e, 10) + "&" + paramBy + "=" + by + "&" +
		paramSig + "=" + base64.RawURLEncoding.EncodeToString(s.sum(path, e, by)), true
}

// verify checks the exp, by and sig query values for the escaped path at
// now and returns the signer the URL names (to be checked again by the
// caller: a valid MAC says who signed, not that they still may watch).
// by is nil when the parameter is absent (a first-format URL).
func (s signer) verify(path, exp string, by *string, sig string, now time.Time) (auth.Principal, error) {
	if by == nil {
		return auth.Principal{}, errSigOutdated
	}
	if len(s.key) == 0 || !httpx.Digits(exp) || len(exp) > 12 {
		return auth.Principal{}, errSigInvalid
	}
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return auth.Principal{}, errSigInvalid
	}
	p, ok := decodeSigner(*by)
	if !ok {
		return auth.Principal{}, errSigInvalid
	}
	// One spelling per signature: the decoder would skip CR and LF.
	if len(sig) != base64.RawURLEncoding.EncodedLen(sha256.Size) {
		return auth.Principal{}, errSigInvalid
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.sum(path, e, *by)) {
		return auth.Principal{}, errSigInvalid
	}
	if now.Unix() >= e {
		return auth.Principal{}, errSigExpired
	}
	return p, nil
}

// verifyRequest is verify over r's path and query.
func (s signer) verifyRequest(r *http.Request, now time.Time) (auth.Principal, error) {
	q := r.URL.Query()
	var by *string
	if q.Has(paramBy) {
		v := q.Get(paramBy)
		by = &v
	}
	return s.verify(r.URL.EscapedPath(), q.Get(paramExp), by, q.Get(paramSig), now)
}

// HasURLSignature reports whether r is a GET or HEAD of a stream's segment
// sub-path or live part carrying signature parameters. It only checks the shape: give it
// to the auth middleware as its allowAnonymous predicate so that such
// requests reach the handler without a bearer token; the handler verifies
// the signature and answers 403 when it does not hold.
func HasURLSignature(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.EscapedPath()
	rest, ok := strings.CutPrefix(p, "/v1/streams/")
	if !ok {
		return false
	}
	_, rest, _ = strings.Cut(rest, "/")
	if !strings.HasPrefix(rest, "segments/") && !strings.HasPrefix(rest, "parts/") {
		return false
	}
	q := r.URL.Query()
	return q.Has(paramExp) && q.Has(paramSig)
}
