package ingest

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
)

// sizeLog is a UsageRecorder that keeps the observed sizes it is given.
type sizeLog struct {
	usageLog
	mu    sync.Mutex
	sizes []string
}

func (u *sizeLog) Created(putID, stream string, size int64, w, h int) {
	u.usageLog.Created(putID, stream, size, w, h)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sizes = append(u.sizes, strconv.Itoa(w)+"x"+strconv.Itoa(h))
}

// TestObservedResolutionFromMedia: the index, the object's metadata and
// usage get the picture size of the SPS; the query's width and height are
// a hint kept only when the media has none, and a wrong one is counted.
func TestObservedResolutionFromMedia(t *testing.T) {
	box := func(typ string, body []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
		return append(append(b, typ...), body...)
	}
	garbage := make([]byte, 300)
	_, _ = rand.Read(garbage)
	// A moov that is a box, but not an init section: an (empty) mvex says
	// fragmented, so it passes the upload's format check, then garbage.
	badInit := bytes.Join([][]byte{box("ftyp", []byte("isom\x00\x00\x02\x00")), box("moov", append(box("mvex", nil), garbage...)), segment(t, 100)}, nil)

	cases := []struct {
		name, ct, query string
		body            func(t *testing.T) []byte
		want            string
		mismatch        bool
	}{
		{"fmp4-1080p-no-claim", "video/mp4", "", func(t *testing.T) []byte { return testutil.FFmpegSegment(t, "1920x1080", "libx264", "mp4") }, "1920x1080", false},
		{"fmp4-720p-claims-2160p", "video/mp4", "&width=3840&height=2160", func(t *testing.T) []byte { return testutil.FFmpegSegment(t, "1280x720", "libx264", "mp4") }, "1280x720", true},
		{"fmp4-720p-right-claim", "video/mp4", "&width=1280&height=720", func(t *testing.T) []byte { return testutil.FFmpegSegment(t, "1280x720", "libx264", "mp4") }, "1280x720", false},
		{"fmp4-h265", "video/mp4", "&width=640", func(t *testing.T) []byte { return testutil.FFmpegSegment(t, "640x360", "libx265", "mp4") }, "640x360", false},
		{"ts-h264", "video/mp2t", "&width=1920&height=1080", func(t *testing.T) []byte { return testutil.FFmpegSegment(t, "1280x720", "libx264", "mpegts") }, "1280x720", true},
		{"ts-h265", "video/mp2t", "", func(t *testing.T) []byte { return testutil.FFmpegSegment(t, "640x360", "libx265", "mpegts") }, "640x360", false},
		{"no-sps-keeps-claim", "video/mp4", "&width=640&height=480", func(t *testing.T) []byte { return segment(t, 1000) }, "640x480", false},
		{"no-sps-no-claim", "video/mp4", "", func(t *testing.T) []byte { return segment(t, 1000) }, "0x0", false},
		{"malformed-init-keeps-claim", "video/mp4", "&width=800&height=600", func(*testing.T) []byte { return badInit }, "800x600", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			u := &sizeLog{}
			e := newEnv(t, func(cfg *Config, _ *storage.Backend, _ *Index) { cfg.Usage = u; cfg.MaxBodyBytes = 8 << 20 })
			body := c.body(t)
			start := now.Add(-time.Second).UnixMilli()
			r := e.do(t, put{start: strconv.FormatInt(start, 10), ct: c.ct, body: body, query: "duration_ms=2000" + c.query})
			require.Equal(t, 201, r.status, r.body)
			assert.Equal(t, sum(body), r.body["sha256"], "the stored body is the whole body")

			segs := indexed(t, e.idx, ref1)
			require.Len(t, segs, 1)
			assert.Equal(t, c.want, strconv.Itoa(segs[0].Width)+"x"+strconv.Itoa(segs[0].Height), "index")
			assert.Equal(t, []string{c.want}, u.sizes, "usage")
			stored, info := readObject(t, e.store, ref1.SegmentKey(start))
			assert.Equal(t, body, stored)
			if segs[0].Width > 0 {
				assert.Equal(t, strconv.Itoa(segs[0].Width), info.Metadata[index.MetaWidth], "object metadata")
			}
			want := 0.0
			if c.mismatch {
				want = 1
			}
			assert.Equal(t, want, metricValue(t, e.prom, "vigil_ingest_resolution_mismatch_total", nil))
		})
	}
}

// A retry of the same real segment with another claim answers 200 and
// keeps the media's size.
func TestObservedResolutionRetry(t *testing.T) {
	e := newEnv(t, func(cfg *Config, _ *storage.Backend, _ *Index) { cfg.MaxBodyBytes = 8 << 20 })
	body := testutil.FFmpegSegment(t, "1280x720", "libx264", "mp4")
	start := strconv.FormatInt(now.Add(-time.Second).UnixMilli(), 10)
	require.Equal(t, 201, e.do(t, put{start: start, body: body}).status)
	r := e.do(t, put{start: start, body: body, query: "duration_ms=2000&width=320&height=240"})
	require.Equal(t, 200, r.status, r.body)
	segs := indexed(t, e.idx, ref1)
	require.Len(t, segs, 1)
	assert.Equal(t, [2]int{1280, 720}, [2]int{segs[0].Width, segs[0].Height})
}
