package ingest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/media"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
)

// deleteStream marks a stream deleted in the fake registry.
func (f *fakeRegistry) deleteStream(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.streams[id]
	t := now
	s.DeletedAt = &t
	f.streams[id] = s
}

// recreateStream replaces a stream by a new incarnation with the same ids.
func (f *fakeRegistry) recreateStream(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.streams[id]
	s.DeletedAt = nil
	s.RegisteredAt = s.RegisteredAt.Add(time.Hour)
	f.streams[id] = s
}

// hookStore runs after once a Put of key completed.
type hookStore struct {
	storage.Backend
	key   string
	after func()
}

func (h *hookStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) (storage.ObjectInfo, error) {
	info, err := h.Backend.Put(ctx, key, r, size, opts)
	if err == nil && key == h.key {
		h.after()
	}
	return info, err
}

// hookIndex runs after once an Add at start completed.
type hookIndex struct {
	Index
	start int64
	after func()
}

func (h *hookIndex) Add(ctx context.Context, ref storage.StreamRef, seg index.Segment) (index.Segment, bool, error) {
	ex, added, err := h.Index.Add(ctx, ref, seg)
	if err == nil && seg.Start == h.start {
		h.after()
	}
	return ex, added, err
}

func (h *hookIndex) Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Segment, error) {
	return h.Index.(segmentLister).Segments(ctx, ref, from, to)
}

// A stream deleted while its segment was being written: the upload is not
// acknowledged (404), the object is taken back and nothing is indexed or
// counted. Deleted before the index entry is written and after it.
func TestDeletedDuringUploadIsTakenBack(t *testing.T) {
	for _, when := range []string{"after put", "after index add"} {
		t.Run(when, func(t *testing.T) {
			start := now.Add(-time.Second).UnixMilli()
			var counted atomic.Int32
			var e *env
			e = newEnv(t, func(c *Config, s *storage.Backend, i *Index) {
				c.OnStored = func(context.Context, accounts.Stream, index.Segment) { counted.Add(1) }
				del := func() { e.reg.deleteStream("s1") }
				if when == "after put" {
					*s = &hookStore{Backend: *s, key: ref1.SegmentKey(start), after: del}
				} else {
					*i = &hookIndex{Index: *i, start: start, after: del}
				}
			})
			r := e.do(t, put{start: strconv.FormatInt(start, 10), body: segment(t, 100)})
			assert.Equal(t, http.StatusNotFound, r.status, r.body)
			assert.Equal(t, "stream_not_found", r.code)
			assert.Empty(t, objects(t, e.store))
			assert.Empty(t, indexed(t, e.idx, ref1))
			assert.Zero(t, counted.Load(), "usage of a taken-back segment")
		})
	}
}

// A stream deleted and created again with the same ids (same keys) while an
// upload of the old one was being written: the old segment is taken back,
// the new stream's own segment stays stored and indexed.
func TestRecreatedDuringUploadKeepsNewStream(t *testing.T) {
	start := now.Add(-time.Second).UnixMilli()
	var e *env
	e = newEnv(t, func(c *Config, _ *storage.Backend, i *Index) {
		*i = &hookIndex{Index: *i, start: start, after: func() { e.reg.recreateStream("s1") }}
	})
	old := e.reg.streams["s1"]
	newBody := segment(t, 100)
	newStart := now.Add(-10 * time.Second).UnixMilli()

	// The upload of the old stream, with the re-creation during its Add.
	r := e.do(t, put{start: strconv.FormatInt(start, 10), body: segment(t, 100)})
	assert.Equal(t, http.StatusNotFound, r.status, r.body)
	err := accounts.StillAcceptsData(context.Background(), e.reg, old)
	require.ErrorIs(t, err, meter.ErrNotFound, "another incarnation")

	// The new stream stores its own segment.
	r = e.do(t, put{start: strconv.FormatInt(newStart, 10), body: newBody})
	require.Equal(t, http.StatusCreated, r.status, r.body)
	segs := indexed(t, e.idx, ref1)
	require.Len(t, segs, 1)
	assert.Equal(t, newStart, segs[0].Start)
	objs := objects(t, e.store)
	require.Len(t, objs, 1)
	assert.Equal(t, ref1.SegmentKey(newStart), objs[0].Key)

	// A late store of the old incarnation (the recorder's retry) after the
	// new one indexed: taken back, the new stream's index rebuilt intact.
	body := segment(t, 100)
	_, _, err = e.h.Store(context.Background(), old, index.Segment{Start: start + 5000, DurationMS: 2000, Size: int64(len(body)), ContentType: media.ContentTypeMP4}, bytes.NewReader(body))
	require.ErrorIs(t, err, ErrStreamDeleted)
	segs = indexed(t, e.idx, ref1)
	require.Len(t, segs, 1)
	assert.Equal(t, newStart, segs[0].Start)
	require.Len(t, objects(t, e.store), 1)
}

// A retry of a stored segment of a stream deleted since is not a 200, and
// leaves the object to the purge.
func TestRetryAfterDeletionIsNotAcknowledged(t *testing.T) {
	e := newEnv(t)
	body := segment(t, 100)
	start := now.Add(-time.Second).UnixMilli()
	r := e.do(t, put{start: strconv.FormatInt(start, 10), body: body})
	require.Equal(t, http.StatusCreated, r.status, r.body)
	st := e.reg.streams["s1"]
	e.reg.deleteStream("s1")
	_, _, err := e.h.Store(context.Background(), st, index.Segment{Start: start, DurationMS: 2000, Size: int64(len(body)), ContentType: media.ContentTypeMP4}, bytes.NewReader(body))
	require.ErrorIs(t, err, ErrStreamDeleted)
}
