package playback

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
	fsstore "github.com/vigilcloud/vigil/storage/fs"
)

const adminToken = "admin-token"

type fakeRegistry struct {
	mu       sync.Mutex
	streams  map[string]accounts.Stream
	accounts map[string]accounts.Account // absent ones exist, with no settings
}

func (f *fakeRegistry) Account(ctx context.Context, id string) (accounts.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.accounts[id]; ok {
		return a, nil
	}
	return accounts.Account{ID: id}, nil
}

// Allowed is the scope rule without the account tree: the operator, and a
// user in its own account. The real rule is tested with a real replica.
func (f *fakeRegistry) Allowed(p auth.Principal, account string, need accounts.Need) error {
	if p.Kind == auth.Operator || p.Kind == auth.User && p.Account == account {
		return nil
	}
	return accounts.ErrForbidden
}

func (f *fakeRegistry) Stream(ctx context.Context, id string) (accounts.Stream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.streams[id]
	if !ok {
		return accounts.Stream{}, fmt.Errorf("stream %s: %w", id, meter.ErrNotFound)
	}
	return s, nil
}

type bridgeTokens map[string]string

func (b bridgeTokens) BridgeByTokenHash(ctx context.Context, hash string) (string, error) {
	for tok, id := range b {
		if auth.HashToken(tok) == hash {
			return id, nil
		}
	}
	return "", auth.ErrUnknownToken
}

var (
	ref  = storage.StreamRef{Account: "acct", Camera: "cam1", Stream: "s1"}
	base = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	gone = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
)

type env struct {
	srv   *httptest.Server
	store storage.Backend
	idx   *embedded.Index
	// stored segment bodies by start
	bodies map[int64][]byte
}

func newEnv(t *testing.T, wrap func(storage.Backend) storage.Backend) *env {
	t.Helper()
	fsb, err := fsstore.New(t.TempDir())
	require.NoError(t, err)
	idx := embedded.New(fsb, embedded.Options{})
	var store storage.Backend = fsb
	if wrap != nil {
		store = wrap(fsb)
	}
	reg := &fakeRegistry{streams: map[string]accounts.Stream{
		"s1":   {ID: "s1", Camera: "cam1", Bridge: "b1", Account: "acct", RetentionDays: 30},
		"gone": {ID: "gone", Camera: "cam2", Bridge: "b1", Account: "acct", RetentionDays: 30, DeletedAt: &gone},
	}}
	h := New(store, idx, reg, nil)
	authn := auth.New(adminToken, bridgeTokens{"b1-token": "b1"})
	e := &env{srv: httptest.NewServer(authn.Middleware(h, nil)), store: fsb, idx: idx, bodies: map[int64][]byte{}}
	t.Cleanup(e.srv.Close)
	return e
}

// add stores and indexes a segment the way ingest does.
func (e *env) add(t *testing.T, start, durMS int64, size int) []byte {
	t.Helper()
	body := make([]byte, size)
	_, _ = rand.Read(body)
	s := sha256.Sum256(body)
	seg := index.Segment{Start: start, DurationMS: durMS, Size: int64(size), SHA256: hex.EncodeToString(s[:]), ContentType: "video/mp4"}
	ctx := context.Background()
	_, err := e.idx.Lookup(ctx, ref, start) // load the stream before the object exists
	require.Error(t, err)
	_, err = e.store.Put(ctx, ref.SegmentKey(start), bytes.NewReader(body), int64(size),
		storage.PutOptions{IfAbsent: true, ContentType: "video/mp4", Metadata: index.SegmentMetadata(seg)})
	require.NoError(t, err)
	_, added, err := e.idx.Add(ctx, ref, seg)
	require.NoError(t, err)
	require.True(t, added)
	e.bodies[start] = body
	return body
}

func (e *env) get(t *testing.T, path, token string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	return e.request(t, http.MethodGet, path, token, hdr)
}

func (e *env) request(t *testing.T, method, path, token string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

func code(t *testing.T, b []byte) string {
	t.Helper()
	var e struct{ Code string }
	require.NoError(t, json.Unmarshal(b, &e), "%s", b)
	return e.Code
}

func TestRecordings(t *testing.T) {
	e := newEnv(t, nil)
	// Three contiguous 2-s segments, a gap, then one more.
	for i := range 3 {
		e.add(t, base+int64(i)*2000, 2000, 100+i)
	}
	e.add(t, base+60_000, 2000, 50)

	from := time.UnixMilli(base - 1000).UTC().Format(time.RFC3339)
	resp, b := e.get(t, "/v1/streams/s1/recordings?start="+from+"&end="+strconv.FormatInt(base+3_600_000, 10), adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	var got Recordings
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, []spanJSON{{base, base + 6000}, {base + 60_000, base + 62_000}}, got.Spans)
	require.Len(t, got.Segments, 4)
	assert.Equal(t, segmentJSON{Start: base + 2000, DurationMS: 2000, Size: 101,
		URL: "/v1/streams/s1/segments/" + strconv.FormatInt(base+2000, 10)}, got.Segments[1])

	// A window without video has empty lists, not nulls.
	resp, b = e.get(t, "/v1/streams/s1/recordings?start=1000&end=2000", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, `{"spans":[],"segments":[]}`, string(b))
}

func TestRecordingsTimelineAndPages(t *testing.T) {
	e := newEnv(t, nil)
	// Three contiguous 2-s segments, a gap, then two more in the next hour.
	for i := range 3 {
		e.add(t, base+int64(i)*2000, 2000, 100+i)
	}
	e.add(t, base+3_600_000, 2000, 50)
	e.add(t, base+3_602_000, 2000, 51)
	wantSpans := []spanJSON{{base, base + 6000}, {base + 3_600_000, base + 3_604_000}}
	win := fmt.Sprintf("?start=%d&end=%d", base-1000, base+2*3_600_000)

	// The timeline: spans only.
	resp, b := e.get(t, "/v1/streams/s1/recordings"+win+"&spans=only", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	var tl map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &tl))
	assert.NotContains(t, tl, "segments")
	var got Recordings
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, wantSpans, got.Spans)

	// Pages of two: every segment once, in order, spans on every page.
	var starts []int64
	cursor, pages := "", 0
	for {
		path := "/v1/streams/s1/recordings" + win + "&limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		resp, b := e.get(t, path, adminToken, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
		var page Recordings
		require.NoError(t, json.Unmarshal(b, &page))
		assert.Equal(t, wantSpans, page.Spans)
		require.LessOrEqual(t, len(page.Segments), 2)
		for _, s := range page.Segments {
			starts = append(starts, s.Start)
		}
		pages++
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	assert.Equal(t, 3, pages)
	assert.Equal(t, []int64{base, base + 2000, base + 4000, base + 3_600_000, base + 3_602_000}, starts)

	q := "/v1/streams/s1/recordings" + win
	for _, tt := range []struct{ name, query, code string }{
		{"bad spans", "&spans=all", "bad_request"},
		{"spans only with limit", "&spans=only&limit=2", "bad_request"},
		{"zero limit", "&limit=0", "bad_limit"},
		{"negative limit", "&limit=-1", "bad_limit"},
		{"huge limit", "&limit=" + strconv.Itoa(MaxPageSize+1), "bad_limit"},
		{"cursor without limit", "&cursor=" + strconv.FormatInt(base, 10), "bad_cursor"},
		{"cursor outside the window", "&limit=2&cursor=" + strconv.FormatInt(base+3*3_600_000, 10), "bad_cursor"},
		{"garbage cursor", "&limit=2&cursor=x", "bad_cursor"},
	} {
		resp, b := e.get(t, q+tt.query, adminToken, nil)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", tt.name, b)
		assert.Equal(t, tt.code, code(t, b), tt.name)
	}
}

func TestRecordingsErrors(t *testing.T) {
	e := newEnv(t, nil)
	day := int64(24 * 3600 * 1000)
	q := func(s, en int64) string {
		return fmt.Sprintf("?start=%d&end=%d", s, en)
	}
	tests := []struct {
		name, path, token string
		status            int
		code              string
	}{
		{"no token", "/v1/streams/s1/recordings" + q(base, base+1), "", 401, "unauthorized"},
		{"bridge token", "/v1/streams/s1/recordings" + q(base, base+1), "b1-token", 403, "forbidden"},
		{"missing start", "/v1/streams/s1/recordings?end=5", adminToken, 400, "bad_time"},
		{"missing end", "/v1/streams/s1/recordings?start=5", adminToken, 400, "bad_time"},
		{"bad time", "/v1/streams/s1/recordings?start=soon&end=5", adminToken, 400, "bad_time"},
		{"end before start", "/v1/streams/s1/recordings" + q(base, base-1), adminToken, 400, "bad_time"},
		{"empty window", "/v1/streams/s1/recordings" + q(base, base), adminToken, 400, "bad_time"},
		{"window over 31 days", "/v1/streams/s1/recordings" + q(base, base+31*day+1), adminToken, 400, "window_too_large"},
		{"unknown stream", "/v1/streams/nope/recordings" + q(base, base+1), adminToken, 404, "stream_not_found"},
		{"deleted stream", "/v1/streams/gone/recordings" + q(base, base+1), adminToken, 404, "stream_not_found"},
		{"encoded slash", "/v1/streams/s1%2F..%2Fx/recordings" + q(base, base+1), adminToken, 400, "bad_request"},
		{"unknown endpoint", "/v1/streams/s1/nothing", adminToken, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := e.get(t, tt.path, tt.token, nil)
			assert.Equal(t, tt.status, resp.StatusCode, "%s", b)
			assert.Equal(t, tt.code, code(t, b))
		})
	}
	// Exactly 31 days is fine.
	resp, b := e.get(t, "/v1/streams/s1/recordings"+q(base, base+31*day), adminToken, nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
}

func TestSegmentGetAndRanges(t *testing.T) {
	e := newEnv(t, nil)
	body := e.add(t, base, 2000, 1000)
	path := "/v1/streams/s1/segments/" + strconv.FormatInt(base, 10)
	s := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(s[:]) + `"`

	resp, b := e.get(t, path, adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, body, b)
	assert.Equal(t, "video/mp4", resp.Header.Get("Content-Type"))
	assert.Equal(t, "1000", resp.Header.Get("Content-Length"))
	assert.Equal(t, "bytes", resp.Header.Get("Accept-Ranges"))
	assert.Equal(t, etag, resp.Header.Get("ETag"))

	// RFC 3339 start works too.
	resp, b = e.get(t, "/v1/streams/s1/segments/"+time.UnixMilli(base).UTC().Format(time.RFC3339), adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, body, b)

	ranges := []struct {
		rng          string
		status       int
		from, to     int // inclusive byte range expected, for 206
		contentRange string
	}{
		{"bytes=0-0", 206, 0, 0, "bytes 0-0/1000"},
		{"bytes=10-19", 206, 10, 19, "bytes 10-19/1000"},
		{"bytes=990-", 206, 990, 999, "bytes 990-999/1000"},
		{"bytes=-5", 206, 995, 999, "bytes 995-999/1000"},
		{"bytes=-5000", 206, 0, 999, "bytes 0-999/1000"},
		{"bytes=500-99999", 206, 500, 999, "bytes 500-999/1000"},
		{"bytes=1000-", 416, 0, 0, "bytes */1000"},
		{"bytes=5000-6000", 416, 0, 0, "bytes */1000"},
		{"bytes=-0", 416, 0, 0, "bytes */1000"},
		{"bytes=0-1,5-6", 200, 0, 999, ""}, // several ranges: whole body
		{"bytes=9-3", 200, 0, 999, ""},     // malformed: ignored
		{"items=0-1", 200, 0, 999, ""},
	}
	for _, rc := range ranges {
		t.Run(rc.rng, func(t *testing.T) {
			resp, b := e.get(t, path, adminToken, map[string]string{"Range": rc.rng})
			require.Equal(t, rc.status, resp.StatusCode, "%s", b)
			assert.Equal(t, rc.contentRange, resp.Header.Get("Content-Range"))
			if rc.status != 416 {
				assert.Equal(t, body[rc.from:rc.to+1], b)
				assert.Equal(t, strconv.Itoa(rc.to-rc.from+1), resp.Header.Get("Content-Length"))
			}
		})
	}

	// If-Range with our ETag honours the range; with another, the whole body.
	resp, b = e.get(t, path, adminToken, map[string]string{"Range": "bytes=1-2", "If-Range": etag})
	assert.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, body[1:3], b)
	resp, b = e.get(t, path, adminToken, map[string]string{"Range": "bytes=1-2", "If-Range": `"other"`})
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, body, b)

	resp, _ = e.get(t, path, adminToken, map[string]string{"If-None-Match": etag})
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)

	resp, b = e.request(t, http.MethodHead, path, adminToken, nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, int64(1000), resp.ContentLength)
	assert.Empty(t, b)
}

func TestSegmentErrors(t *testing.T) {
	e := newEnv(t, nil)
	e.add(t, base, 2000, 10)
	seg := "/segments/" + strconv.FormatInt(base, 10)
	tests := []struct {
		name, path, token string
		status            int
		code              string
	}{
		{"no token", "/v1/streams/s1" + seg, "", 401, "unauthorized"},
		{"bridge token", "/v1/streams/s1" + seg, "b1-token", 403, "forbidden"},
		{"unknown stream", "/v1/streams/nope" + seg, adminToken, 404, "stream_not_found"},
		{"deleted stream", "/v1/streams/gone" + seg, adminToken, 404, "stream_not_found"},
		{"no segment there", "/v1/streams/s1/segments/" + strconv.FormatInt(base+1, 10), adminToken, 404, "segment_not_found"},
		{"bad start", "/v1/streams/s1/segments/x1", adminToken, 400, "bad_time"},
		{"bad id", "/v1/streams/" + string(bytes.Repeat([]byte("a"), 65)) + seg, adminToken, 400, "bad_request"},
		{"NUL in id", "/v1/streams/s1%00" + seg, adminToken, 400, "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := e.get(t, tt.path, tt.token, nil)
			assert.Equal(t, tt.status, resp.StatusCode, "%s", b)
			assert.Equal(t, tt.code, code(t, b))
		})
	}
}

// unavailableGets fails every Get, as an unreachable store does.
type unavailableGets struct{ storage.Backend }

func (u unavailableGets) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, storage.ObjectInfo, error) {
	return nil, storage.ObjectInfo{}, fmt.Errorf("test: get %s: %w", key, storage.ErrUnavailable)
}

func TestSegmentStorageUnavailable(t *testing.T) {
	e := newEnv(t, func(b storage.Backend) storage.Backend { return unavailableGets{b} })
	e.add(t, base, 2000, 10)
	resp, b := e.get(t, "/v1/streams/s1/segments/"+strconv.FormatInt(base, 10), adminToken, nil)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "storage_unavailable", code(t, b))
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
}

func TestParseRange(t *testing.T) {
	// Pure cases the HTTP test does not reach.
	_, _, ok, sat := parseRange("bytes=0-", 0)
	assert.True(t, ok)
	assert.False(t, sat, "nothing is satisfiable in an empty object")
	_, _, ok, _ = parseRange("bytes= 1-2x", 10)
	assert.False(t, ok)
	o, l, ok, sat := parseRange("bytes=3-3", 10)
	assert.Equal(t, []any{int64(3), int64(1), true, true}, []any{o, l, ok, sat})
}
