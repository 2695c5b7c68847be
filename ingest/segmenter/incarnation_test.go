package segmenter

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/ingest"
)

// A spooled segment of a stream deleted and created again with the same id
// belongs to the earlier stream: the upload retry must drop it, not store
// it into the new one.
func TestUploadJobIncarnation(t *testing.T) {
	reg := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cur := accounts.Stream{ID: "s1", RegisteredAt: reg}
	for _, tc := range []struct {
		name string
		job  uploadJob
		want bool
	}{
		{"same stream", uploadJob{registered: reg, seg: index.Segment{Start: reg.Add(time.Hour).UnixMilli()}}, true},
		{"earlier stream", uploadJob{registered: reg.Add(-time.Hour), seg: index.Segment{Start: reg.Add(-time.Minute).UnixMilli()}}, false},
		// Its start says nothing once the incarnation is known.
		{"earlier stream, start after", uploadJob{registered: reg.Add(-time.Hour), seg: index.Segment{Start: reg.Add(time.Minute).UnixMilli()}}, false},
		{"earlier run, recorded after registration", uploadJob{seg: index.Segment{Start: reg.Add(time.Second).UnixMilli()}}, true},
		{"earlier run, recorded before registration", uploadJob{seg: index.Segment{Start: reg.Add(-time.Second).UnixMilli()}}, false},
	} {
		if got := tc.job.incarnationOf(cur); got != tc.want {
			t.Errorf("%s: incarnationOf = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// recreatingStorer fails the first store (storage down) after the stream
// was deleted and created again with the same ids, so the segment waits
// in the spool for a retry.
type recreatingStorer struct {
	Storer
	reg   *fakeRegistry
	once  sync.Once
	calls atomic.Int32
}

func (s *recreatingStorer) Store(ctx context.Context, st accounts.Stream, seg index.Segment, body io.Reader, opts ...ingest.StoreOption) (index.Segment, bool, error) {
	first := false
	s.once.Do(func() {
		first = true
		s.reg.mu.Lock()
		cur := s.reg.streams[st.ID]
		cur.RegisteredAt = time.Now()
		s.reg.streams[st.ID] = cur
		s.reg.mu.Unlock()
	})
	if first {
		return index.Segment{}, false, errors.New("storage down")
	}
	s.calls.Add(1)
	return s.Storer.Store(ctx, st, seg, body, opts...)
}

// TestSpooledSegmentOfRecreatedStreamDropped: a recorded segment waiting in
// the store retry while its camera is deleted and created again is dropped,
// not stored into the new stream.
func TestSpooledSegmentOfRecreatedStreamDropped(t *testing.T) {
	src := makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25")
	g := newRig(t, time.Minute)
	g.reg.mu.Lock()
	st := g.reg.streams["cam1-main"]
	st.RegisteredAt = time.Now().Add(-time.Hour)
	g.reg.streams["cam1-main"] = st
	g.reg.mu.Unlock()
	rs := &recreatingStorer{Storer: g.ing, reg: g.reg}
	g.rec.store = rs
	publish(t, g, "cam1-main", src, time.Now().Add(-time.Minute), src.packets()).Close(nil)
	g.rec.uploads.Wait()
	if segs := g.segments(t, "cam1-main"); len(segs) != 0 {
		t.Errorf("the re-created stream holds %d segments of the deleted one", len(segs))
	}
	if n := rs.calls.Load(); n != 0 {
		t.Errorf("%d stores of the deleted stream's segment after the first", n)
	}
	if v := value(g.rec.m.segments.WithLabelValues("dropped_deleted_stream")); v != 1 {
		t.Errorf("dropped_deleted_stream = %v, want 1", v)
	}
	if left, _ := filepath.Glob(filepath.Join(g.rec.cfg.SpoolDir, "cam1-main", "*")); len(left) != 0 {
		t.Errorf("spool after the drop: %v", left)
	}
}
