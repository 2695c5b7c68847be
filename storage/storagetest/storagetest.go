// Package storagetest is the behaviour suite every storage.Backend passes.
// Each backend package runs it against a real store: fs in a temp dir, s3
// against a real MinIO with a fresh bucket and key prefix per test.
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/storage"
)

// LargeSize is the size of the suite's large object: above 5 MiB so that
// an S3 backend configured with a 5 MiB part size takes the multipart path.
const LargeSize = 6<<20 + 1

// Run runs the suite. newBackend returns an empty store, isolated from
// every other call's; subtests run in parallel.
func Run(t *testing.T, newBackend func(t *testing.T) storage.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"Empty", testEmpty},
		{"Large", testLarge},
		{"Ranges", testRanges},
		{"Metadata", testMetadata},
		{"Missing", testMissing},
		{"Overwrite", testOverwrite},
		{"IfAbsentExisting", testIfAbsentExisting},
		{"IfAbsentConcurrent", testIfAbsentConcurrent},
		{"ShortBody", testShortBody},
		{"ReaderError", testReaderError},
		{"LargeShortBody", testLargeShortBody},
		{"CancelMidPut", testCancelMidPut},
		{"InvalidKeys", testInvalidKeys},
		{"ListOrderAndPages", testListPages},
		{"ListPrefix", testListPrefix},
		{"DeleteMany", testDeleteMany},
		{"DeleteMissing", testDeleteMissing},
		{"Ping", testPing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newBackend(t))
		})
	}
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func put(t testing.TB, b storage.Backend, key string, body []byte, opts storage.PutOptions) storage.ObjectInfo {
	t.Helper()
	info, err := b.Put(context.Background(), key, bytes.NewReader(body), int64(len(body)), opts)
	require.NoError(t, err, "put %s", key)
	return info
}

func get(t testing.TB, b storage.Backend, key string, offset, length int64) ([]byte, storage.ObjectInfo) {
	t.Helper()
	rc, info, err := b.Get(context.Background(), key, offset, length)
	require.NoError(t, err, "get %s", key)
	defer rc.Close()
	data, err := io.ReadAll(rc)
	require.NoError(t, err, "read %s", key)
	return data, info
}

func requireAbsent(t testing.TB, b storage.Backend, key string) {
	t.Helper()
	ctx := context.Background()
	_, err := b.Stat(ctx, key)
	require.ErrorIs(t, err, iofs.ErrNotExist, "stat %s", key)
	_, _, err = b.Get(ctx, key, 0, -1)
	require.ErrorIs(t, err, iofs.ErrNotExist, "get %s", key)
	prefix := key[:strings.LastIndexByte(key, '/')+1]
	objs, err := b.List(ctx, prefix, "", 1000)
	require.NoError(t, err)
	for _, o := range objs {
		require.NotEqual(t, key, o.Key, "list shows %s", key)
	}
}

func testRoundTrip(t *testing.T, b storage.Backend) {
	body := randBytes(t, 1<<20+17)
	key := "acc/cam/main/seg/2024/05/06/07/1714979000000"
	info := put(t, b, key, body, storage.PutOptions{ContentType: "video/mp4"})
	assert.Equal(t, key, info.Key)
	assert.Equal(t, int64(len(body)), info.Size)
	assert.False(t, info.ModTime.IsZero())

	data, ginfo := get(t, b, key, 0, -1)
	require.True(t, bytes.Equal(body, data), "body differs")
	assert.Equal(t, int64(len(body)), ginfo.Size)
	assert.Equal(t, "video/mp4", ginfo.ContentType)

	st, err := b.Stat(context.Background(), key)
	require.NoError(t, err)
	assert.Equal(t, key, st.Key)
	assert.Equal(t, int64(len(body)), st.Size)
	assert.False(t, st.ModTime.IsZero())
}

func testEmpty(t *testing.T, b storage.Backend) {
	put(t, b, "e/empty", nil, storage.PutOptions{})
	data, info := get(t, b, "e/empty", 0, -1)
	assert.Empty(t, data)
	assert.Equal(t, int64(0), info.Size)
	data, _ = get(t, b, "e/empty", 0, 10)
	assert.Empty(t, data)
}

func testLarge(t *testing.T, b storage.Backend) {
	body := randBytes(t, LargeSize)
	put(t, b, "big/one", body, storage.PutOptions{ContentType: "video/mp2t", Metadata: map[string]string{"duration-ms": "60000"}})
	data, info := get(t, b, "big/one", 0, -1)
	require.True(t, bytes.Equal(body, data), "body differs")
	assert.Equal(t, "60000", info.Metadata["duration-ms"])
	// IfAbsent holds on the multipart path too.
	_, err := b.Put(context.Background(), "big/one", bytes.NewReader(body), int64(len(body)), storage.PutOptions{IfAbsent: true})
	require.ErrorIs(t, err, storage.ErrExists)
	info2 := put(t, b, "big/two", body, storage.PutOptions{IfAbsent: true})
	assert.Equal(t, int64(len(body)), info2.Size)
}

func testRanges(t *testing.T, b storage.Backend) {
	body := randBytes(t, 100_000)
	put(t, b, "r/obj", body, storage.PutOptions{})
	cases := []struct {
		off, n int64
		want   []byte
	}{
		{0, -1, body},
		{0, 10, body[:10]},
		{10, 20, body[10:30]},
		{99_990, -1, body[99_990:]},
		{99_990, 100, body[99_990:]}, // past the end: truncated
		{50_000, 0, nil},
		{100_000, -1, nil}, // at the end: empty
		{99_999, 1, body[99_999:]},
	}
	for _, c := range cases {
		data, info := get(t, b, "r/obj", c.off, c.n)
		require.True(t, bytes.Equal(c.want, data), "range %d+%d: got %d bytes, want %d", c.off, c.n, len(data), len(c.want))
		assert.Equal(t, int64(len(body)), info.Size, "range %d+%d reports the object's size", c.off, c.n)
	}
	_, _, err := b.Get(context.Background(), "r/obj", 100_001, -1)
	require.Error(t, err, "offset past the end")
	_, _, err = b.Get(context.Background(), "r/obj", -1, -1)
	require.Error(t, err, "negative offset")
}

func testMetadata(t *testing.T, b storage.Backend) {
	md := map[string]string{"duration-ms": "6000", "width": "1920", "height": "1080", "sha256": strings.Repeat("ab", 32)}
	put(t, b, "m/seg", randBytes(t, 1000), storage.PutOptions{ContentType: "video/mp4", Metadata: md})
	st, err := b.Stat(context.Background(), "m/seg")
	require.NoError(t, err)
	assert.Equal(t, "video/mp4", st.ContentType)
	assert.Equal(t, md, st.Metadata)
	_, gi := get(t, b, "m/seg", 0, -1)
	assert.Equal(t, "video/mp4", gi.ContentType)
	assert.Equal(t, md, gi.Metadata)
	_, gi = get(t, b, "m/seg", 10, 10)
	assert.Equal(t, md, gi.Metadata, "ranged get keeps metadata")

	// No content type: both backends report S3's default.
	put(t, b, "m/plain", []byte("x"), storage.PutOptions{})
	st, err = b.Stat(context.Background(), "m/plain")
	require.NoError(t, err)
	assert.Equal(t, "application/octet-stream", st.ContentType)
	assert.Empty(t, st.Metadata)

	// Upper-case metadata keys are refused, not silently rewritten.
	_, err = b.Put(context.Background(), "m/bad", strings.NewReader("x"), 1, storage.PutOptions{Metadata: map[string]string{"Duration-Ms": "1"}})
	require.Error(t, err)
	requireAbsent(t, b, "m/bad")
}

func testMissing(t *testing.T, b storage.Backend) {
	requireAbsent(t, b, "nope/never")
	put(t, b, "miss/a/b", []byte("x"), storage.PutOptions{})
	// A prefix of a key, and a key below a key, are not objects.
	requireAbsent(t, b, "miss/a")
	requireAbsent(t, b, "miss/a/b/c")
}

func testOverwrite(t *testing.T, b storage.Backend) {
	put(t, b, "o/k", []byte("first"), storage.PutOptions{ContentType: "text/plain", Metadata: map[string]string{"v": "1"}})
	put(t, b, "o/k", []byte("second!"), storage.PutOptions{ContentType: "video/mp4", Metadata: map[string]string{"v": "2"}})
	data, info := get(t, b, "o/k", 0, -1)
	assert.Equal(t, "second!", string(data))
	assert.Equal(t, "video/mp4", info.ContentType)
	assert.Equal(t, map[string]string{"v": "2"}, info.Metadata)
}

func testIfAbsentExisting(t *testing.T, b storage.Backend) {
	put(t, b, "ia/k", []byte("original"), storage.PutOptions{IfAbsent: true, Metadata: map[string]string{"v": "1"}})
	_, err := b.Put(context.Background(), "ia/k", strings.NewReader("replacement"), 11, storage.PutOptions{IfAbsent: true, Metadata: map[string]string{"v": "2"}})
	require.ErrorIs(t, err, storage.ErrExists)
	data, info := get(t, b, "ia/k", 0, -1)
	assert.Equal(t, "original", string(data))
	assert.Equal(t, map[string]string{"v": "1"}, info.Metadata)
}

func testIfAbsentConcurrent(t *testing.T, b storage.Backend) {
	const n = 50
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = append([]byte(fmt.Sprintf("writer %02d:", i)), randBytes(t, 64<<10)...)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = b.Put(context.Background(), "race/seg", bytes.NewReader(bodies[i]), int64(len(bodies[i])),
				storage.PutOptions{IfAbsent: true, Metadata: map[string]string{"writer": fmt.Sprint(i)}})
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "writers %d and %d both won", winner, i)
			winner = i
			continue
		}
		require.ErrorIs(t, err, storage.ErrExists, "writer %d", i)
	}
	require.NotEqual(t, -1, winner, "no writer won")
	data, info := get(t, b, "race/seg", 0, -1)
	require.True(t, bytes.Equal(bodies[winner], data), "stored body is not the winner's")
	assert.Equal(t, fmt.Sprint(winner), info.Metadata["writer"])
}

var errBoom = errors.New("boom: the uploader went away")

// failingReader yields n bytes, then err.
type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func testShortBody(t *testing.T, b storage.Backend) {
	body := randBytes(t, 200_000)
	for _, ifAbsent := range []bool{false, true} {
		key := fmt.Sprintf("short/%v", ifAbsent)
		_, err := b.Put(context.Background(), key, bytes.NewReader(body[:150_000]), int64(len(body)), storage.PutOptions{IfAbsent: ifAbsent})
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		requireAbsent(t, b, key)
		// The key is still free for a complete upload.
		put(t, b, key, body, storage.PutOptions{IfAbsent: true})
	}
}

func testReaderError(t *testing.T, b storage.Backend) {
	body := randBytes(t, 300_000)
	_, err := b.Put(context.Background(), "rerr/k", &failingReader{r: bytes.NewReader(body), n: 100_000, err: errBoom}, int64(len(body)), storage.PutOptions{IfAbsent: true})
	require.ErrorIs(t, err, errBoom)
	requireAbsent(t, b, "rerr/k")
	put(t, b, "rerr/k", body, storage.PutOptions{IfAbsent: true})
}

func testLargeShortBody(t *testing.T, b storage.Backend) {
	body := randBytes(t, LargeSize)
	_, err := b.Put(context.Background(), "bigshort/k", bytes.NewReader(body[:LargeSize-1000]), LargeSize, storage.PutOptions{})
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	requireAbsent(t, b, "bigshort/k")
	_, err = b.Put(context.Background(), "bigshort/e", &failingReader{r: bytes.NewReader(body), n: 5<<20 + 100, err: errBoom}, LargeSize, storage.PutOptions{})
	require.ErrorIs(t, err, errBoom)
	requireAbsent(t, b, "bigshort/e")
}

// stallingReader yields two chunks, cancels the put's context while
// yielding the second, and then stalls like an uploader gone quiet until
// the cancellation reaches it, as a network body closed on cancel does.
type stallingReader struct {
	ctx    context.Context
	body   []byte
	reads  int
	cancel context.CancelFunc
}

func (s *stallingReader) Read(p []byte) (int, error) {
	s.reads++
	if s.reads <= 2 {
		if s.reads == 2 {
			s.cancel()
		}
		n := copy(p, s.body[:min(len(p), 4096)])
		s.body = s.body[n:]
		return n, nil
	}
	<-s.ctx.Done()
	return 0, s.ctx.Err()
}

func testCancelMidPut(t *testing.T, b storage.Backend) {
	for _, ifAbsent := range []bool{false, true} {
		key := fmt.Sprintf("cancel/%v", ifAbsent)
		ctx, cancel := context.WithCancel(context.Background())
		r := &stallingReader{ctx: ctx, body: randBytes(t, 1<<20), cancel: cancel}
		_, err := b.Put(ctx, key, r, 1<<20, storage.PutOptions{IfAbsent: ifAbsent})
		require.ErrorIs(t, err, context.Canceled)
		requireAbsent(t, b, key)
		// The key is still free.
		put(t, b, key, []byte("later"), storage.PutOptions{IfAbsent: true})
	}
}

func testInvalidKeys(t *testing.T, b storage.Backend) {
	for _, key := range []string{"", "/abs", "a//b", "a/../b", "..", "a/./b", "a/", "nul\x00byte"} {
		_, err := b.Put(context.Background(), key, strings.NewReader("x"), 1, storage.PutOptions{})
		require.Error(t, err, "put %q", key)
		_, err = b.Stat(context.Background(), key)
		require.Error(t, err, "stat %q", key)
	}
	objs, err := b.List(context.Background(), "", "", 100)
	require.NoError(t, err)
	require.Empty(t, objs)
}

func keysOf(objs []storage.ObjectInfo) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.Key
	}
	return out
}

func putAll(t testing.TB, b storage.Backend, keys []string, size int) {
	t.Helper()
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(16)
	body := randBytes(t, size)
	for _, k := range keys {
		g.Go(func() error {
			_, err := b.Put(ctx, k, bytes.NewReader(body), int64(size), storage.PutOptions{})
			return err
		})
	}
	require.NoError(t, g.Wait())
}

func testListPages(t *testing.T, b storage.Backend) {
	// Nested and flat names mixed, so that directory walks must still
	// yield plain byte order ("a-b" < "a/b" < "a0").
	// (No key is also a prefix of another, e.g. "l/a" with "l/a/b": a
	// file system cannot hold both, and the key layout never needs it.)
	keys := []string{"l/a-b", "l/a/b", "l/a/c/d", "l/a0", "l/b", "l/a/c-e", "l/a/c/e/f"}
	for i := range 20 {
		keys = append(keys, fmt.Sprintf("l/n/%03d", i), fmt.Sprintf("l/h/%02d/%d", i%3, i))
	}
	putAll(t, b, keys, 10)
	want := append([]string(nil), keys...)
	sort.Strings(want)

	var got []string
	after := ""
	pages := 0
	for {
		objs, err := b.List(context.Background(), "l/", after, 7)
		require.NoError(t, err)
		pages++
		for _, o := range objs {
			assert.Equal(t, int64(10), o.Size, o.Key)
			assert.False(t, o.ModTime.IsZero(), o.Key)
		}
		got = append(got, keysOf(objs)...)
		if len(objs) < 7 {
			break
		}
		after = objs[len(objs)-1].Key
		require.Less(t, pages, 100)
	}
	require.Equal(t, want, got)
	require.Greater(t, pages, 2)

	// after need not be a stored key.
	objs, err := b.List(context.Background(), "l/", "l/a/c", 3)
	require.NoError(t, err)
	require.Equal(t, []string{"l/a/c-e", "l/a/c/d", "l/a/c/e/f"}, keysOf(objs))

	var walked []string
	require.NoError(t, storage.Walk(context.Background(), b, "l/", func(o storage.ObjectInfo) error {
		walked = append(walked, o.Key)
		return nil
	}))
	require.Equal(t, want, walked)
}

func testListPrefix(t *testing.T, b storage.Backend) {
	keys := []string{"p/x/1", "p/x/2", "p/x/sub/3", "p/xy/4", "p/x-5", "p/other/6", "q/x/7", "p/x.zst"}
	putAll(t, b, keys, 1)
	cases := map[string][]string{
		"p/x/":     {"p/x/1", "p/x/2", "p/x/sub/3"},
		"p/x":      {"p/x-5", "p/x.zst", "p/x/1", "p/x/2", "p/x/sub/3", "p/xy/4"},
		"p/x/s":    {"p/x/sub/3"},
		"p/x/sub/": {"p/x/sub/3"},
		"p/":       {"p/other/6", "p/x-5", "p/x.zst", "p/x/1", "p/x/2", "p/x/sub/3", "p/xy/4"},
		"q":        {"q/x/7"},
		"p/none/":  nil,
		"p/x/1/":   nil,
		"zzz":      nil,
		"":         {"p/other/6", "p/x-5", "p/x.zst", "p/x/1", "p/x/2", "p/x/sub/3", "p/xy/4", "q/x/7"},
	}
	for prefix, want := range cases {
		objs, err := b.List(context.Background(), prefix, "", 100)
		require.NoError(t, err, prefix)
		got := keysOf(objs)
		if len(want) == 0 {
			require.Empty(t, got, "prefix %q", prefix)
			continue
		}
		require.Equal(t, want, got, "prefix %q", prefix)
	}
	objs, err := b.List(context.Background(), "p/x/", "p/x/1", 1)
	require.NoError(t, err)
	require.Equal(t, []string{"p/x/2"}, keysOf(objs))
	objs, err = b.List(context.Background(), "p/x/", "", 0)
	require.NoError(t, err)
	require.Empty(t, objs)
}

func testDeleteMany(t *testing.T, b storage.Backend) {
	// More than one S3 multi-object delete request's worth.
	keys := make([]string, 0, 1101)
	for i := range 1101 {
		keys = append(keys, fmt.Sprintf("del/%02d/%04d", i%7, i))
	}
	putAll(t, b, keys, 1)
	put(t, b, "keep/me", []byte("k"), storage.PutOptions{})
	objs, err := b.List(context.Background(), "del/", "", 2000)
	require.NoError(t, err)
	require.Len(t, objs, len(keys))

	// Missing keys mixed in are fine.
	require.NoError(t, b.Delete(context.Background(), append(keys, "del/missing", "never/was")))
	objs, err = b.List(context.Background(), "", "", 2000)
	require.NoError(t, err)
	require.Equal(t, []string{"keep/me"}, keysOf(objs))
	requireAbsent(t, b, keys[0])
	requireAbsent(t, b, keys[len(keys)-1])

	// The emptied prefix takes new objects again.
	put(t, b, keys[3], []byte("again"), storage.PutOptions{IfAbsent: true})
	data, _ := get(t, b, keys[3], 0, -1)
	require.Equal(t, "again", string(data))
}

func testDeleteMissing(t *testing.T, b storage.Backend) {
	require.NoError(t, b.Delete(context.Background(), []string{"a/b/c", "x"}))
	require.NoError(t, b.Delete(context.Background(), nil))
	require.Error(t, b.Delete(context.Background(), []string{"../escape"}))
}

func testPing(t *testing.T, b storage.Backend) {
	require.NoError(t, b.Ping(context.Background()))
}
