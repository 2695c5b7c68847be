package hostile

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/redis/go-redis/v9"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// A camera deleted while uploads are still streaming their bodies: no upload
// may be answered 2xx after the DELETE answered, nothing of the camera may be
// left once its purge is done, and the camera re-created with the same ids
// starts empty. Local disk and the embedded index.
func TestPurgeInFlightUploadFS(t *testing.T) {
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{})
	left := func(t *testing.T, prefix string) []string { return fsObjects(t, n, prefix) }
	testPurgeInFlight(t, n, left)
}

// The same with S3 (MinIO) and the Redis index: no object in the bucket and
// no Redis key of the camera's streams after the purge.
func TestPurgeInFlightUploadS3Redis(t *testing.T) {
	mio := testutil.StartMinIO(t)
	rs := testutil.StartRedis(t)
	bucket := mio.Bucket(t)
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{Env: append(mio.Env(bucket), "VIGIL_REDIS_ADDR="+rs.Addr)})
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	left := func(t *testing.T, prefix string) []string {
		return append(s3Objects(t, mio.Client(), bucket, prefix), redisKeys(t, rdb, prefix)...)
	}
	testPurgeInFlight(t, n, left)
}

// DELETE /v1/streams/{id} purges that one stream as a camera deletion does,
// in-flight upload included, and leaves the camera's other stream alone.
func TestDeleteStreamPurgesInFlightUpload(t *testing.T) {
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{})
	ctx := context.Background()
	tok := n.Provision("s1", "s2")
	now := time.Now()
	done1, done2 := now.Add(-60*time.Second).UnixMilli(), now.Add(-50*time.Second).UnixMilli()
	for _, p := range []struct {
		stream string
		start  int64
	}{{"s1", done1}, {"s2", done2}} {
		if code, msg := n.Put(tok, p.stream, p.start, segment(4<<10), "video/mp4"); code != 201 {
			t.Fatalf("put %s: %d %s", p.stream, code, msg)
		}
	}
	late := startSlowPut(t, n, tok, "s1", now.Add(-30*time.Second).UnixMilli())
	waitInflight(t, n, 1)

	var del struct{ Purge string }
	n.Must(n.API.Do(ctx, "DELETE", "/v1/streams/s1", nil, &del))
	deleted := time.Now()
	if del.Purge == "" {
		t.Fatal("DELETE /v1/streams/s1 named no purge")
	}
	waitPurgeDone(t, n, del.Purge)
	close(late.release)
	res := late.wait(t)
	if res.code/100 == 2 && res.at.After(deleted) {
		t.Errorf("in-flight PUT answered %d after the DELETE answered: %s", res.code, res.body)
	} else if res.code != http.StatusNotFound {
		t.Errorf("in-flight PUT of a deleted stream: %d %s %v, want 404", res.code, res.body, res.err)
	}
	if l := fsObjects(t, n, "acct/cam/s1/"); len(l) > 0 {
		t.Errorf("stream purge done, but its objects are left: %v", l)
	}
	// The other stream is untouched.
	if segs := recordings(t, n, "s2", now); len(segs) != 1 || segs[0] != done2 {
		t.Errorf("s2 recordings after s1's purge: %v, want [%d]", segs, done2)
	}
	if code := getStatus(t, n, fmt.Sprintf("/v1/streams/s2/segments/%d", done2)); code != 200 {
		t.Errorf("s2 segment after s1's purge: %d", code)
	}
	if code := getStatus(t, n, "/v1/streams/s1/recordings?start="+strconv.FormatInt(done1-1000, 10)+"&end="+strconv.FormatInt(now.UnixMilli(), 10)); code != 404 {
		t.Errorf("recordings of the deleted stream: %d, want 404", code)
	}
	if code, msg := n.Put(tok, "s1", now.UnixMilli(), segment(1<<10), "video/mp4"); code != 404 {
		t.Errorf("PUT to the deleted stream: %d %s, want 404", code, msg)
	}

	// Delete and re-create the camera: s1 starts empty.
	n.Must(n.API.Do(ctx, "DELETE", "/v1/cameras/cam", nil, &del))
	waitPurgeDone(t, n, del.Purge)
	recreateCamera(t, n, "s1", "s2")
	for _, s := range []string{"s1", "s2"} {
		if segs := recordings(t, n, s, now); len(segs) != 0 {
			t.Errorf("re-created %s lists %v", s, segs)
		}
	}
	for _, p := range []string{fmt.Sprintf("s1/segments/%d", done1), fmt.Sprintf("s2/segments/%d", done2), fmt.Sprintf("s1/segments/%d", late.start)} {
		if code := getStatus(t, n, "/v1/streams/"+p); code != 404 {
			t.Errorf("re-created camera serves the old %s: %d", p, code)
		}
	}
}

// testPurgeInFlight runs the scenario on n; left lists what storage and the
// index still hold under a key prefix.
func testPurgeInFlight(t *testing.T, n *vigiltest.Node, left func(t *testing.T, prefix string) []string) {
	ctx := context.Background()
	tok := n.Provision("s1", "s2")
	now := time.Now()
	stored := now.Add(-60 * time.Second).UnixMilli()
	if code, msg := n.Put(tok, "s1", stored, segment(4<<10), "video/mp4"); code != 201 {
		t.Fatalf("put: %d %s", code, msg)
	}
	// One body ends while the purge runs, one after it is done.
	during := startSlowPut(t, n, tok, "s1", now.Add(-30*time.Second).UnixMilli())
	after := startSlowPut(t, n, tok, "s2", now.Add(-20*time.Second).UnixMilli())
	waitInflight(t, n, 2)

	var del struct{ Purge string }
	n.Must(n.API.Do(ctx, "DELETE", "/v1/cameras/cam", nil, &del))
	deleted := time.Now()
	close(during.release)
	waitPurgeDone(t, n, del.Purge)
	close(after.release)
	for _, p := range []*slowPut{during, after} {
		res := p.wait(t)
		if res.code/100 == 2 && res.at.After(deleted) {
			t.Errorf("in-flight PUT %s/%d answered %d after the DELETE answered: %s", p.stream, p.start, res.code, res.body)
		} else if res.code != http.StatusNotFound {
			t.Errorf("in-flight PUT %s/%d of a deleted stream: %d %s %v, want 404", p.stream, p.start, res.code, res.body, res.err)
		}
	}
	if l := left(t, "acct/cam/"); len(l) > 0 {
		t.Errorf("purge done, but left: %v", l)
	}

	recreateCamera(t, n, "s1", "s2")
	for _, s := range []string{"s1", "s2"} {
		if segs := recordings(t, n, s, now); len(segs) != 0 {
			t.Errorf("re-created %s lists %v", s, segs)
		}
		var m struct {
			StorageBytes  int64 `json:"storage_bytes"`
			StoredObjects int64 `json:"stored_objects"`
		}
		n.Must(n.API.Do(ctx, "GET", "/v1/meter/streams/"+s, nil, &m))
		if m.StorageBytes != 0 || m.StoredObjects != 0 {
			t.Errorf("re-created %s starts with %d bytes, %d objects in the meter", s, m.StorageBytes, m.StoredObjects)
		}
	}
	for _, p := range []string{fmt.Sprintf("s1/segments/%d", stored), fmt.Sprintf("s1/segments/%d", during.start), fmt.Sprintf("s2/segments/%d", after.start)} {
		if code := getStatus(t, n, "/v1/streams/"+p); code != 404 {
			t.Errorf("re-created camera serves the old %s: %d", p, code)
		}
	}
	if l := left(t, "acct/cam/"); len(l) > 0 {
		t.Errorf("re-created camera holds: %v", l)
	}
}

// segment is a well-formed fMP4 body (ftyp, mdat) of about size bytes.
func segment(size int) []byte {
	b := []byte{0, 0, 0, 16, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0}
	mdat := make([]byte, 8+size)
	binary.BigEndian.PutUint32(mdat, uint32(len(mdat)))
	copy(mdat[4:], "mdat")
	for i := 8; i < len(mdat); i++ {
		mdat[i] = byte(i)
	}
	return append(b, mdat...)
}

// slowPut is an upload that sends 1 KiB of its body and stalls until
// release is closed.
type slowPut struct {
	stream  string
	start   int64
	release chan struct{}
	done    chan putResult
}

type putResult struct {
	code int
	body string
	at   time.Time // when the answer arrived
	err  error
}

func startSlowPut(t *testing.T, n *vigiltest.Node, token, stream string, start int64) *slowPut {
	t.Helper()
	body := segment(64 << 10)
	p := &slowPut{stream: stream, start: start, release: make(chan struct{}), done: make(chan putResult, 1)}
	pr, pw := io.Pipe()
	go func() {
		if _, err := pw.Write(body[:1024]); err != nil {
			return
		}
		select {
		case <-p.release:
		case <-time.After(30 * time.Second):
		}
		_, _ = pw.Write(body[1024:])
		pw.Close()
	}()
	req, err := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/streams/%s/segments/%d?duration_ms=2000", n.Base, stream, start), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "video/mp4")
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			p.done <- putResult{err: err, at: time.Now()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		p.done <- putResult{code: resp.StatusCode, body: string(b), at: time.Now()}
	}()
	return p
}

func (p *slowPut) wait(t *testing.T) putResult {
	t.Helper()
	select {
	case r := <-p.done:
		if r.err != nil {
			t.Logf("PUT %s/%d: %v", p.stream, p.start, r.err)
		}
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("PUT %s/%d not answered within 30 s of its body ending", p.stream, p.start)
		return putResult{}
	}
}

// waitInflight waits until k uploads hold an admission slot: they passed the
// registry check and their bodies are streaming.
func waitInflight(t *testing.T, n *vigiltest.Node, k int) {
	t.Helper()
	want := fmt.Sprintf("vigil_ingest_inflight{class=\"live\"} %d", k)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(n.Base + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), want+"\n") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("uploads not in flight: no %q in /metrics", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitPurgeDone(t *testing.T, n *vigiltest.Node, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var j struct{ State, Error string }
		n.Must(n.API.Do(context.Background(), "GET", "/v1/purges/"+id, nil, &j))
		if j.State == "done" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("purge %s not done within 30 s: %s %s", id, j.State, j.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// recreateCamera creates camera cam again with the same ids (a new
// Idempotency-Key, so it is not taken as a retry of the first create).
func recreateCamera(t *testing.T, n *vigiltest.Node, streams ...string) {
	t.Helper()
	var ss []string
	for _, s := range streams {
		ss = append(ss, fmt.Sprintf(`{"id":%q,"width":1280,"height":720,"retention_days":30}`, s))
	}
	body := `{"id":"cam","name":"Cam","streams":[` + strings.Join(ss, ",") + `]}`
	req, _ := http.NewRequest(http.MethodPost, n.Base+"/v1/bridges/br/cameras", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+vigiltest.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "recreate-"+testutil.RandomID())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("re-create camera: %d %s", resp.StatusCode, b)
	}
}

// recordings lists the segment starts of stream in the two hours before now.
func recordings(t *testing.T, n *vigiltest.Node, stream string, now time.Time) []int64 {
	t.Helper()
	var rec struct {
		Segments []struct{ Start int64 }
	}
	n.Must(n.API.Do(context.Background(), "GET", fmt.Sprintf("/v1/streams/%s/recordings?start=%d&end=%d",
		stream, now.Add(-2*time.Hour).UnixMilli(), now.Add(time.Minute).UnixMilli()), nil, &rec))
	var out []int64
	for _, s := range rec.Segments {
		out = append(out, s.Start)
	}
	return out
}

func getStatus(t *testing.T, n *vigiltest.Node, path string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, n.Base+path, nil)
	req.Header.Set("Authorization", "Bearer "+vigiltest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// fsObjects lists the object files under prefix of the fs backend.
func fsObjects(t *testing.T, n *vigiltest.Node, prefix string) []string {
	t.Helper()
	root := filepath.Join(n.Data, "objects")
	var out []string
	err := filepath.WalkDir(filepath.Join(root, filepath.FromSlash(prefix)), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

func s3Objects(t *testing.T, c *minio.Client, bucket, prefix string) []string {
	t.Helper()
	var out []string
	for o := range c.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		out = append(out, "s3:"+o.Key)
	}
	return out
}

// redisKeys lists the Redis keys naming anything under prefix (the index
// tags keys with account/camera/stream), and set members that do.
func redisKeys(t *testing.T, rdb *redis.Client, prefix string) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	iter := rdb.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if strings.Contains(k, prefix) {
			out = append(out, "redis:"+k)
			continue
		}
		if typ, _ := rdb.Type(ctx, k).Result(); typ == "set" {
			members, _ := rdb.SMembers(ctx, k).Result()
			for _, m := range members {
				if strings.Contains(m, prefix) {
					out = append(out, "redis:"+k+" ∋ "+m)
				}
			}
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A camera deleted while it publishes over RTSP: its session ends, the
// segments the recorder still holds are dropped or taken back, and once the
// purge is done nothing of it is left; re-created, it starts empty.
func TestPurgeDuringRTSPRecording(t *testing.T) {
	ffmpeg := testutil.RequireBinary(t, "ffmpeg")
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{RTSP: true, Args: []string{"--segment-duration", "1s"}})
	tok := n.Provision("s1")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	pub := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
		"-t", "30", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://br:"+tok+"@"+n.RTSPAddr+"/s1")
	var stderr bytes.Buffer
	pub.Stderr = &stderr
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = pub.Wait(); close(exited) }()
	defer func() {
		cancel()
		<-exited
	}()
	now := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for len(recordings(t, n, "s1", now)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no segments recorded within 20 s; ffmpeg: %s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	var del struct{ Purge string }
	n.Must(n.API.Do(ctx, "DELETE", "/v1/cameras/cam", nil, &del))
	waitPurgeDone(t, n, del.Purge)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("the RTSP session of the deleted stream still runs 10 s after its purge")
	}
	if l := fsObjects(t, n, "acct/cam/"); len(l) > 0 {
		t.Errorf("purge done, but left: %v", l)
	}
	recreateCamera(t, n, "s1")
	if segs := recordings(t, n, "s1", now); len(segs) != 0 {
		t.Errorf("re-created s1 lists %v", segs)
	}
	if l := fsObjects(t, n, "acct/cam/"); len(l) > 0 {
		t.Errorf("re-created camera holds: %v", l)
	}
}
