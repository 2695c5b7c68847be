package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/vigilcloud/vigil/bench"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/internal/servers"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
	"github.com/vigilcloud/vigil/storage"
)

// These tests run the real vigil binary as a child process against real
// MinIO and redis-server, and use ffmpeg/ffprobe for real media.

var vigilBin string

func TestMain(m *testing.M) {
	os.Exit(vigiltest.Main(m, &vigilBin))
}

const e2eToken = vigiltest.Token

// vigilNode is a vigil serve process for a test (internal/vigiltest).
type vigilNode struct {
	*servers.Process
	node *vigiltest.Node
	t    *testing.T
	base string
	data string
	api  *apiClient
}

func startVigil(t *testing.T, env []string, args ...string) *vigilNode {
	t.Helper()
	vn := vigiltest.Start(t, vigilBin, vigiltest.Options{Env: env, Args: args})
	return &vigilNode{Process: vn.Process, node: vn, t: t, base: vn.Base, data: vn.Data,
		api: &apiClient{base: vn.Base, token: e2eToken}}
}

func tail(s string, lines int) string { return vigiltest.Tail(s, lines) }

func (n *vigilNode) waitReady() { n.t.Helper(); n.node.WaitReady() }

// restart SIGKILLs the node and starts it again on the same data.
func (n *vigilNode) restart() { n.t.Helper(); n.node.Restart() }

// provision creates an account, a bridge and one camera with the streams,
// and returns the bridge token.
func (n *vigilNode) provision(streams ...string) string {
	n.t.Helper()
	return n.node.Provision(streams...)
}

type recordings struct {
	Spans []struct {
		Start int64 `json:"start"`
		End   int64 `json:"end"`
	} `json:"spans"`
	Segments []struct {
		Start      int64  `json:"start"`
		DurationMS int64  `json:"duration_ms"`
		Size       int64  `json:"size"`
		URL        string `json:"url"`
	} `json:"segments"`
}

func (n *vigilNode) recordings(stream string, from, to int64) recordings {
	n.t.Helper()
	var r recordings
	must(n.t, n.api.do(context.Background(), "GET", fmt.Sprintf("/v1/streams/%s/recordings?start=%d&end=%d", stream, from, to), nil, &r))
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// put uploads one segment and returns the status and Retry-After.
func put(t *testing.T, base, token, stream string, start int64, body []byte, ctype string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/streams/%s/segments/%d?duration_ms=2000", base, stream, start), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

func realSegment(t *testing.T, kind string) ([]byte, string) {
	t.Helper()
	testutil.RequireBinary(t, "ffmpeg")
	cache, _ := os.UserCacheDir()
	b, ctype, err := bench.FFmpegSegment(context.Background(), filepath.Join(cache, "vigil", "test-payloads"), kind, 2*time.Second, 320, 240)
	if err != nil {
		t.Fatal(err)
	}
	return b, ctype
}

func ffprobeDuration(t *testing.T, path string) float64 {
	t.Helper()
	testutil.RequireBinary(t, "ffprobe")
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration,start_time", "-of", "default=nw=1", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe rejects %s: %v\n%s", path, err, out)
	}
	// A recorder segment later in an RTSP session starts at its run's
	// decode time, and ffprobe counts its duration from zero: its span is
	// duration minus start_time.
	var d, start float64
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		var x float64
		if _, err := fmt.Sscanf(v, "%g", &x); err != nil {
			t.Fatalf("ffprobe %s %q: %v", k, v, err)
		}
		if k == "duration" {
			d = x
		} else {
			start = x
		}
	}
	return d - start
}

// TestServeEmbeddedDefaults runs vigil on its embedded defaults: real fMP4
// and MPEG-TS segments in, listed, fetched whole and by Range, accepted by
// ffprobe, and still there after a SIGKILL and restart.
func TestServeEmbeddedDefaults(t *testing.T) {
	n := startVigil(t, nil)
	token := n.provision("s1")
	mp4, mp4Type := realSegment(t, bench.PayloadFMP4)
	ts, tsType := realSegment(t, bench.PayloadTS)

	base := time.Now().Add(-time.Minute).Truncate(2 * time.Second).UnixMilli()
	for i := range 6 {
		body, ctype := mp4, mp4Type
		if i == 5 {
			body, ctype = ts, tsType
		}
		start := base + int64(i)*2000
		if i >= 3 {
			start += 10_000 // a gap: two spans
		}
		if st, _ := put(t, n.base, token, "s1", start, body, ctype); st != http.StatusCreated {
			t.Fatalf("segment %d: status %d, want 201", i, st)
		}
	}
	if st, _ := put(t, n.base, token, "s1", base, mp4, mp4Type); st != http.StatusOK {
		t.Fatalf("retry: status %d, want 200", st)
	}
	if st, _ := put(t, n.base, token, "s1", base, ts, tsType); st != http.StatusConflict {
		t.Fatalf("different content at the same start: status %d, want 409", st)
	}

	check := func() {
		rec := n.recordings("s1", base-60_000, base+60_000)
		if len(rec.Segments) != 6 || len(rec.Spans) != 2 {
			t.Fatalf("recordings: %d segments, %d spans; want 6 and 2: %+v", len(rec.Segments), len(rec.Spans), rec)
		}
		if rec.Spans[0].Start != base || rec.Spans[0].End != base+6000 || rec.Spans[1].Start != base+16_000 {
			t.Fatalf("spans %+v", rec.Spans)
		}
		// Fetch one whole and check ffprobe accepts it.
		resp, err := authGet(n.base+rec.Segments[0].URL, e2eToken, "")
		must(t, err)
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, mp4) {
			t.Fatalf("segment bytes differ: got %d bytes, want %d", len(got), len(mp4))
		}
		f := filepath.Join(t.TempDir(), "seg.mp4")
		must(t, os.WriteFile(f, got, 0o644))
		if d := ffprobeDuration(t, f); d < 1.5 || d > 2.5 {
			t.Fatalf("ffprobe duration %v, want about 2s", d)
		}
		// A Range read.
		resp, err = authGet(n.base+rec.Segments[0].URL, e2eToken, "bytes=100-199")
		must(t, err)
		part, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, mp4[100:200]) {
			t.Fatalf("range: status %d, %d bytes", resp.StatusCode, len(part))
		}
	}
	check()
	n.restart()
	check()

	// The metrics an operator's dashboards need are exported.
	if st, _ := put(t, n.base, token, "s1", base+30_000, mp4, mp4Type); st != http.StatusCreated {
		t.Fatalf("status %d", st)
	}
	resp, err := http.Get(n.base + "/metrics")
	must(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`vigil_http_requests_total{code="201",route="PUT /v1/streams/{stream}/segments/{start}"} 1`,
		`vigil_http_requests_total{code="200",route="GET /v1/streams/{stream}/"}`,
		"vigil_ingest_bytes_total", "vigil_ingest_upload_duration_seconds_bucket",
		`vigil_storage_operation_duration_seconds_count{op="put",result="ok"}`,
		`vigil_ingest_queue_depth{class="backlog"}`, `vigil_ingest_queue_depth{class="live"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	resp, err = http.Get(n.base + "/healthz")
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
}

func authGet(url, token, rng string) (*http.Response, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	return http.DefaultClient.Do(req)
}

// s3Keys lists every object key in bucket.
func s3Keys(t *testing.T, m *testutil.MinIO, bucket string) []string {
	t.Helper()
	var keys []string
	for o := range m.Client().ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

func segmentKeys(keys []string) []string {
	var out []string
	for _, k := range keys {
		if strings.Contains(k, "/seg/") {
			out = append(out, k)
		}
	}
	return out
}

// TestMinIODownAndBack stops MinIO while a simulated bridge uploads: ingest
// answers 503 with Retry-After, nothing is half-visible, and once MinIO is
// back the bridge's retries land every segment.
func TestMinIODownAndBack(t *testing.T) {
	mio := testutil.StartMinIO(t)
	bucket := mio.Bucket(t)
	rds := testutil.StartRedis(t)
	n := startVigil(t, append(mio.Env(bucket), "VIGIL_REDIS_ADDR="+rds.Addr))
	token := n.provision("s1", "s2")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	up := &bench.Uploader{BaseURL: n.base, Token: token, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	body := bench.SyntheticFMP4(200 << 10)
	const perStream = 40
	base := time.Now().Add(-time.Hour).Truncate(time.Hour).UnixMilli()
	results := make(chan bench.Result, 2*perStream)
	errs := make(chan error, 2*perStream)
	release := make(chan struct{})
	go func() {
		for i := range perStream {
			if i == perStream/2 {
				<-release // the second half uploads while MinIO is down
			}
			for _, s := range []string{"s1", "s2"} {
				go func() {
					r, err := up.Upload(ctx, bench.Segment{Stream: s, Start: time.UnixMilli(base + int64(i)*2000),
						Duration: 2 * time.Second, Body: body, ContentType: "video/mp4"})
					results <- r
					errs <- err
				}()
			}
		}
	}()
	// Let the first half land, then take MinIO down.
	for range perStream {
		if r := <-results; r.Status != http.StatusCreated {
			t.Fatalf("before the outage: status %d", r.Status)
		}
		must(t, <-errs)
	}
	mio.Stop()
	st, ra := put(t, n.base, token, "s1", base+999_000, body, "video/mp4")
	if st != http.StatusServiceUnavailable || ra == "" {
		t.Fatalf("with MinIO down: status %d Retry-After %q, want 503 with Retry-After", st, ra)
	}
	close(release)
	time.Sleep(time.Second) // uploads are now retrying against the outage
	mio.Start()
	for range perStream {
		r := <-results
		must(t, <-errs)
		if r.Status != http.StatusCreated && r.Status != http.StatusOK {
			t.Fatalf("after the outage: status %d", r.Status)
		}
	}
	keys := segmentKeys(s3Keys(t, mio, bucket))
	if len(keys) != 2*perStream {
		t.Fatalf("%d segment objects in MinIO, want %d", len(keys), 2*perStream)
	}
	for _, s := range []string{"s1", "s2"} {
		rec := n.recordings(s, base, base+3600_000)
		if len(rec.Segments) != perStream || len(rec.Spans) != 1 {
			t.Fatalf("%s: %d segments in %d spans, want %d in 1", s, len(rec.Segments), len(rec.Spans), perStream)
		}
	}
}

// TestRedisDownAndRebuild: with Redis down ingest answers 503 and never a
// 2xx; once Redis is back the retry completes the segment, and an index
// rebuild picks up an object that reached storage but not the index.
func TestRedisDownAndRebuild(t *testing.T) {
	mio := testutil.StartMinIO(t)
	bucket := mio.Bucket(t)
	rds := testutil.StartRedis(t)
	n := startVigil(t, append(mio.Env(bucket), "VIGIL_REDIS_ADDR="+rds.Addr))
	token := n.provision("s1")
	body := bench.SyntheticFMP4(64 << 10)
	base := time.Now().Add(-time.Hour).Truncate(time.Hour).UnixMilli()
	if st, _ := put(t, n.base, token, "s1", base, body, "video/mp4"); st != http.StatusCreated {
		t.Fatalf("status %d", st)
	}
	rds.Stop()
	for i := 1; i <= 2; i++ {
		if st, ra := put(t, n.base, token, "s1", base+int64(i)*2000, body, "video/mp4"); st != http.StatusServiceUnavailable || ra == "" {
			t.Fatalf("segment %d with Redis down: status %d Retry-After %q, want 503", i, st, ra)
		}
	}
	// An object stored while Redis was down, as by a node that lost Redis
	// between its write and its index update and was never retried.
	orphan := (storage.StreamRef{Account: "acct", Camera: "cam", Stream: "s1"}).SegmentKey(base + 6000)
	if _, err := mio.Client().PutObject(context.Background(), bucket, orphan, bytes.NewReader(body), int64(len(body)),
		minio.PutObjectOptions{ContentType: "video/mp4", UserMetadata: index.SegmentMetadata(index.Segment{DurationMS: 2000})}); err != nil {
		t.Fatal(err)
	}
	rds.Start()
	// Segments 1 and 2: the bridge retries and gets its answer.
	for i := 1; i <= 2; i++ {
		if st, _ := put(t, n.base, token, "s1", base+int64(i)*2000, body, "video/mp4"); st != http.StatusOK && st != http.StatusCreated {
			t.Fatalf("retry of segment %d after Redis is back: status %d", i, st)
		}
	}
	if rec := n.recordings("s1", base, base+10_000); len(rec.Segments) != 3 {
		t.Fatalf("before rebuild: %d segments, want 3", len(rec.Segments))
	}
	cmd := exec.Command(vigilBin, "index", "rebuild", "--server", n.base)
	cmd.Env = append(os.Environ(), "VIGIL_ADMIN_TOKEN="+e2eToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("index rebuild: %v\n%s", err, out)
	}
	rec := n.recordings("s1", base, base+10_000)
	if len(rec.Segments) != 4 || len(rec.Spans) != 1 {
		t.Fatalf("after rebuild: %d segments in %d spans, want 4 in 1", len(rec.Segments), len(rec.Spans))
	}
	if keys := segmentKeys(s3Keys(t, mio, bucket)); len(keys) != 4 {
		t.Fatalf("%d objects, want 4", len(keys))
	}
}

// TestKillMidUpload SIGKILLs the node while a body is half sent: after the
// restart no partial object is visible and the index matches storage.
func TestKillMidUpload(t *testing.T) {
	mio := testutil.StartMinIO(t)
	bucket := mio.Bucket(t)
	rds := testutil.StartRedis(t)
	n := startVigil(t, append(mio.Env(bucket), "VIGIL_REDIS_ADDR="+rds.Addr))
	token := n.provision("s1")
	base := time.Now().Add(-time.Hour).Truncate(time.Hour).UnixMilli()
	body := bench.SyntheticFMP4(8 << 20)
	if st, _ := put(t, n.base, token, "s1", base, body[:1<<20], "video/mp4"); st != http.StatusBadRequest {
		// A truncated fMP4 (mdat cut short) is malformed.
		t.Fatalf("truncated body: status %d, want 400", st)
	}
	if st, _ := put(t, n.base, token, "s1", base, bench.SyntheticFMP4(1<<20), "video/mp4"); st != http.StatusCreated {
		t.Fatalf("status %d", st)
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(n.base, "http://"))
	must(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v1/streams/s1/segments/%d?duration_ms=2000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n\r\n", base+2000, token, len(body))
	_, err = conn.Write(body[:len(body)/2])
	must(t, err)
	time.Sleep(300 * time.Millisecond) // the node is now streaming the body to MinIO
	n.restart()

	keys := segmentKeys(s3Keys(t, mio, bucket))
	if len(keys) != 1 {
		t.Fatalf("objects after the kill: %v, want only the complete one", keys)
	}
	rec := n.recordings("s1", base, base+10_000)
	if len(rec.Segments) != 1 || rec.Segments[0].Start != base {
		t.Fatalf("index after the kill: %+v", rec.Segments)
	}
	// The bridge retries the interrupted segment and it lands.
	if st, _ := put(t, n.base, token, "s1", base+2000, body, "video/mp4"); st != http.StatusCreated {
		t.Fatalf("retry after restart: status %d", st)
	}
}

// TestBridgeCommand runs `vigil bridge` with an outage against a node: the
// backlog drains while live continues and every segment is listed.
func TestBridgeCommand(t *testing.T) {
	n := startVigil(t, nil)
	token := n.provision("a", "b")
	out, err := exec.Command(vigilBin, "bridge", "--server", n.base, "--token", token, "--streams", "a,b",
		"--segment-duration", "1s", "--payload", "synthetic", "--bitrate", "400000",
		"--live", "3s", "--outage", "2m").CombinedOutput()
	if err != nil {
		t.Fatalf("vigil bridge: %v\n%s", err, out)
	}
	now := time.Now()
	for _, s := range []string{"a", "b"} {
		rec := n.recordings(s, now.Add(-10*time.Minute).UnixMilli(), now.Add(time.Minute).UnixMilli())
		// 120 backlog segments, then 3 live ones right after: one span.
		if len(rec.Segments) != 123 || len(rec.Spans) != 1 {
			t.Fatalf("%s: %d segments in %d spans, want 123 in 1\n%s", s, len(rec.Segments), len(rec.Spans), out)
		}
	}
	if !strings.Contains(string(out), "backlog:") {
		t.Fatalf("no backlog report:\n%s", out)
	}
}

// TestDemo runs the guided demo end to end: each simulated camera sends
// video of its stream's registered size, the output is for people, and
// the demo leaves nothing in the temp dir.
func TestDemo(t *testing.T) {
	testutil.RequireBinary(t, "ffmpeg")
	tmp := t.TempDir()
	cmd := exec.Command(vigilBin, "demo", "--live", "4s", "--outage", "1m")
	cmd.Env = append(os.Environ(), "VIGIL_ADMIN_TOKEN=", "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("vigil demo: %v\n%s", err, out)
	}
	for _, want := range []string{"front-door-main", "till-main", "segments in 1 span", "sku HD2-D30",
		"registered 1920x1080, retention 30 days, analytics none; video received 1920x1080\n",
		"registered 640x480, retention 7 days, analytics none; video received 640x480\n",
		"registered 1280x720, retention 7 days, analytics people_counting; video received 1280x720\n",
		"removed the demo's data"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	for _, raw := range []string{"<nil>", "map[", "final=", "ABOVE"} {
		if strings.Contains(string(out), raw) {
			t.Errorf("demo output has %q:\n%s", raw, out)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the demo left %v in its temp dir", left)
	}
}
