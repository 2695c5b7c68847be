package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/redis/go-redis/v9"

	"github.com/vigilcloud/vigil/bench"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/s3"
)

type purgeStatus struct {
	ID             string `json:"id"`
	State          string `json:"state"`
	ObjectsDeleted int64  `json:"objects_deleted"`
	BytesFreed     int64  `json:"bytes_freed"`
}

func (n *vigilNode) purge(id string) purgeStatus {
	n.t.Helper()
	var p purgeStatus
	must(n.t, n.api.do(context.Background(), "GET", "/v1/purges/"+id, nil, &p))
	return p
}

func (n *vigilNode) waitPurgeDone(id string) purgeStatus {
	n.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		p := n.purge(id)
		if p.State == "done" {
			return p
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("purge %s not done: %+v\n%s", id, p, tail(n.Logs(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func bucketKeys(t *testing.T, mc *minio.Client, bucket, prefix string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for o := range mc.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		must(t, o.Err)
		out[o.Key] = o.Size
	}
	return out
}

// TestPurgeSurvivesSIGKILL deletes a camera holding 20,000 segments, kills
// the node in the middle of the purge, and checks that after the restart
// the purge finishes with exact counts, storage and index hold nothing of
// the camera, other cameras are untouched, and the id can be re-created
// empty.
func TestPurgeSurvivesSIGKILL(t *testing.T) {
	mio := testutil.StartMinIO(t)
	bucket := mio.Bucket(t)
	rds := testutil.StartRedis(t)
	n := startVigil(t, append(mio.Env(bucket), "VIGIL_REDIS_ADDR="+rds.Addr),
		"--purge-straggle", "1s", "--retention-lease-ttl", "2s", "--purge-interval", "200ms")
	ctx := context.Background()
	must(t, n.api.do(ctx, "POST", "/v1/accounts", map[string]any{"id": "acct", "name": "A"}, nil))
	var br struct{ Token string }
	must(t, n.api.do(ctx, "POST", "/v1/accounts/acct/bridges", map[string]any{"id": "br", "name": "B"}, &br))
	cam := map[string]any{"id": "cam", "name": "Cam", "streams": []map[string]any{{"id": "s1"}, {"id": "s2"}}}
	must(t, n.api.do(ctx, "POST", "/v1/bridges/br/cameras", cam, nil))
	must(t, n.api.do(ctx, "POST", "/v1/bridges/br/cameras", map[string]any{"id": "cam2", "name": "Cam2", "streams": []map[string]any{{"id": "s3"}}}, nil))

	store, err := s3.New(ctx, s3.Config{Endpoint: "http://" + mio.Addr, Bucket: bucket, AccessKey: mio.AccessKey, SecretKey: mio.SecretKey})
	must(t, err)
	from := time.Now().Add(-12 * time.Hour).Truncate(time.Hour)
	began := time.Now()
	mc := mio.Client()
	for s, count := range map[string]int{"s1": 12_000, "s2": 8_000} {
		_, err := bench.SeedSegments(ctx, mc, bucket, store, storage.StreamRef{Account: "acct", Camera: "cam", Stream: s}, from, 2*time.Second, count, 100)
		must(t, err)
	}
	t.Logf("seeded 20,000 segments in %v", time.Since(began))
	// The other camera gets real uploads.
	for i := range 20 {
		if st, _ := put(t, n.base, br.Token, "s3", from.UnixMilli()+int64(i)*2000, bench.SyntheticFMP4(4<<10), "video/mp4"); st != http.StatusCreated {
			t.Fatalf("upload to s3: %d", st)
		}
	}
	for _, s := range []string{"s1", "s2"} {
		must(t, n.api.do(ctx, "POST", "/v1/index/rebuild?stream="+s, nil, nil))
	}
	t.Logf("rebuilt the index at %v", time.Since(began))
	if rec := n.recordings("s1", from.UnixMilli(), from.Add(24*time.Hour).UnixMilli()); len(rec.Segments) != 12_000 {
		t.Fatalf("index after rebuild: %d segments of s1", len(rec.Segments))
	}
	camKeys := bucketKeys(t, mc, bucket, "acct/cam/")
	var wantBytes int64
	for _, sz := range camKeys {
		wantBytes += sz
	}
	other := bucketKeys(t, mc, bucket, "acct/cam2/")
	if len(other) < 20 {
		t.Fatalf("other camera holds %d objects", len(other))
	}

	var del struct{ Purge string }
	must(t, n.api.do(ctx, "DELETE", "/v1/cameras/cam", nil, &del))
	// Kill it once the purge is under way.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p := n.purge(del.Purge)
		if p.ObjectsDeleted > 0 {
			if p.State == "done" {
				t.Fatalf("purge finished before the kill: %+v", p)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("purge did not start: %+v", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.restart()
	left := len(bucketKeys(t, mc, bucket, "acct/cam/"))
	t.Logf("objects left after the kill: %d of %d", left, len(camKeys))
	p := n.waitPurgeDone(del.Purge)
	t.Logf("purge done at %v", time.Since(began))
	if p.ObjectsDeleted != int64(len(camKeys)) || p.BytesFreed != wantBytes {
		t.Fatalf("purge counts %d objects / %d bytes, want %d / %d", p.ObjectsDeleted, p.BytesFreed, len(camKeys), wantBytes)
	}
	// Every prefix: nothing of the camera, the other camera unchanged.
	all := bucketKeys(t, mc, bucket, "")
	for k := range all {
		if strings.HasPrefix(k, "acct/cam/") {
			t.Fatalf("object of the purged camera survived: %s", k)
		}
	}
	if got := bucketKeys(t, mc, bucket, "acct/cam2/"); len(got) != len(other) {
		t.Fatalf("other camera: %d objects, had %d", len(got), len(other))
	}
	for k, sz := range other {
		if all[k] != sz {
			t.Fatalf("other camera's %s changed", k)
		}
	}
	// Index: no open entries or spans of the purged streams in Redis.
	rc := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rc.Close()
	keys, err := rc.Keys(ctx, "*{acct/cam/*").Result()
	must(t, err)
	for _, k := range keys {
		if strings.Contains(k, ":open:") || strings.HasSuffix(k, ":spans") {
			t.Fatalf("index key of the purged camera survived: %s", k)
		}
	}
	// The id can be created again, and it starts empty. (An identical
	// body within the meter's dedupe window would be taken for a retry of
	// the first create: a new create says so by differing, or by a new
	// Idempotency-Key.)
	cam["name"] = "Cam, again"
	must(t, n.api.do(ctx, "POST", "/v1/bridges/br/cameras", cam, nil))
	if rec := n.recordings("s1", from.UnixMilli(), from.Add(24*time.Hour).UnixMilli()); len(rec.Segments) != 0 || len(rec.Spans) != 0 {
		t.Fatalf("re-created camera is not empty: %d segments", len(rec.Segments))
	}
	var meterView struct {
		StorageBytes int64 `json:"storage_bytes"`
	}
	must(t, n.api.do(ctx, "GET", "/v1/meter/streams/s1", nil, &meterView))
	if meterView.StorageBytes != 0 {
		t.Fatalf("re-created stream starts with %d stored bytes", meterView.StorageBytes)
	}
}

// TestUploadDuringDeletionAndOldBacklog: a bridge that keeps uploading
// while and after its camera is deleted gets 404 and nothing of the camera
// survives the purge; a backlog segment older than retention gets 410 and
// nothing is stored.
func TestUploadDuringDeletionAndOldBacklog(t *testing.T) {
	mio := testutil.StartMinIO(t)
	bucket := mio.Bucket(t)
	n := startVigil(t, mio.Env(bucket), "--purge-straggle", "2s", "--purge-interval", "200ms")
	ctx := context.Background()
	must(t, n.api.do(ctx, "POST", "/v1/accounts", map[string]any{"id": "acct", "name": "A"}, nil))
	var br struct{ Token string }
	must(t, n.api.do(ctx, "POST", "/v1/accounts/acct/bridges", map[string]any{"id": "br", "name": "B"}, &br))
	must(t, n.api.do(ctx, "POST", "/v1/bridges/br/cameras", map[string]any{"id": "cam", "name": "Cam",
		"streams": []map[string]any{{"id": "s1", "retention_days": 1}}}, nil))
	must(t, n.api.do(ctx, "POST", "/v1/bridges/br/cameras", map[string]any{"id": "cam2", "name": "Cam2",
		"streams": []map[string]any{{"id": "s2"}}}, nil))
	for i := range 3 {
		if st, _ := put(t, n.base, br.Token, "s2", time.Now().Add(-time.Hour).UnixMilli()+int64(i)*2000, bench.SyntheticFMP4(4<<10), "video/mp4"); st != http.StatusCreated {
			t.Fatalf("upload to s2: %d", st)
		}
	}
	mc := mio.Client()

	// Old backlog: ended two days ago under a 1-day plan.
	old := time.Now().Add(-48 * time.Hour).UnixMilli()
	if st, _ := put(t, n.base, br.Token, "s1", old, bench.SyntheticFMP4(4<<10), "video/mp4"); st != http.StatusGone {
		t.Fatalf("old backlog: status %d, want 410", st)
	}
	if keys := bucketKeys(t, mc, bucket, "acct/cam/"); len(keys) != 0 {
		t.Fatalf("old backlog stored: %v", keys)
	}

	// A bridge uploading continuously, 4 at a time.
	body := bench.SyntheticFMP4(8 << 10)
	var (
		mu        sync.Mutex
		statuses  = map[int]int{}
		deletedAt atomic.Int64
		after404  atomic.Int64 // 2xx answers that started after the delete returned
		seq       atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	base := time.Now().Add(-time.Hour).UnixMilli()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				began := time.Now().UnixNano()
				req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/streams/s1/segments/%d?duration_ms=2000", n.base, base+seq.Add(1)*2000), bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+br.Token)
				req.Header.Set("Content-Type", "video/mp4")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
				if d := deletedAt.Load(); d != 0 && began > d && resp.StatusCode/100 == 2 {
					after404.Add(1)
				}
			}
		}()
	}
	// Let some land, then delete the camera while uploads continue.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		ok := statuses[http.StatusCreated] >= 20
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uploads did not land: %v", statuses)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var del struct{ Purge string }
	must(t, n.api.do(ctx, "DELETE", "/v1/cameras/cam", nil, &del))
	deletedAt.Store(time.Now().UnixNano())
	// Keep uploading for a while after the deletion.
	deadline = time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n404 := statuses[http.StatusNotFound]
		mu.Unlock()
		if n404 >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 404s after the deletion: %v", statuses)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p := n.waitPurgeDone(del.Purge)
	close(stop)
	wg.Wait()
	t.Logf("upload statuses: %v; purge %+v", statuses, p)
	if after404.Load() != 0 {
		t.Fatalf("%d uploads started after the deletion were accepted", after404.Load())
	}
	if keys := bucketKeys(t, mc, bucket, "acct/cam/"); len(keys) != 0 {
		t.Fatalf("objects of the deleted camera survived the purge: %d, e.g. %v", len(keys), slices.Collect(func(yield func(string) bool) {
			for k := range keys {
				yield(k)
				return
			}
		}))
	}
	if p.ObjectsDeleted < 20 {
		t.Fatalf("purge deleted %d objects, want at least the 20 uploaded", p.ObjectsDeleted)
	}
	checkRetentionMetricsAndReconcile(t, n, mc, bucket)
}

// checkRetentionMetricsAndReconcile: the purge shows in /metrics, and
// `vigil meter reconcile` finds and fixes a drift between the meter and
// storage (an object the meter never counted).
func checkRetentionMetricsAndReconcile(t *testing.T, n *vigilNode, mc *minio.Client, bucket string) {
	t.Helper()
	resp, err := http.Get(n.base + "/metrics")
	must(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, err)
	// The series is exported at 0 from the start: the purge must have counted.
	if !strings.Contains(string(b), `vigil_retention_deleted_objects_total{reason="camera_deleted"}`) ||
		strings.Contains(string(b), "vigil_retention_deleted_objects_total{reason=\"camera_deleted\"} 0\n") ||
		!strings.Contains(string(b), "vigil_retention_delete_seconds_bucket") {
		t.Fatal("retention metrics missing from /metrics")
	}
	reconcile := func(args ...string) string {
		cmd := exec.Command(vigilBin, append([]string{"meter", "reconcile", "--server", n.base}, args...)...)
		cmd.Env = append(os.Environ(), "VIGIL_ADMIN_TOKEN="+e2eToken)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("vigil meter reconcile: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := reconcile("--dry-run"); !strings.Contains(out, "1 streams checked, 0 drifted") {
		t.Fatalf("reconcile before any drift:\n%s", out)
	}
	// An object the meter never heard of (a node that crashed before
	// reporting its usage).
	key := "acct/cam2/s2/seg/" + time.Now().Add(-2*time.Hour).UTC().Format("2006/01/02/15") + "/" +
		fmt.Sprint(time.Now().Add(-2*time.Hour).Truncate(time.Hour).UnixMilli())
	_, err = mc.PutObject(context.Background(), bucket, key, bytes.NewReader(make([]byte, 777)), 777, minio.PutObjectOptions{})
	must(t, err)
	if out := reconcile("--stream", "s2"); !strings.Contains(out, "1 drifted") || !strings.Contains(out, "777") || !strings.Contains(out, "true") {
		t.Fatalf("reconcile did not fix the drift:\n%s", out)
	}
	var total int64
	for _, sz := range bucketKeys(t, mc, bucket, "acct/cam2/s2/seg/") {
		total += sz
	}
	var view struct {
		StorageBytes int64 `json:"storage_bytes"`
	}
	must(t, n.api.do(context.Background(), "GET", "/v1/meter/streams/s2", nil, &view))
	if view.StorageBytes != total {
		t.Fatalf("meter stored bytes %d, storage holds %d", view.StorageBytes, total)
	}
}
