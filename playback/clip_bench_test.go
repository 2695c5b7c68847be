package playback

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/storage"
	fsstore "github.com/vigilcloud/vigil/storage/fs"
)

// BenchmarkClip is clip.mp4 over 100 stored 2-s segments of 600 kB, in
// process: MB/s against reading the same objects raw, and the time to the
// clip's first byte.
func BenchmarkClip(b *testing.B) {
	ctx := context.Background()
	store, err := fsstore.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	idx := embedded.New(store, embedded.Options{})
	const n = 100
	var total int64
	for i, seg := range syntheticSegments(b, n, 12_000) {
		start := base + int64(i)*2000
		if _, err := store.Put(ctx, ref.SegmentKey(start), bytes.NewReader(seg), int64(len(seg)), storage.PutOptions{ContentType: "video/mp4"}); err != nil {
			b.Fatal(err)
		}
		if _, _, err := idx.Add(ctx, ref, index.Segment{Start: start, DurationMS: 2000, Size: int64(len(seg)), ContentType: "video/mp4"}); err != nil {
			b.Fatal(err)
		}
		total += int64(len(seg))
	}
	reg := &fakeRegistry{streams: map[string]accounts.Stream{"s1": {ID: "s1", Camera: "cam1", Bridge: "b1", Account: "acct"}}}
	h := New(store, idx, reg, nil)
	b.Run("raw", func(b *testing.B) {
		b.SetBytes(total)
		for range b.N {
			for i := range n {
				rc, _, err := store.Get(ctx, ref.SegmentKey(base+int64(i)*2000), 0, -1)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, rc)
				rc.Close()
			}
		}
	})
	b.Run("clip", func(b *testing.B) {
		b.SetBytes(total)
		var ttfb time.Duration
		for range b.N {
			req, _ := http.NewRequestWithContext(auth.WithPrincipal(ctx, auth.Principal{Kind: auth.Operator}), http.MethodGet,
				"/v1/streams/s1/clip.mp4"+window(base, base+n*2000), nil)
			var written atomic.Int64
			w := &firstByteWriter{lagWriter: lagWriter{hdr: http.Header{}, written: &written}, began: time.Now()}
			h.ServeHTTP(w, req)
			if w.status != 0 && w.status != http.StatusOK || written.Load() < total*9/10 {
				b.Fatalf("clip: %d, %d bytes", w.status, written.Load())
			}
			ttfb += w.first
		}
		b.ReportMetric(float64(ttfb.Microseconds())/float64(b.N)/1000, "ms-ttfb")
	})
}

type firstByteWriter struct {
	lagWriter
	began time.Time
	first time.Duration
}

func (w *firstByteWriter) Write(p []byte) (int, error) {
	if w.first == 0 {
		w.first = time.Since(w.began)
	}
	return w.lagWriter.Write(p)
}
