package playback

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/redisindex"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/s3"
)

// Range reads go to MinIO as ranged GETs; the recordings list comes from
// the Redis index.
func TestMinIORedisRangesAndRecordings(t *testing.T) {
	m := testutil.StartMinIO(t)
	rs := testutil.StartRedis(t)
	ctx := context.Background()
	store, err := s3.New(ctx, s3.Config{Endpoint: "http://" + m.Addr, Bucket: m.Bucket(t), AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	require.NoError(t, err)
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rc.Close() })
	idx := redisindex.New(rc, store, redisindex.Options{})
	reg := &fakeRegistry{streams: map[string]accounts.Stream{"s1": {ID: "s1", Camera: "cam1", Bridge: "b1", Account: "acct", RetentionDays: 30}}}
	srv := httptest.NewServer(auth.New(adminToken, nil).Middleware(New(store, idx, reg, nil), nil))
	t.Cleanup(srv.Close)
	e := &env{srv: srv}

	body := make([]byte, 3<<20)
	_, _ = rand.Read(body)
	for i, start := range []int64{base, base + 2000} {
		seg := index.Segment{Start: start, DurationMS: 2000, Size: int64(len(body)), ContentType: "video/mp2t"}
		_, err := store.Put(ctx, ref.SegmentKey(start), bytes.NewReader(body), int64(len(body)),
			storage.PutOptions{IfAbsent: true, ContentType: seg.ContentType, Metadata: index.SegmentMetadata(seg)})
		require.NoError(t, err, i)
		_, _, err = idx.Add(ctx, ref, seg)
		require.NoError(t, err)
	}

	path := "/v1/streams/s1/segments/" + strconv.FormatInt(base, 10)
	resp, b := e.get(t, path, adminToken, map[string]string{"Range": "bytes=1048576-1048675"})
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, body[1<<20:1<<20+100], b)
	assert.Equal(t, "bytes 1048576-1048675/3145728", resp.Header.Get("Content-Range"))
	assert.Equal(t, "video/mp2t", resp.Header.Get("Content-Type"))

	resp, b = e.get(t, path, adminToken, map[string]string{"Range": "bytes=-10"})
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, body[len(body)-10:], b)

	resp, b = e.get(t, path, adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, body, b)

	resp, b = e.get(t, "/v1/streams/s1/recordings?start="+strconv.FormatInt(base, 10)+"&end="+strconv.FormatInt(base+10_000, 10), adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	assert.JSONEq(t, `{"spans":[{"start":`+strconv.FormatInt(base, 10)+`,"end":`+strconv.FormatInt(base+4000, 10)+`}],
		"segments":[{"start":`+strconv.FormatInt(base, 10)+`,"duration_ms":2000,"size":3145728,"url":"/v1/streams/s1/segments/`+strconv.FormatInt(base, 10)+`"},
		{"start":`+strconv.FormatInt(base+2000, 10)+`,"duration_ms":2000,"size":3145728,"url":"/v1/streams/s1/segments/`+strconv.FormatInt(base+2000, 10)+`"}]}`, string(b))
}
