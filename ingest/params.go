package ingest

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// SegmentPattern is the ServeMux pattern the handler serves. The handler
// parses the request's escaped path itself, so it must be mounted without
// path stripping.
const SegmentPattern = "PUT /v1/streams/{stream}/segments/{start}"

// errNoRoute says the path is not a segment path at all (404, not 400).
var errNoRoute = errors.New("no such route")

// parseSegmentPath splits /v1/streams/{stream}/segments/{start} from the
// escaped path, so that an encoded slash (%2F) or dot-segments inside the
// stream id are seen and refused rather than routed.
func parseSegmentPath(r *http.Request) (stream string, start int64, err error) {
	const prefix = "/v1/streams/"
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, prefix) {
		return "", 0, errNoRoute
	}
	rest := p[len(prefix):]
	i := strings.LastIndex(rest, "/segments/")
	if i < 0 {
		return "", 0, errNoRoute
	}
	rawStream, rawStart := rest[:i], rest[i+len("/segments/"):]
	stream, uerr := url.PathUnescape(rawStream)
	if uerr != nil || !storage.ValidID(stream) {
		return "", 0, fmt.Errorf("invalid stream id %q: ids are [a-zA-Z0-9_-]{1,64}", rawStream)
	}
	startStr, uerr := url.PathUnescape(rawStart)
	if uerr != nil {
		return "", 0, fmt.Errorf("invalid start %q", rawStart)
	}
	start, err = httpx.ParseTime(startStr)
	if err != nil {
		return "", 0, fmt.Errorf("invalid start: %w", err)
	}
	return stream, start, nil
}

// param returns the query parameter name, or else the header.
func param(r *http.Request, query, header string) string {
	if v := r.URL.Query().Get(query); v != "" {
		return v
	}
	return r.Header.Get(header)
}

// parsePositive parses an optional positive integer no larger than max.
func parsePositive(s string, max int64) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if !httpx.Digits(s) {
		return 0, fmt.Errorf("%q is not a positive integer", s)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 || v > max {
		return 0, fmt.Errorf("%q out of range 1..%d", s, max)
	}
	return v, nil
}

// parseSHA256 validates an optional hex SHA-256 and returns it lower case.
func parseSHA256(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 64 {
		return "", fmt.Errorf("X-Content-SHA256 must be 64 hex digits")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("X-Content-SHA256 must be 64 hex digits")
		}
	}
	return s, nil
}
