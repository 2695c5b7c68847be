package playback

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/storage"
)

// getClip fetches clip.mp4 of [from, to) into a file and returns it and
// the response (trailers read).
func (m *mediaEnv) getClip(t *testing.T, stream string, from, to int64) (string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, m.srv.URL+"/v1/streams/"+stream+"/clip.mp4"+window(from, to), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := m.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	f := filepath.Join(t.TempDir(), "clip.mp4")
	require.NoError(t, os.WriteFile(f, b, 0o600))
	return f, resp
}

// checkDecodes decodes f with ffmpeg (no error output allowed) and checks
// that the video packets' decode times increase strictly.
func checkDecodes(t *testing.T, f string) {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-v", "error", "-i", f, "-f", "null", "-").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "ffmpeg decode errors")
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=dts", "-of", "csv=p=0", f).CombinedOutput()
	require.NoError(t, err, "%s", out)
	prev := int64(-1 << 62)
	n := 0
	for _, l := range strings.Fields(string(out)) {
		d, err := strconv.ParseInt(strings.TrimSuffix(l, ","), 10, 64)
		require.NoError(t, err, l)
		require.Greater(t, d, prev, "packet %d: dts %d after %d", n, d, prev)
		prev = d
		n++
	}
	require.Positive(t, n)
}

func TestClipAcrossSegmentBoundary(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.record(t, "s1", ffmpegSegments(t, 4, "mp4"), base, nil, "video/mp4")
	// 10 s from 7 s in: starts in the second segment, ends in the third.
	f, resp := m.getClip(t, "s1", base+7000, base+17_000)
	assert.Equal(t, "video/mp4", resp.Header.Get("Content-Type"))
	assert.Empty(t, resp.Header.Get("X-Vigil-Clip-Gaps"))
	d := ffprobeDuration(t, f)
	assert.InDelta(t, 10, d, 2, "clip lasts %.2fs (10 s ± one 2-s GOP)", d)
	checkDecodes(t, f)
	end, err := strconv.ParseInt(resp.Trailer.Get("X-Vigil-Clip-End"), 10, 64)
	require.NoError(t, err, "trailer %v", resp.Trailer)
	assert.InDelta(t, base+17_000, end, 100)
	assert.Empty(t, resp.Trailer.Get("X-Vigil-Clip-Truncated"))

	// The whole recording, from before it starts to after it ends.
	f, _ = m.getClip(t, "s1", base-5000, base+30_000)
	assert.InDelta(t, 24, ffprobeDuration(t, f), 1)
	checkDecodes(t, f)
}

func TestClipRemovesGaps(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.record(t, "s1", ffmpegSegments(t, 4, "mp4"), base, []int64{base, base + 6000, base + 60_000, base + 66_000}, "video/mp4")
	f, resp := m.getClip(t, "s1", base, base+72_000)
	assert.Equal(t, fmt.Sprintf("%d-%d", base+12_000, base+60_000), resp.Header.Get("X-Vigil-Clip-Gaps"))
	d := ffprobeDuration(t, f)
	assert.InDelta(t, 24, d, 1, "the recorded parts back to back: %.2fs", d)
	checkDecodes(t, f)
}

func TestClipEndsAtParameterChange(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	small := ffmpegSegments(t, 2, "mp4")
	large := ffmpegSegmentsSized(t, 2, "mp4", "640x360")
	// The recorder reports each segment's resolution, as the RTSP one does.
	for i, b := range append(small, large...) {
		dims := "&width=320&height=240"
		if i >= 2 {
			dims = "&width=640&height=360"
		}
		m.put(t, "s1", base+int64(i)*6000, 6000, b, "video/mp4", dims)
	}
	f, resp := m.getClip(t, "s1", base, base+24_000)
	assert.Equal(t, "parameters_changed", resp.Trailer.Get("X-Vigil-Clip-Truncated"))
	end, err := strconv.ParseInt(resp.Trailer.Get("X-Vigil-Clip-End"), 10, 64)
	require.NoError(t, err)
	assert.InDelta(t, base+12_000, end, 100)
	assert.InDelta(t, 12, ffprobeDuration(t, f), 1)
	checkDecodes(t, f)
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0", f).CombinedOutput()
	require.NoError(t, err)
	assert.Equal(t, "320,240", strings.TrimSpace(string(out)))

	// A clip that starts after the change is the new parameters.
	f, _ = m.getClip(t, "s1", base+12_000, base+24_000)
	assert.InDelta(t, 12, ffprobeDuration(t, f), 1)

	// Without resolutions in the index the clip still ends at the change
	// (only the announced duration is the index's longer promise).
	m.record(t, "s2", append(small, large...), base, nil, "video/mp4")
	f, resp = m.getClip(t, "s2", base, base+24_000)
	assert.Equal(t, "parameters_changed", resp.Trailer.Get("X-Vigil-Clip-Truncated"))
	checkDecodes(t, f)
}

func TestClipErrors(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.put(t, "s2", base, 6000, fakeTS(), "video/mp2t")
	// Top-level boxes fine (ingest stores it), but no moov inside.
	m.put(t, "s1", base, 6000, append(box("ftyp", 8), box("mdat", 16)...), "video/mp4")
	clip := func(stream string, from, to int64) string {
		return "/v1/streams/" + stream + "/clip.mp4" + window(from, to)
	}
	tests := []struct {
		name, path, token string
		status            int
		code              string
	}{
		{"no token", clip("s1", base, base+6000), "", 401, "unauthorized"},
		{"invalid token", clip("s1", base, base+6000), "wrong", 401, "unauthorized"},
		{"bridge token", clip("s1", base, base+6000), "b1-token", 403, "forbidden"},
		{"unknown stream", clip("nope", base, base+6000), adminToken, 404, "stream_not_found"},
		{"empty range", clip("s1", base-60_000, base-10_000), adminToken, 404, "no_recordings"},
		{"bad start", "/v1/streams/s1/clip.mp4?start=noon&end=5", adminToken, 400, "bad_time"},
		{"missing end", "/v1/streams/s1/clip.mp4?start=5", adminToken, 400, "bad_time"},
		{"end before start", clip("s1", base, base-1), adminToken, 400, "bad_time"},
		{"malformed MPEG-TS", clip("s2", base, base+6000), adminToken, 422, "malformed_segment"},
		{"malformed segment", clip("s1", base, base+6000), adminToken, 422, "malformed_segment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := m.get(t, tt.path, tt.token, nil)
			assert.Equal(t, tt.status, resp.StatusCode, "%s", b)
			assert.Equal(t, tt.code, code(t, b))
		})
	}
}

// lagStore counts the bytes read from storage; lagWriter the bytes the
// clip wrote. Their difference is what the clip holds at any moment (plus
// what it already threw away).
type lagStore struct {
	storage.Backend
	read    atomic.Int64
	written *atomic.Int64
	maxLag  atomic.Int64
}

func (l *lagStore) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, storage.ObjectInfo, error) {
	rc, info, err := l.Backend.Get(ctx, key, offset, length)
	if err != nil {
		return nil, info, err
	}
	return struct {
		io.Reader
		io.Closer
	}{readFunc(func(p []byte) (int, error) {
		n, err := rc.Read(p)
		lag := l.read.Add(int64(n)) - l.written.Load()
		for old := l.maxLag.Load(); lag > old && !l.maxLag.CompareAndSwap(old, lag); old = l.maxLag.Load() {
		}
		return n, err
	}), rc}, info, nil
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

type lagWriter struct {
	hdr     http.Header
	status  int
	written *atomic.Int64
}

func (w *lagWriter) Header() http.Header         { return w.hdr }
func (w *lagWriter) WriteHeader(code int)        { w.status = code }
func (w *lagWriter) Write(p []byte) (int, error) { w.written.Add(int64(len(p))); return len(p), nil }

// syntheticSegments writes n self-contained fMP4 segments of 2 s (two
// 1-s fragments of 25 frames of frame bytes each, a keyframe first) with
// the parameter sets of media/testdata/sample.mp4.
func syntheticSegments(t testing.TB, n, frame int) [][]byte {
	t.Helper()
	f, err := os.Open("../media/testdata/sample.mp4")
	require.NoError(t, err)
	defer f.Close()
	tracks, _, err := fmp4.NewReader(f).ReadInit()
	require.NoError(t, err)
	tracks[0].TimeScale = 90000
	data := bytes.Repeat([]byte{0, 0, 0, 1, 0x41}, frame/5)
	var segs [][]byte
	dts := uint64(0)
	for i := range n {
		var b bytes.Buffer
		_, err := fmp4.WriteInit(&b, tracks, fmp4.InitOptions{})
		require.NoError(t, err)
		for k := range 2 {
			samples := make([]fmp4.Sample, 25)
			for j := range samples {
				samples[j] = fmp4.Sample{Duration: 3600, Keyframe: j == 0, Data: data}
			}
			_, err := fmp4.WriteFragment(&b, fmp4.Fragment{SequenceNumber: uint32(2*i + k + 1),
				Tracks: []fmp4.TrackFragment{{TrackID: tracks[0].ID, BaseDecodeTime: dts, Samples: samples}}})
			require.NoError(t, err)
			dts += 25 * 3600
		}
		segs = append(segs, b.Bytes())
	}
	return segs
}

func TestClipMemoryBounded(t *testing.T) {
	e := newEnv(t, nil)
	const n, frame = 30, 4000 // 30 segments of 200 kB: 6 MB of video
	segs := syntheticSegments(t, n, frame)
	ctx := context.Background()
	for i, b := range segs {
		start := base + int64(i)*2000
		seg := index.Segment{Start: start, DurationMS: 2000, Size: int64(len(b)), ContentType: "video/mp4"}
		_, err := e.store.Put(ctx, ref.SegmentKey(start), bytes.NewReader(b), int64(len(b)), storage.PutOptions{ContentType: "video/mp4"})
		require.NoError(t, err)
		_, _, err = e.idx.Add(ctx, ref, seg)
		require.NoError(t, err)
	}
	var written atomic.Int64
	ls := &lagStore{Backend: e.store, written: &written}
	reg := &fakeRegistry{streams: map[string]accounts.Stream{"s1": {ID: "s1", Camera: "cam1", Bridge: "b1", Account: "acct", RetentionDays: 30}}}
	h := New(ls, e.idx, reg, nil)
	// Start inside the first segment, so it is also scanned for its keyframe.
	req, err := http.NewRequestWithContext(auth.WithPrincipal(ctx, auth.Principal{Kind: auth.Operator}), http.MethodGet,
		"/v1/streams/s1/clip.mp4"+window(base+1500, base+int64(n)*2000), nil)
	require.NoError(t, err)
	w := &lagWriter{hdr: http.Header{}, written: &written}
	h.ServeHTTP(w, req)
	require.Contains(t, []int{0, http.StatusOK}, w.status)
	total := int64(n * 50 * frame)
	require.Greater(t, ls.read.Load(), total, "the whole range was read")
	require.Greater(t, written.Load(), total*9/10, "and written")
	// One segment (the keyframe scan of the first), a fragment and the
	// 64 KiB read and write buffers: far below the clip's size.
	assert.Less(t, ls.maxLag.Load(), int64(len(segs[0])+2*25*frame+256<<10), "clip held %d bytes of %d", ls.maxLag.Load(), total)
	assert.Equal(t, "X-Vigil-Clip-End, X-Vigil-Clip-Truncated", w.hdr.Get("Trailer"))
}

func TestClipperRebasesRestartingDecodeTimes(t *testing.T) {
	// Every segment's tfdt starts at 0 again (a recorder that restarts per
	// segment): the clip's decode times still run on, sample after sample.
	segs := syntheticSegments(t, 3, 100)
	restart := make([][]byte, len(segs))
	for i := range segs {
		rd := fmp4.NewReader(bytes.NewReader(segs[i]))
		tracks, _, err := rd.ReadInit()
		require.NoError(t, err)
		var b bytes.Buffer
		_, err = fmp4.WriteInit(&b, tracks, fmp4.InitOptions{})
		require.NoError(t, err)
		var first uint64
		for k := 0; ; k++ {
			f, err := rd.NextFragment()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			if k == 0 {
				first = f.Tracks[0].BaseDecodeTime
			}
			f.Tracks[0].BaseDecodeTime -= first
			_, err = fmp4.WriteFragment(&b, f)
			require.NoError(t, err)
		}
		restart[i] = b.Bytes()
	}
	var out bytes.Buffer
	c := newClipper(&out, base+500, base+5000)
	cut, err := keyframeAt(bytes.NewReader(restart[0]), index.Segment{Start: base, DurationMS: 2000}, base+500)
	require.NoError(t, err)
	assert.Equal(t, uint64(0), cut, "the keyframe at the segment's start")
	for i, b := range restart {
		cutUS := int64(-1)
		if i == 0 {
			cutUS = int64(cut)
		}
		require.NoError(t, c.segment(bytes.NewReader(b), index.Segment{Start: base + int64(i)*2000, DurationMS: 2000}, cutUS))
	}
	rd := fmp4.NewReader(&out)
	_, _, err = rd.ReadInit()
	require.NoError(t, err)
	next, samples := uint64(0), 0
	for {
		f, err := rd.NextFragment()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		tf := f.Tracks[0]
		require.Equal(t, next, tf.BaseDecodeTime, "fragment %d", f.SequenceNumber)
		require.True(t, tf.Samples[0].Keyframe || samples > 0)
		for _, s := range tf.Samples {
			next += uint64(s.Duration)
		}
		samples += len(tf.Samples)
	}
	// From 0 s to 5 s of 25 fps: 125 frames (the third segment cut at 1 s).
	assert.Equal(t, 125, samples)
	assert.Equal(t, base+5000, c.lastWall)
}
