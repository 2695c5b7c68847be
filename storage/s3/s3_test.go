package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	iofs "io/fs"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/storagetest"
)

// newS3 returns a backend on a fresh bucket (created by New) under a
// random key prefix. A 5 MiB part size makes the suite's large object take
// the multipart path.
func newS3(t *testing.T, m *testutil.MinIO) *Backend {
	t.Helper()
	ctx := context.Background()
	b, err := New(ctx, Config{
		Endpoint:  "http://" + m.Addr,
		Bucket:    "vigil-" + testutil.RandomID(),
		AccessKey: m.AccessKey,
		SecretKey: m.SecretKey,
		Prefix:    testutil.RandomID() + "/",
		PartSize:  5 << 20,
	})
	require.NoError(t, err)
	return b
}

// TestS3 starts one MinIO for the whole package: the shared suite runs its
// subtests in parallel against it, then the outage test stops and
// restarts it.
func TestS3(t *testing.T) {
	m := testutil.StartMinIO(t)
	t.Run("Suite", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Backend { return newS3(t, m) })
	})
	t.Run("MetadataWrittenByOtherClients", func(t *testing.T) { testForeignMetadata(t, m) })
	t.Run("NewExistingBucket", func(t *testing.T) {
		b := newS3(t, m)
		b2, err := New(context.Background(), Config{Endpoint: "http://" + m.Addr, Bucket: b.Bucket(), AccessKey: m.AccessKey, SecretKey: m.SecretKey})
		require.NoError(t, err)
		require.NoError(t, b2.Ping(context.Background()))
	})
	t.Run("BadCredentials", func(t *testing.T) {
		_, err := New(context.Background(), Config{Endpoint: "http://" + m.Addr, Bucket: "vigil-x", AccessKey: m.AccessKey, SecretKey: "wrong-secret"})
		require.Error(t, err)
		require.False(t, errors.Is(err, storage.ErrUnavailable), "bad credentials are not an outage: %v", err)
	})
	t.Run("PingMissingBucket", func(t *testing.T) {
		b := newS3(t, m)
		require.NoError(t, m.Client().RemoveBucket(context.Background(), b.Bucket()))
		require.Error(t, b.Ping(context.Background()))
	})
	// Last: it stops the server.
	t.Run("Unavailable", func(t *testing.T) { testUnavailable(t, m) })
}

// Keys written by other S3 clients come back canonicalised by minio-go;
// the backend lower-cases them again.
func testForeignMetadata(t *testing.T, m *testutil.MinIO) {
	b := newS3(t, m)
	ctx := context.Background()
	_, err := b.Client().PutObject(ctx, b.Bucket(), b.prefix+"f/obj", strings.NewReader("abc"), 3, minio.PutObjectOptions{
		ContentType:  "video/mp4",
		UserMetadata: map[string]string{"X-Amz-Meta-Duration-Ms": "6000", "Width": "640"},
	})
	require.NoError(t, err)
	st, err := b.Stat(ctx, "f/obj")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"duration-ms": "6000", "width": "640"}, st.Metadata)
	_, _, err = b.Get(ctx, "f/none", 0, -1)
	require.ErrorIs(t, err, iofs.ErrNotExist)
}

func testUnavailable(t *testing.T, m *testutil.MinIO) {
	b := newS3(t, m)
	ctx := context.Background()
	_, err := b.Put(ctx, "u/before", strings.NewReader("x"), 1, storage.PutOptions{})
	require.NoError(t, err)

	m.Stop()
	_, err = b.Put(ctx, "u/during", strings.NewReader("x"), 1, storage.PutOptions{IfAbsent: true})
	require.ErrorIs(t, err, storage.ErrUnavailable)
	require.False(t, errors.Is(err, storage.ErrExists))
	require.ErrorIs(t, b.Ping(ctx), storage.ErrUnavailable)
	_, err = b.Stat(ctx, "u/before")
	require.ErrorIs(t, err, storage.ErrUnavailable)
	require.False(t, errors.Is(err, iofs.ErrNotExist))
	_, _, err = b.Get(ctx, "u/before", 0, -1)
	require.ErrorIs(t, err, storage.ErrUnavailable)
	_, err = b.List(ctx, "u/", "", 10)
	require.ErrorIs(t, err, storage.ErrUnavailable)
	require.ErrorIs(t, b.Delete(ctx, []string{"u/before"}), storage.ErrUnavailable)

	m.Start()
	require.NoError(t, b.Ping(ctx))
	_, err = b.Put(ctx, "u/after", bytes.NewReader([]byte("back")), 4, storage.PutOptions{IfAbsent: true})
	require.NoError(t, err)
	rc, _, err := b.Get(ctx, "u/after", 0, -1)
	require.NoError(t, err)
	data, _ := io.ReadAll(rc)
	rc.Close()
	require.Equal(t, "back", string(data))
	_, err = b.Stat(ctx, "u/during")
	require.ErrorIs(t, err, iofs.ErrNotExist)
}

func TestConfigErrors(t *testing.T) {
	for _, ep := range []string{"", "localhost:9000", "ftp://x", "http://"} {
		_, err := New(context.Background(), Config{Endpoint: ep, Bucket: "b"})
		require.Error(t, err, ep)
	}
	_, err := New(context.Background(), Config{Endpoint: "http://127.0.0.1:1"})
	require.Error(t, err)
}

func TestUnreachableEndpointIsUnavailable(t *testing.T) {
	addr := testutil.FreePort(t) // nothing listens there
	_, err := New(context.Background(), Config{Endpoint: "http://" + addr, Bucket: "vigil-x", AccessKey: "a", SecretKey: "b", MaxRetries: 1})
	require.ErrorIs(t, err, storage.ErrUnavailable)
}

func TestClassify(t *testing.T) {
	require.ErrorIs(t, classify(minio.ErrorResponse{StatusCode: 503, Code: "SlowDown"}), storage.ErrUnavailable)
	require.ErrorIs(t, classify(context.DeadlineExceeded), storage.ErrUnavailable)
	require.False(t, errors.Is(classify(context.Canceled), storage.ErrUnavailable))
	require.False(t, errors.Is(classify(minio.ErrorResponse{StatusCode: 400, Code: "InvalidArgument"}), storage.ErrUnavailable))
	require.False(t, errors.Is(classify(minio.ErrorResponse{StatusCode: 403, Code: "AccessDenied"}), storage.ErrUnavailable))
}
