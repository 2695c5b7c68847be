package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/ingest/picsize"
	"github.com/vigilcloud/vigil/media"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
	fsstore "github.com/vigilcloud/vigil/storage/fs"
)

const adminToken = "admin-token"

// now is the test clock: uploads are "live" when they start shortly before.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func nowMS(offset time.Duration) string { return strconv.FormatInt(now.Add(offset).UnixMilli(), 10) }

// fakeRegistry is the meter's stream registry for unit tests.
type fakeRegistry struct {
	mu      sync.Mutex
	streams map[string]accounts.Stream
	err     error
}

func (f *fakeRegistry) Stream(ctx context.Context, id string) (accounts.Stream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return accounts.Stream{}, f.err
	}
	s, ok := f.streams[id]
	if !ok {
		return accounts.Stream{}, fmt.Errorf("stream %s: %w", id, meter.ErrNotFound)
	}
	return s, nil
}

func newRegistry() *fakeRegistry {
	deleted := now.Add(-time.Hour)
	return &fakeRegistry{streams: map[string]accounts.Stream{
		"s1":   {ID: "s1", Camera: "cam1", Bridge: "b1", Account: "acct", RetentionDays: 7},
		"s2":   {ID: "s2", Camera: "cam2", Bridge: "b2", Account: "acct", RetentionDays: 30},
		"gone": {ID: "gone", Camera: "cam3", Bridge: "b1", Account: "acct", RetentionDays: 30, DeletedAt: &deleted},
	}}
}

var ref1 = storage.StreamRef{Account: "acct", Camera: "cam1", Stream: "s1"}

type bridgeTokens map[string]string

func (b bridgeTokens) BridgeByTokenHash(ctx context.Context, hash string) (string, error) {
	for tok, id := range b {
		if auth.HashToken(tok) == hash {
			return id, nil
		}
	}
	return "", auth.ErrUnknownToken
}

type env struct {
	srv   *httptest.Server
	h     *Handler
	store storage.Backend
	idx   Index
	reg   *fakeRegistry
	prom  *prometheus.Registry
}

type envOpt func(*Config, *storage.Backend, *Index)

// newEnv serves the handler behind the real auth middleware over the real
// fs backend and the embedded index, unless opts replace them.
func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	fsb, err := fsstore.New(t.TempDir())
	require.NoError(t, err)
	var store storage.Backend = fsb
	var idx Index = embedded.New(fsb, embedded.Options{})
	cfg := Config{Now: func() time.Time { return now }, MaxBodyBytes: 1 << 20}
	for _, o := range opts {
		o(&cfg, &store, &idx)
	}
	return newEnvWith(t, cfg, store, idx)
}

func newEnvWith(t *testing.T, cfg Config, store storage.Backend, idx Index) *env {
	t.Helper()
	e := &env{store: store, idx: idx, reg: newRegistry(), prom: prometheus.NewRegistry()}
	cfg.Registerer = e.prom
	e.h = New(cfg, store, idx, e.reg)
	authn := auth.New(adminToken, bridgeTokens{"b1-token": "b1", "b2-token": "b2"})
	e.srv = httptest.NewServer(authn.Middleware(e.h, nil))
	t.Cleanup(e.srv.Close)
	return e
}

type reply struct {
	status int
	code   string
	header http.Header
	body   map[string]any
}

type put struct {
	path    string // default /v1/streams/s1/segments/{start}
	start   string
	token   string
	ct      string
	body    []byte
	query   string // default duration_ms=2000
	headers map[string]string
}

func (e *env) do(t *testing.T, p put) reply {
	t.Helper()
	if p.start == "" {
		p.start = nowMS(-2 * time.Second)
	}
	if p.path == "" {
		p.path = "/v1/streams/s1/segments/" + p.start
	}
	if p.query == "" {
		p.query = "duration_ms=2000"
	}
	if p.token == "" {
		p.token = "b1-token"
	}
	if p.ct == "" {
		p.ct = "video/mp4"
	}
	req, err := http.NewRequest(http.MethodPut, e.srv.URL+p.path+"?"+p.query, bytes.NewReader(p.body))
	require.NoError(t, err)
	if p.token != "-" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	req.Header.Set("Content-Type", p.ct)
	for k, v := range p.headers {
		req.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	return readReply(t, resp)
}

func readReply(t *testing.T, resp *http.Response) reply {
	t.Helper()
	r := reply{status: resp.StatusCode, header: resp.Header}
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		require.NoError(t, json.Unmarshal(b, &r.body), "body %q", b)
		r.code, _ = r.body["code"].(string)
	}
	return r
}

// segment returns a small well-formed fMP4 media segment, unique per call.
func segment(t testing.TB, size int) []byte {
	t.Helper()
	payload := make([]byte, size)
	_, _ = rand.Read(payload)
	box := func(typ string, body []byte) []byte {
		b := make([]byte, 8, 8+len(body))
		binary.BigEndian.PutUint32(b, uint32(8+len(body)))
		copy(b[4:], typ)
		return append(b, body...)
	}
	return bytes.Join([][]byte{box("styp", []byte("msdh\x00\x00\x00\x00")), box("moof", make([]byte, 24)), box("mdat", payload)}, nil)
}

// headOf is the index head of an fMP4 body, found by scanning for its
// first moof: the hash of what precedes it and that moof's decode time.
func headOf(t *testing.T, body []byte) index.Head {
	t.Helper()
	i := bytes.Index(body, []byte("moof")) - 4
	require.Positive(t, i)
	n := int(binary.BigEndian.Uint32(body[i:]))
	h := picsize.HeadOf(body[:i], body[i+8:i+n])
	require.True(t, h.Known())
	require.NotZero(t, h.Scale, "the fixture's first moof has a decode time")
	return h
}

func testdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../media/testdata/" + name)
	require.NoError(t, err)
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// objects lists every segment object of the store.
func objects(t *testing.T, store storage.Backend) []storage.ObjectInfo {
	t.Helper()
	var out []storage.ObjectInfo
	require.NoError(t, storage.Walk(context.Background(), store, "", func(o storage.ObjectInfo) error {
		out = append(out, o)
		return nil
	}))
	return out
}

type segmentLister interface {
	Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Segment, error)
}

func indexed(t *testing.T, idx Index, ref storage.StreamRef) []index.Segment {
	t.Helper()
	segs, err := idx.(segmentLister).Segments(context.Background(), ref, 0, math.MaxInt64/2)
	require.NoError(t, err)
	return segs
}

func readObject(t *testing.T, store storage.Backend, key string) ([]byte, storage.ObjectInfo) {
	t.Helper()
	rc, info, err := store.Get(context.Background(), key, 0, -1)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return b, info
}

func TestPutStoresIndexesAndIsIdempotent(t *testing.T) {
	var stored []index.Segment
	e := newEnv(t, func(c *Config, _ *storage.Backend, _ *Index) {
		c.OnStored = func(_ context.Context, st accounts.Stream, seg index.Segment) {
			assert.Equal(t, "s1", st.ID)
			stored = append(stored, seg) // requests are sequential here
		}
	})
	body := testdata(t, "sample.mp4")
	start := now.Add(-4 * time.Second).UnixMilli()
	p := put{start: strconv.FormatInt(start, 10), body: body, query: "duration_ms=1000&width=160&height=120"}

	r := e.do(t, p)
	require.Equal(t, http.StatusCreated, r.status, r.body)
	assert.Equal(t, sum(body), r.body["sha256"])

	got, info := readObject(t, e.store, ref1.SegmentKey(start))
	assert.Equal(t, body, got)
	assert.Equal(t, "video/mp4", info.ContentType)
	assert.Equal(t, "1000", info.Metadata[index.MetaDuration])
	assert.Equal(t, "160", info.Metadata[index.MetaWidth])
	assert.Equal(t, "120", info.Metadata[index.MetaHeight])

	segs := indexed(t, e.idx, ref1)
	require.Len(t, segs, 1)
	assert.Equal(t, index.Segment{Start: start, DurationMS: 1000, Size: int64(len(body)), SHA256: sum(body),
		ContentType: "video/mp4", Width: 160, Height: 120, Head: headOf(t, body)}, segs[0])
	assert.Equal(t, headOf(t, body).String(), info.Metadata[index.MetaHead], "a rebuild keeps the head")

	// A retry of the same segment is 200, and changes nothing.
	r = e.do(t, p)
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, false, r.body["created"])

	// Another segment at the same start is a conflict.
	p.body = segment(t, 500)
	r = e.do(t, p)
	require.Equal(t, http.StatusConflict, r.status, r.body)
	assert.Equal(t, "conflict", r.code)

	got, _ = readObject(t, e.store, ref1.SegmentKey(start))
	assert.Equal(t, body, got)
	assert.Len(t, objects(t, e.store), 1)
	assert.Equal(t, segs, stored, "OnStored is called once, for the new segment")
	assert.Len(t, indexed(t, e.idx, ref1), 1)
}

func TestPutTSAndRFC3339AndHeaders(t *testing.T) {
	e := newEnv(t)
	body := testdata(t, "sample.ts")
	start := now.Add(-10 * time.Second)
	r := e.do(t, put{
		start: start.Format(time.RFC3339Nano), body: body, ct: "video/MP2T", query: "x=1",
		headers: map[string]string{"X-Duration-Ms": "1000", "X-Content-SHA256": strings.ToUpper(sum(body))},
	})
	require.Equal(t, http.StatusCreated, r.status, r.body)
	got, info := readObject(t, e.store, ref1.SegmentKey(start.UnixMilli()))
	assert.Equal(t, body, got)
	assert.Equal(t, "video/mp2t", info.ContentType)
	assert.Equal(t, sum(body), info.Metadata[index.MetaSHA256])
}

func TestPutStatusCodes(t *testing.T) {
	e := newEnv(t)
	good := segment(t, 100)
	tests := []struct {
		name   string
		p      put
		status int
		code   string
	}{
		{"no token", put{token: "-", body: good}, 401, "unauthorized"},
		{"unknown token", put{token: "nope", body: good}, 401, "unauthorized"},
		{"other bridge's stream", put{path: "/v1/streams/s2/segments/" + nowMS(-time.Second), body: good}, 403, "forbidden"},
		{"unknown stream", put{path: "/v1/streams/nope/segments/" + nowMS(-time.Second), body: good}, 404, "stream_not_found"},
		{"deleted stream", put{path: "/v1/streams/gone/segments/" + nowMS(-time.Second), body: good}, 404, "stream_not_found"},
		{"not a segment path", put{path: "/v1/other/s1", body: good}, 404, "not_found"},
		{"missing duration", put{query: "width=5", body: good}, 400, "bad_duration"},
		{"zero duration", put{query: "duration_ms=0", body: good}, 400, "bad_duration"},
		{"negative duration", put{query: "duration_ms=-5", body: good}, 400, "bad_duration"},
		{"duration over 10 min", put{query: "duration_ms=600001", body: good}, 400, "bad_duration"},
		{"bad width", put{query: "duration_ms=2000&width=abc", body: good}, 400, "bad_resolution"},
		{"zero height", put{query: "duration_ms=2000&height=0", body: good}, 400, "bad_resolution"},
		{"bad start", put{start: "yesterday", body: good}, 400, "bad_request"},
		{"negative start", put{start: "-5", body: good}, 400, "bad_request"},
		{"start far in the future", put{start: nowMS(48 * time.Hour), body: good}, 400, "bad_time"},
		{"bad sha format", put{body: good, headers: map[string]string{"X-Content-SHA256": "xyz"}}, 400, "bad_sha256"},
		{"sha mismatch", put{body: good, headers: map[string]string{"X-Content-SHA256": sum([]byte("other"))}}, 400, "sha256_mismatch"},
		{"other content type", put{ct: "application/octet-stream", body: good}, 415, "unsupported_media_type"},
		{"webm", put{ct: "video/webm", body: good}, 415, "unsupported_media_type"},
		{"empty body", put{body: []byte{}}, 400, "malformed"},
		{"malformed mp4", put{body: []byte("<html>this is not a video segment</html>")}, 400, "malformed"},
		{"truncated mp4", put{body: good[:len(good)-10]}, 400, "malformed"},
		{"ts sent as mp4", put{body: testdata(t, "sample.ts")}, 400, "malformed"},
		{"malformed ts", put{ct: "video/mp2t", body: bytes.Repeat([]byte{0x47, 1, 2}, 188)}, 400, "malformed"},
		{"mp4 sent as ts", put{ct: "video/mp2t", body: testdata(t, "sample.mp4")}, 400, "malformed"},
		{"over the body limit", put{body: segment(t, 1<<20)}, 413, "too_large"},
		{"older than retention", put{start: nowMS(-8 * 24 * time.Hour), body: good}, 410, "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, tt.p)
			assert.Equal(t, tt.status, r.status, r.body)
			assert.Equal(t, tt.code, r.code, r.body)
		})
	}
	// None of them stored or indexed anything.
	assert.Empty(t, objects(t, e.store))
	assert.Empty(t, indexed(t, e.idx, ref1))

	// The operator may write any stream; within retention is fine.
	r := e.do(t, put{token: adminToken, path: "/v1/streams/s2/segments/" + nowMS(-29*24*time.Hour), body: good})
	assert.Equal(t, http.StatusCreated, r.status, r.body)
}

// rawRequest sends req verbatim on a fresh connection and returns the reply.
func rawRequest(t *testing.T, addr, req string) reply {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, req)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	return readReply(t, resp)
}

func TestPutRejectsBadIDs(t *testing.T) {
	e := newEnv(t)
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	body := string(segment(t, 10))
	start := nowMS(-time.Second)
	for _, stream := range []string{"..", "s1/..", "a/b", "a%2Fb", "a%2fb", "%2E%2E", "s1%00", strings.Repeat("a", 65), "s%20"} {
		t.Run(stream, func(t *testing.T) {
			req := fmt.Sprintf("PUT /v1/streams/%s/segments/%s?duration_ms=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
				"Content-Type: video/mp4\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", stream, start, adminToken, len(body), body)
			r := rawRequest(t, addr, req)
			assert.Equal(t, http.StatusBadRequest, r.status, r.body)
		})
	}
	assert.Empty(t, objects(t, e.store))
}

func TestPutWithoutContentLengthIs411(t *testing.T) {
	e := newEnv(t)
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	body := segment(t, 10)
	req := fmt.Sprintf("PUT /v1/streams/s1/segments/%s?duration_ms=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer b1-token\r\n"+
		"Content-Type: video/mp4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", nowMS(-time.Second), len(body), body)
	r := rawRequest(t, addr, req)
	assert.Equal(t, http.StatusLengthRequired, r.status, r.body)
	assert.Equal(t, "length_required", r.code)
	assert.Empty(t, objects(t, e.store))
}

// counterValue reads a counter or gauge from the registry.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

// waitFor polls cond; it is how tests wait for a server-side event without
// asserting on time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientDisconnectStoresNothing(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *storage.Backend, _ *Index) { c.MaxBodyBytes = 4 << 20 })
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	full := segment(t, 1<<20)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, err = fmt.Fprintf(c, "PUT /v1/streams/s1/segments/%s?duration_ms=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer b1-token\r\n"+
		"Content-Type: video/mp4\r\nContent-Length: %d\r\n\r\n", nowMS(-time.Second), len(full))
	require.NoError(t, err)
	_, err = c.Write(full[:len(full)/2])
	require.NoError(t, err)
	// Wait until the handler has admitted the upload and read some of it.
	waitFor(t, "body bytes", func() bool { return metricValue(t, e.prom, "vigil_ingest_bytes_total", nil) > 0 })
	require.NoError(t, c.Close())
	waitFor(t, "the request to finish", func() bool {
		return metricValue(t, e.prom, "vigil_ingest_requests_total", map[string]string{"route": routePutSegment}) == 1
	})
	assert.Empty(t, objects(t, e.store))
	assert.Empty(t, indexed(t, e.idx, ref1))
}

func TestConcurrentPutsStoreExactlyOne(t *testing.T) {
	e := newEnv(t)
	body := segment(t, 64<<10)
	start := nowMS(-3 * time.Second)
	const n = 50
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/v1/streams/s1/segments/"+start+"?duration_ms=2000", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer b1-token")
			req.Header.Set("Content-Type", "video/mp4")
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				codes[i] = -1
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	created := 0
	for _, c := range codes {
		require.Contains(t, []int{201, 200}, c)
		if c == 201 {
			created++
		}
	}
	assert.Equal(t, 1, created)
	objs := objects(t, e.store)
	require.Len(t, objs, 1)
	got, _ := readObject(t, e.store, objs[0].Key)
	assert.Equal(t, body, got)
	segs := indexed(t, e.idx, ref1)
	require.Len(t, segs, 1)
	assert.Equal(t, int64(len(body)), segs[0].Size)
}

// failingStore fails Puts while fail is set, as an unreachable store does.
type failingStore struct {
	storage.Backend
	fail atomic.Bool
}

func (f *failingStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if f.fail.Load() {
		return storage.ObjectInfo{}, fmt.Errorf("test: put %s: %w", key, storage.ErrUnavailable)
	}
	return f.Backend.Put(ctx, key, r, size, opts)
}

// failingIndex fails Adds while fail is set.
type failingIndex struct {
	Index
	fail atomic.Bool
}

func (f *failingIndex) Add(ctx context.Context, ref storage.StreamRef, seg index.Segment) (index.Segment, bool, error) {
	if f.fail.Load() {
		return index.Segment{}, false, fmt.Errorf("test: %w", index.ErrUnavailable)
	}
	return f.Index.Add(ctx, ref, seg)
}

func (f *failingIndex) Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Segment, error) {
	return f.Index.(segmentLister).Segments(ctx, ref, from, to)
}

func TestStorageUnavailableIs503(t *testing.T) {
	var fstore *failingStore
	e := newEnv(t, func(_ *Config, s *storage.Backend, _ *Index) {
		fstore = &failingStore{Backend: *s}
		fstore.fail.Store(true)
		*s = fstore
	})
	body := segment(t, 100)
	r := e.do(t, put{body: body})
	assert.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	assert.Equal(t, "storage_unavailable", r.code)
	assert.NotEmpty(t, r.header.Get("Retry-After"))
	assert.Empty(t, objects(t, e.store))

	fstore.fail.Store(false)
	r = e.do(t, put{body: body})
	assert.Equal(t, http.StatusCreated, r.status, r.body)
}

func TestRegistryUnavailableIs503(t *testing.T) {
	e := newEnv(t)
	e.reg.err = fmt.Errorf("raft: no leader")
	r := e.do(t, put{body: segment(t, 10)})
	assert.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	assert.Equal(t, "meter_unavailable", r.code)
	assert.NotEmpty(t, r.header.Get("Retry-After"))
}

// Stored but not indexed is a 503; the retry finds the object and indexes it.
func TestIndexUnavailableThenRetryIndexes(t *testing.T) {
	var fidx *failingIndex
	var counted []index.Segment
	e := newEnv(t, func(c *Config, _ *storage.Backend, i *Index) {
		c.OnStored = func(_ context.Context, _ accounts.Stream, seg index.Segment) {
			counted = append(counted, seg) // requests are sequential here
		}
		fidx = &failingIndex{Index: *i}
		fidx.fail.Store(true)
		*i = fidx
	})
	body := segment(t, 100)
	start := nowMS(-time.Second)
	r := e.do(t, put{start: start, body: body})
	assert.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	assert.Equal(t, "index_unavailable", r.code)
	assert.NotEmpty(t, r.header.Get("Retry-After"))
	assert.Len(t, objects(t, e.store), 1) // durable, not yet visible

	fidx.fail.Store(false)
	r = e.do(t, put{start: start, body: body})
	assert.Equal(t, http.StatusOK, r.status, r.body)
	segs := indexed(t, e.idx, ref1)
	require.Len(t, segs, 1)
	assert.Equal(t, sum(body), segs[0].SHA256)
	assert.Equal(t, int64(2000), segs[0].DurationMS)
	// The failed upload never counted its usage; the retry that indexed
	// the object counts it once.
	require.Len(t, counted, 1)
	assert.Equal(t, segs[0].SHA256, counted[0].SHA256)

	// And a different body at that start is still a conflict.
	r = e.do(t, put{start: start, body: segment(t, 100)})
	assert.Equal(t, http.StatusConflict, r.status, r.body)
	r = e.do(t, put{start: start, body: body})
	assert.Equal(t, http.StatusOK, r.status, r.body)
	assert.Len(t, counted, 1, "a later retry counts nothing")
}

// blockingStore holds every Put of a segment whose start is in block until
// release is closed.
type blockingStore struct {
	storage.Backend
	block   map[string]bool
	release chan struct{}
}

func (b *blockingStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if b.block[key] {
		select {
		case <-b.release:
		case <-ctx.Done():
			return storage.ObjectInfo{}, ctx.Err()
		}
	}
	return b.Backend.Put(ctx, key, r, size, opts)
}

func TestBacklogIsShedWhileLiveIsAdmitted(t *testing.T) {
	slowStart := now.Add(-time.Hour).UnixMilli() // backlog by age
	blocked := &blockingStore{block: map[string]bool{ref1.SegmentKey(slowStart): true}, release: make(chan struct{})}
	e := newEnv(t, func(c *Config, s *storage.Backend, _ *Index) {
		c.BacklogConcurrency = 1
		c.BacklogQueue = 1
		c.BacklogWait = time.Minute // only a full queue sheds in this test
		c.BridgeShare = 1           // one bridge may take the whole pool here
		blocked.Backend = *s
		*s = blocked
	})
	backlog := map[string]string{"class": classBacklog}

	// A holds the only backlog slot.
	resA := make(chan reply, 1)
	go func() { resA <- e.do(t, put{start: strconv.FormatInt(slowStart, 10), body: segment(t, 100)}) }()
	waitFor(t, "A in flight", func() bool { return metricValue(t, e.prom, "vigil_ingest_inflight", backlog) == 1 })

	// B waits in the only queue place.
	resB := make(chan reply, 1)
	go func() {
		resB <- e.do(t, put{start: nowMS(-50 * time.Minute), body: segment(t, 100)})
	}()
	waitFor(t, "B queued", func() bool { return metricValue(t, e.prom, "vigil_ingest_queue_depth", backlog) == 1 })

	// C is shed: marked backlog by the header although its start is recent.
	r := e.do(t, put{start: nowMS(-time.Second), body: segment(t, 100), headers: map[string]string{"X-Vigil-Backlog": "1"}})
	assert.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	assert.Equal(t, "overloaded", r.code)
	assert.NotEmpty(t, r.header.Get("Retry-After"))
	assert.Equal(t, 1.0, metricValue(t, e.prom, "vigil_ingest_shed_total", backlog))

	// Live is admitted meanwhile.
	r = e.do(t, put{start: nowMS(-2 * time.Second), body: segment(t, 100)})
	assert.Equal(t, http.StatusCreated, r.status, r.body)

	close(blocked.release)
	assert.Equal(t, http.StatusCreated, (<-resA).status)
	assert.Equal(t, http.StatusCreated, (<-resB).status)
	assert.Len(t, objects(t, e.store), 3)
	assert.Len(t, indexed(t, e.idx, ref1), 3)
}

func TestBacklogWaitTimeoutSheds(t *testing.T) {
	slowStart := now.Add(-time.Hour).UnixMilli()
	blocked := &blockingStore{block: map[string]bool{ref1.SegmentKey(slowStart): true}, release: make(chan struct{})}
	e := newEnv(t, func(c *Config, s *storage.Backend, _ *Index) {
		c.BacklogConcurrency = 1
		c.BacklogWait = time.Millisecond
		c.BridgeShare = 1
		blocked.Backend = *s
		*s = blocked
	})
	resA := make(chan reply, 1)
	go func() { resA <- e.do(t, put{start: strconv.FormatInt(slowStart, 10), body: segment(t, 100)}) }()
	waitFor(t, "A in flight", func() bool {
		return metricValue(t, e.prom, "vigil_ingest_inflight", map[string]string{"class": classBacklog}) == 1
	})
	r := e.do(t, put{start: nowMS(-30 * time.Minute), body: segment(t, 100)})
	assert.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	assert.Equal(t, "overloaded", r.code)
	close(blocked.release)
	assert.Equal(t, http.StatusCreated, (<-resA).status)
}

func TestMetricsCountRequests(t *testing.T) {
	e := newEnv(t)
	body := segment(t, 100)
	e.do(t, put{body: body})
	e.do(t, put{ct: "text/plain", body: body})
	assert.Equal(t, 1.0, metricValue(t, e.prom, "vigil_ingest_requests_total", map[string]string{"code": "201"}))
	assert.Equal(t, 1.0, metricValue(t, e.prom, "vigil_ingest_requests_total", map[string]string{"code": "415"}))
	assert.Equal(t, float64(len(body)), metricValue(t, e.prom, "vigil_ingest_bytes_total", nil))
}

// TestStoreSelfRecorded: a body the recorder wrote itself is stored from
// the bare file with the SHA-256 it gives, unvalidated; a retry of it is a
// duplicate, other content at its start a conflict; without a SHA-256 it
// is refused. The HTTP path keeps validating (TestPutStatusCodes).
func TestStoreSelfRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	st := e.reg.streams["s1"]
	body := []byte("not even fMP4: the option skips validation")
	path := filepath.Join(t.TempDir(), "seg.mp4")
	require.NoError(t, os.WriteFile(path, body, 0o644))
	store := func(start int64, b []byte, sha string) (index.Segment, bool, error) {
		require.NoError(t, os.WriteFile(path, b, 0o644))
		f, err := os.Open(path)
		require.NoError(t, err)
		defer f.Close()
		seg := index.Segment{Start: start, DurationMS: 2000, Size: int64(len(b)), ContentType: media.ContentTypeMP4, SHA256: sha}
		return e.h.Store(ctx, st, seg, f, SelfRecorded())
	}
	start := now.Add(-time.Minute).UnixMilli()
	seg, created, err := store(start, body, sum(body))
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, sum(body), seg.SHA256)
	got, _ := readObject(t, e.store, ref1.SegmentKey(start))
	require.Equal(t, body, got)
	segs := indexed(t, e.idx, ref1)
	require.Len(t, segs, 1)
	require.Equal(t, sum(body), segs[0].SHA256)

	_, created, err = store(start, body, sum(body))
	require.NoError(t, err)
	require.False(t, created, "a retry is a duplicate")
	other := []byte("other content")
	_, _, err = store(start, other, sum(other))
	require.ErrorIs(t, err, ErrConflict)

	var be *BodyError
	_, _, err = store(start+10000, body, "")
	require.ErrorAs(t, err, &be)
	require.Zero(t, segs[0].Head, "not fMP4: no head")

	// A recorded fMP4 gets its head from the spool file, read in place.
	mp4 := testdata(t, "sample.mp4")
	seg, created, err = store(start+20000, mp4, sum(mp4))
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, headOf(t, mp4), seg.Head)
	got, _ = readObject(t, e.store, ref1.SegmentKey(start+20000))
	require.Equal(t, mp4, got, "reading the head leaves the body whole")
	segs = indexed(t, e.idx, ref1)
	require.Len(t, segs, 2)
	require.Equal(t, headOf(t, mp4), segs[1].Head)

	// The recorder's own body: a spool file whose body follows headroom.
	spool := filepath.Join(t.TempDir(), "spool")
	require.NoError(t, os.WriteFile(spool, append(make([]byte, storage.SpoolHeadroom), mp4...), 0o644))
	f, err := os.OpenFile(spool, os.O_RDWR, 0) // a file store writes its header into the headroom
	require.NoError(t, err)
	defer f.Close()
	spooled := index.Segment{Start: start + 40000, DurationMS: 2000, Size: int64(len(mp4)), ContentType: media.ContentTypeMP4, SHA256: sum(mp4)}
	seg, created, err = e.h.Store(ctx, st, spooled, storage.NewSpooled(f, int64(len(mp4))), SelfRecorded())
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, headOf(t, mp4), seg.Head)
	got, _ = readObject(t, e.store, ref1.SegmentKey(spooled.Start))
	require.Equal(t, mp4, got)
}

// usageLog records UsageRecorder calls.
type usageLog struct {
	mu    sync.Mutex
	n     int
	calls []string
}

func (u *usageLog) Begin(ctx context.Context, stream, key string, size int64) (string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.n++
	id := "p" + strconv.Itoa(u.n)
	u.calls = append(u.calls, "begin "+id)
	return id, nil
}

func (u *usageLog) Created(putID, stream string, size int64, w, h int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, fmt.Sprintf("created %s %s %d", putID, stream, size))
}

func (u *usageLog) NotCreated(putID string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, "not-created "+putID)
}

func (u *usageLog) Unsure(putID string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, "unsure "+putID)
}

// TestUsageCountedByTheCreatingPut: usage is counted by the Put that
// created the object (its put id in the object's metadata), even when
// indexing fails; the retry that indexes it counts nothing, nor does a
// conflict.
func TestUsageCountedByTheCreatingPut(t *testing.T) {
	var fidx *failingIndex
	u := &usageLog{}
	e := newEnv(t, func(c *Config, _ *storage.Backend, i *Index) {
		c.Usage = u
		fidx = &failingIndex{Index: *i}
		fidx.fail.Store(true)
		*i = fidx
	})
	body := segment(t, 100)
	start := now.Add(-time.Second).UnixMilli()
	r := e.do(t, put{start: strconv.FormatInt(start, 10), body: body})
	assert.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	_, info := readObject(t, e.store, ref1.SegmentKey(start))
	assert.Equal(t, "p1", info.Metadata[meter.PutIDMetadata])

	fidx.fail.Store(false)
	r = e.do(t, put{start: strconv.FormatInt(start, 10), body: body})
	assert.Equal(t, http.StatusOK, r.status, r.body)
	r = e.do(t, put{start: strconv.FormatInt(start, 10), body: segment(t, 100)})
	assert.Equal(t, http.StatusConflict, r.status, r.body)
	// The retry's Put found the object there: it created nothing.
	assert.Equal(t, []string{"begin p1", fmt.Sprintf("created p1 s1 %d", len(body)), "begin p2", "not-created p2"}, u.calls)
}
