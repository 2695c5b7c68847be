package playback

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/internal/httpx"
)

// Signed segment URLs. A playlist is fetched with a bearer token, but the
// player that reads it (Safari, a <video> element, ffmpeg) fetches the
// segments it lists without that header. So the playlist's segment URLs
// carry ?exp=UNIX&sig=HMAC-SHA256(key, path "|" exp): each signature opens
// exactly one segment, init or media path of one stream, and only until exp.

// Query parameters of a signed URL.
const (
	paramExp = "exp"
	paramSig = "sig"
)

// Signature errors; both answer 403.
var (
	errSigExpired = errors.New("signed URL expired")
	errSigInvalid = errors.New("invalid URL signature")
)

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

func (s signer) sum(path string, exp int64) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(path))
	m.Write([]byte{'|'})
	m.Write([]byte(strconv.FormatInt(exp, 10)))
	return m.Sum(nil)
}

// query returns the "exp=..&sig=.." query string that opens path until exp.
func (s signer) query(path string, exp time.Time) string {
	e := exp.Unix()
	return paramExp + "=" + strconv.FormatInt(e, 10) + "&" + paramSig + "=" + base64.RawURLEncoding.EncodeToString(s.sum(path, e))
}

// verify checks the exp and sig query values for the escaped path at now.
func (s signer) verify(path, exp, sig string, now time.Time) error {
	if len(s.key) == 0 || !httpx.Digits(exp) || len(exp) > 12 {
		return errSigInvalid
	}
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return errSigInvalid
	}
	// One spelling per signature: the decoder would skip CR and LF.
	if len(sig) != base64.RawURLEncoding.EncodedLen(sha256.Size) {
		return errSigInvalid
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.sum(path, e)) {
		return errSigInvalid
	}
	if now.Unix() >= e {
		return errSigExpired
	}
	return nil
}

// HasURLSignature reports whether r is a GET or HEAD of a stream's segment
// sub-path carrying signature parameters. It only checks the shape: give it
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
	if !strings.HasPrefix(rest, "segments/") {
		return false
	}
	q := r.URL.Query()
	return q.Has(paramExp) && q.Has(paramSig)
}
