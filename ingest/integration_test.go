package ingest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index/redisindex"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/s3"
)

// newMinIORedisEnv serves the handler over a real MinIO bucket and the Redis
// index on a real redis-server.
func newMinIORedisEnv(t *testing.T) *env {
	t.Helper()
	m := testutil.StartMinIO(t)
	rs := testutil.StartRedis(t)
	ctx := context.Background()
	store, err := s3.New(ctx, s3.Config{
		Endpoint: "http://" + m.Addr, Bucket: m.Bucket(t), AccessKey: m.AccessKey, SecretKey: m.SecretKey,
		Prefix: testutil.RandomID() + "/",
	})
	require.NoError(t, err)
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rc.Close() })
	idx := redisindex.New(rc, store, redisindex.Options{KeyPrefix: "test:" + testutil.RandomID() + ":"})
	return newEnvWith(t, Config{Now: func() time.Time { return now }, MaxBodyBytes: 4 << 20}, store, idx)
}

// TestAgainstRealBackends runs the storage-visible behaviour over the
// embedded defaults and over MinIO + Redis.
func TestAgainstRealBackends(t *testing.T) {
	backends := []struct {
		name string
		new  func(t *testing.T) *env
	}{
		{"fs+embedded", func(t *testing.T) *env {
			return newEnv(t, func(c *Config, _ *storage.Backend, _ *Index) { c.MaxBodyBytes = 4 << 20 })
		}},
		{"minio+redis", newMinIORedisEnv},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := b.new(t)
			t.Run("CreateRetryConflict", func(t *testing.T) { testCreateRetryConflict(t, e) })
			t.Run("RejectedBodiesStoreNothing", func(t *testing.T) { testRejectedBodiesStoreNothing(t, e) })
			t.Run("ConcurrentPuts", func(t *testing.T) { testConcurrentPuts(t, e) })
			t.Run("ClientDisconnect", func(t *testing.T) { testClientDisconnect(t, e) })
		})
	}
}

// Each subtest uses its own stream, so they share one server.
func (e *env) addStream(id string) storage.StreamRef {
	e.reg.mu.Lock()
	defer e.reg.mu.Unlock()
	e.reg.streams[id] = e.reg.streams["s1"]
	s := e.reg.streams[id]
	s.ID, s.Camera = id, "cam-"+id
	e.reg.streams[id] = s
	return storage.StreamRef{Account: s.Account, Camera: s.Camera, Stream: id}
}

func objectsUnder(t *testing.T, store storage.Backend, ref storage.StreamRef) []storage.ObjectInfo {
	t.Helper()
	var out []storage.ObjectInfo
	require.NoError(t, storage.Walk(context.Background(), store, ref.StreamPrefix(), func(o storage.ObjectInfo) error {
		out = append(out, o)
		return nil
	}))
	return out
}

func testCreateRetryConflict(t *testing.T, e *env) {
	ref := e.addStream("crc")
	body := testdata(t, "sample.mp4")
	start := now.Add(-5 * time.Second).UnixMilli()
	p := put{path: fmt.Sprintf("/v1/streams/crc/segments/%d", start), body: body, query: "duration_ms=1000&width=160&height=120"}
	r := e.do(t, p)
	require.Equal(t, http.StatusCreated, r.status, r.body)
	got, info := readObject(t, e.store, ref.SegmentKey(start))
	assert.Equal(t, body, got)
	assert.Equal(t, "video/mp4", info.ContentType)
	assert.Equal(t, "1000", info.Metadata["duration-ms"])

	assert.Equal(t, http.StatusOK, e.do(t, p).status)
	p.body = segment(t, 1000)
	assert.Equal(t, http.StatusConflict, e.do(t, p).status)

	assert.Len(t, objectsUnder(t, e.store, ref), 1)
	segs := indexed(t, e.idx, ref)
	require.Len(t, segs, 1)
	assert.Equal(t, sum(body), segs[0].SHA256)
	assert.Equal(t, int64(len(body)), segs[0].Size)
}

func testRejectedBodiesStoreNothing(t *testing.T, e *env) {
	ref := e.addStream("rej")
	path := "/v1/streams/rej/segments/" + nowMS(-time.Second)
	good := segment(t, 2000)
	for _, c := range []struct {
		name   string
		p      put
		status int
	}{
		{"malformed mp4", put{path: path, body: append(bytes.Clone(good), 0, 0, 0)}, 400},
		{"malformed ts", put{path: path, ct: "video/mp2t", body: good}, 400},
		{"sha mismatch", put{path: path, body: good, headers: map[string]string{"X-Content-SHA256": sum(good[1:])}}, 400},
		{"too large", put{path: path, body: segment(t, 4<<20)}, 413},
	} {
		r := e.do(t, c.p)
		assert.Equal(t, c.status, r.status, "%s: %v", c.name, r.body)
	}
	assert.Empty(t, objectsUnder(t, e.store, ref))
	assert.Empty(t, indexed(t, e.idx, ref))
}

func testConcurrentPuts(t *testing.T, e *env) {
	ref := e.addStream("conc")
	body := segment(t, 256<<10)
	url := e.srv.URL + "/v1/streams/conc/segments/" + nowMS(-2*time.Second) + "?duration_ms=2000"
	const n = 50
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer b1-token")
			req.Header.Set("Content-Type", "video/mp4")
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	assert.Equal(t, map[int]int{201: 1, 200: n - 1}, count)
	objs := objectsUnder(t, e.store, ref)
	require.Len(t, objs, 1)
	got, _ := readObject(t, e.store, objs[0].Key)
	assert.Equal(t, body, got)
	assert.Len(t, indexed(t, e.idx, ref), 1)
}

func testClientDisconnect(t *testing.T, e *env) {
	ref := e.addStream("disc")
	full := segment(t, 1<<20)
	before := metricValue(t, e.prom, "vigil_ingest_requests_total", map[string]string{"route": routePutSegment, "code": "400"})
	bytesBefore := metricValue(t, e.prom, "vigil_ingest_bytes_total", nil)
	c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	require.NoError(t, err)
	_, err = fmt.Fprintf(c, "PUT /v1/streams/disc/segments/%s?duration_ms=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer b1-token\r\n"+
		"Content-Type: video/mp4\r\nContent-Length: %s\r\n\r\n", nowMS(-time.Second), strconv.Itoa(len(full)))
	require.NoError(t, err)
	_, err = c.Write(full[:len(full)/2])
	require.NoError(t, err)
	waitFor(t, "body bytes", func() bool { return metricValue(t, e.prom, "vigil_ingest_bytes_total", nil) > bytesBefore })
	require.NoError(t, c.Close())
	waitFor(t, "the request to finish", func() bool {
		return metricValue(t, e.prom, "vigil_ingest_requests_total", map[string]string{"route": routePutSegment, "code": "400"}) > before
	})
	assert.Empty(t, objectsUnder(t, e.store, ref))
	assert.Empty(t, indexed(t, e.idx, ref))
}
