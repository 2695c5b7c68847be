package playback

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
)

// recorderSegments makes n consecutive 6-s fMP4 segments of size test
// video with codec (libx264 or libx265), as a recorder that runs decode
// times on writes them: one fragmented encode (a fragment per 2-s GOP)
// cut every three fragments, each piece behind the same init section.
func recorderSegments(t *testing.T, n int, size, codec string) [][]byte {
	t.Helper()
	key := fmt.Sprint("recorder", n, size, codec)
	segCache.Lock()
	defer segCache.Unlock()
	if segs, ok := segCache.m[key]; ok {
		return segs
	}
	testutil.RequireBinary(t, "ffmpeg")
	f := filepath.Join(t.TempDir(), "all.mp4")
	args := []string{"-v", "error", "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=25:duration=%d", size, 6*n),
		"-c:v", codec, "-preset", "ultrafast", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-bf", "0"}
	if codec == "libx265" {
		args = append(args, "-x265-params", "log-level=error:scenecut=0:open-gop=0", "-tag:v", "hvc1")
	}
	args = append(args, "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-y", f)
	out, err := exec.Command("ffmpeg", args...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	init, frags := testutil.SplitFragments(t, f)
	require.Len(t, frags, 3*n, "one fragment per 2-s GOP")
	segs := make([][]byte, n)
	for i := range segs {
		segs[i] = append([]byte(nil), init...)
		for _, fr := range frags[3*i : 3*i+3] {
			segs[i] = append(segs[i], fr...)
		}
	}
	segCache.m[key] = segs
	return segs
}

// splitRuns cuts a playlist at its discontinuities: each run becomes a
// playlist of its own (the head, the run's entries, EXT-X-ENDLIST).
func splitRuns(t *testing.T, pl string) []string {
	t.Helper()
	i := strings.Index(pl, "#EXT-X-PROGRAM-DATE-TIME:")
	require.Positive(t, i, pl)
	head, body := pl[:i], strings.TrimSuffix(pl[i:], "#EXT-X-ENDLIST\n")
	var runs []string
	for _, r := range strings.Split(body, "#EXT-X-DISCONTINUITY\n") {
		runs = append(runs, head+r+"#EXT-X-ENDLIST\n")
	}
	return runs
}

// decodeRun decodes a one-run playlist of stream with ffmpeg (every video
// frame, through the signed URLs alone).
func decodeRun(t *testing.T, m *mediaEnv, stream, run string) testutil.Decoded {
	t.Helper()
	return testutil.Decode(t, rewriteAbsolute(t, m.srv.URL, stream, run), "-protocol_whitelist", "file,http,tcp")
}

// storedFrames counts the video frames of stored segment bodies.
func storedFrames(t *testing.T, segs [][]byte) int {
	t.Helper()
	n := 0
	for i, b := range segs {
		f := filepath.Join(t.TempDir(), fmt.Sprintf("seg%d", i))
		require.NoError(t, os.WriteFile(f, b, 0o600))
		n += testutil.CountFrames(t, f)
	}
	return n
}

// assertRunsDecode checks that pl has one run per element of runs (the
// stored bodies of each, 6 s apiece) and that ffmpeg decodes each run with
// no error into the stored frames and duration.
func assertRunsDecode(t *testing.T, m *mediaEnv, stream, pl string, runs [][][]byte) {
	t.Helper()
	pls := splitRuns(t, pl)
	require.Len(t, pls, len(runs), pl)
	for i, run := range pls {
		got := decodeRun(t, m, stream, run)
		assert.Empty(t, got.Errors, "run %d:\n%s", i, run)
		assert.Equal(t, storedFrames(t, runs[i]), got.Frames, "run %d frames", i)
		assert.InDelta(t, 6*float64(len(runs[i])), got.Duration, 0.001, "run %d duration", i)
		assert.Equal(t, len(runs[i]), strings.Count(run, "#EXTINF:6.000,"), "run %d:\n%s", i, run)
	}
}

// contiguous returns the starts of n segments 6 s apart from base.
func contiguous(base int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = base + int64(i)*6000
	}
	return out
}

// recordRuns uploads runs back to back from base; ctype per run.
func (m *mediaEnv) recordRuns(t *testing.T, stream string, base int64, runs [][][]byte, ctypes []string) {
	t.Helper()
	start := base
	for i, r := range runs {
		m.record(t, stream, r, 0, contiguous(start, len(r)), ctypes[i])
		start += int64(len(r)) * 6000
	}
}

func TestHLSRunsResolutionChange(t *testing.T) {
	testutil.SkipIfShort(t, "encodes 1080p")
	hd := recorderSegments(t, 2, "1280x720", "libx264")
	fhd := recorderSegments(t, 2, "1920x1080", "libx264")
	m := newMediaEnv(t, Options{})
	base := recentBase()
	runs := [][][]byte{hd, fhd, hd}
	m.recordRuns(t, "s1", base, runs, []string{"video/mp4", "video/mp4", "video/mp4"})
	_, pl := m.playlist(t, "s1", base, base+36_000)
	assert.Equal(t, 3, strings.Count(pl, "#EXT-X-MAP:"), pl)
	assert.Equal(t, 2, strings.Count(pl, "#EXT-X-DISCONTINUITY\n"), pl)
	// Each run opens with its own init section.
	for _, at := range []int64{base + 12_000, base + 24_000} {
		ts := strconv.FormatInt(at, 10)
		assert.Contains(t, pl, "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:"+time.UnixMilli(at).UTC().Format("2006-01-02T15:04:05.000Z")+
			"\n#EXT-X-MAP:URI=\"segments/"+ts+"/init.mp4?")
	}
	assertRunsDecode(t, m, "s1", pl, runs)
}

func TestHLSRunsCodecChange(t *testing.T) {
	avc := recorderSegments(t, 2, "320x240", "libx264")
	hevc := recorderSegments(t, 2, "320x240", "libx265")
	m := newMediaEnv(t, Options{})
	base := recentBase()
	runs := [][][]byte{avc, hevc, avc}
	m.recordRuns(t, "s1", base, runs, []string{"video/mp4", "video/mp4", "video/mp4"})
	_, pl := m.playlist(t, "s1", base, base+36_000)
	// Same picture size throughout: only the init sections tell.
	assert.Equal(t, 3, strings.Count(pl, "#EXT-X-MAP:"), pl)
	assert.Equal(t, 2, strings.Count(pl, "#EXT-X-DISCONTINUITY\n"), pl)
	assertRunsDecode(t, m, "s1", pl, runs)
}

func TestHLSRunsGap(t *testing.T) {
	segs := recorderSegments(t, 4, "320x240", "libx264")
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.record(t, "s1", segs, base, []int64{base, base + 6000, base + 60_000, base + 66_000}, "video/mp4")
	_, pl := m.playlist(t, "s1", base, base+72_000)
	assert.Equal(t, 1, strings.Count(pl, "#EXT-X-DISCONTINUITY\n"), pl)
	// The same init section, but the run after a gap opens with its map.
	assert.Equal(t, 2, strings.Count(pl, "#EXT-X-MAP:"), pl)
	assertRunsDecode(t, m, "s1", pl, [][][]byte{segs[:2], segs[2:]})
}

func TestHLSRunsTransportStreamAndFMP4(t *testing.T) {
	ts := ffmpegSegments(t, 2, "ts")
	mp4 := recorderSegments(t, 2, "320x240", "libx264")
	m := newMediaEnv(t, Options{})
	base := recentBase()
	runs := [][][]byte{ts, mp4, ts}
	m.recordRuns(t, "s1", base, runs, []string{"video/mp2t", "video/mp4", "video/mp2t"})
	_, pl := m.playlist(t, "s1", base, base+36_000)
	assert.Equal(t, 1, strings.Count(pl, "#EXT-X-MAP:"), pl)
	assert.Equal(t, 2, strings.Count(pl, "#EXT-X-DISCONTINUITY\n"), pl)
	assert.Equal(t, 4, strings.Count(pl, "/media.ts?"), pl)
	assertRunsDecode(t, m, "s1", pl, runs)
}

func TestHLSRunsRestartedDecodeTimes(t *testing.T) {
	// ffmpeg's segment muxer starts every fMP4 segment at decode time
	// zero: one init section, but each segment is a run of its own.
	segs := ffmpegSegments(t, 3, "mp4")
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.record(t, "s1", segs, base, nil, "video/mp4")
	_, pl := m.playlist(t, "s1", base, base+18_000)
	assert.Equal(t, 2, strings.Count(pl, "#EXT-X-DISCONTINUITY\n"), pl)
	assert.Equal(t, 3, strings.Count(pl, "#EXT-X-MAP:"), pl)
	assertRunsDecode(t, m, "s1", pl, [][][]byte{segs[:1], segs[1:2], segs[2:]})
}

func TestLivePlaylistCountsInitChanges(t *testing.T) {
	avc := recorderSegments(t, 2, "320x240", "libx264")
	hevc := recorderSegments(t, 2, "320x240", "libx265")
	m := newMediaEnv(t, Options{LiveSegments: 2})
	day := time.Now().Add(-24 * time.Hour).UTC().Truncate(24 * time.Hour).UnixMilli()
	seq := day / dayMS * 1_000_000
	live := func(now int64) string {
		m.clock.Store(now)
		resp, b := m.get(t, "/v1/streams/s1/live.m3u8", adminToken, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
		return string(b)
	}
	m.record(t, "s1", [][]byte{avc[0], avc[1], hevc[0]}, day, nil, "video/mp4")
	// The window straddles the change: the tag is listed, a map on each side.
	pl := live(day + 19_000)
	assert.Equal(t, 1, strings.Count(pl, "#EXT-X-DISCONTINUITY\n"), pl)
	assert.Equal(t, 2, strings.Count(pl, "#EXT-X-MAP:"), pl)
	assert.Contains(t, pl, fmt.Sprintf("#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", seq))
	// It slides out: the sequence counts it.
	m.put(t, "s1", day+18_000, 6000, hevc[1], "video/mp4")
	pl = live(day + 25_000)
	assert.NotContains(t, pl, "#EXT-X-DISCONTINUITY\n")
	assert.Equal(t, 1, strings.Count(pl, "#EXT-X-MAP:"), pl)
	assert.Contains(t, pl, fmt.Sprintf("#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", seq+1))
}

func TestInitCacheEvictsLeastRecent(t *testing.T) {
	c := newInitCache(2)
	a, b, d := index.Head{Init: [index.HeadInitBytes]byte{1}}, index.Head{Init: [index.HeadInitBytes]byte{2}}, index.Head{Init: [index.HeadInitBytes]byte{3}}
	c.put("a", a)
	c.put("b", b)
	got, ok := c.get("a") // a is now the most recent
	require.True(t, ok)
	assert.Equal(t, a, got)
	c.put("d", d)
	_, ok = c.get("b")
	assert.False(t, ok, "b should be evicted")
	got, ok = c.get("a")
	assert.True(t, ok)
	assert.Equal(t, a, got)
	got, ok = c.get("d")
	assert.True(t, ok)
	assert.Equal(t, d, got)
	assert.Equal(t, 2, c.ll.Len())
	assert.Len(t, c.m, 2)
}

// countingStore counts the reads of a storage backend.
type countingStore struct {
	storage.Backend
	gets atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, storage.ObjectInfo, error) {
	s.gets.Add(1)
	return s.Backend.Get(ctx, key, off, n)
}

func TestSegHeads(t *testing.T) {
	segs := recorderSegments(t, 3, "320x240", "libx264")
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.record(t, "s1", segs, base, nil, "video/mp4")
	m.put(t, "s1", base+24_000, 6000, fakeTS(), "video/mp2t")
	ctx := context.Background()
	list, err := m.idx.Segments(ctx, ref, base, base+30_000)
	require.NoError(t, err)
	require.Len(t, list, 4)
	// Well-formed at the top level, but not fragmented (ingest may refuse
	// these; one stored before is put in storage directly).
	flat := append(append(box("ftyp", 8), box("moov", 16)...), box("mdat", 32)...)
	flatSeg := index.Segment{Start: base + 18_000, DurationMS: 6000, Size: int64(len(flat)), ContentType: "video/mp4"}
	_, err = m.store.Put(ctx, ref.SegmentKey(flatSeg.Start), bytes.NewReader(flat), flatSeg.Size, storage.PutOptions{ContentType: "video/mp4"})
	require.NoError(t, err)
	list = []index.Segment{list[0], list[1], list[2], flatSeg, list[3]}
	indexedHeads := make([]index.Head, len(list))
	for i := range list {
		// Entries written before ingest recorded heads: read from storage.
		indexedHeads[i], list[i].Head = list[i].Head, index.Head{}
	}

	cs := &countingStore{Backend: m.store}
	h := New(cs, m.idx, nil, nil)
	heads, err := h.segHeads(ctx, ref, list)
	require.NoError(t, err)
	moof := bytes.Index(segs[0], []byte("moof")) - 4
	sum := sha256.Sum256(segs[0][:moof])
	want := [index.HeadInitBytes]byte(sum[:index.HeadInitBytes])
	for i, hd := range heads[:3] {
		assert.Equal(t, want, hd.Init, "segment %d: same encoder, same init section", i)
		assert.Equal(t, uint32(1), hd.Track)
		require.Positive(t, hd.Scale)
		assert.Equal(t, uint64(i)*6*uint64(hd.Scale), hd.TFDT, "segment %d's first decode time", i)
	}
	assert.True(t, continuedBy(heads[0], 6000, heads[1]))
	assert.False(t, continuedBy(heads[0], 6000, heads[2]), "a segment skipped")
	assert.False(t, continuedBy(heads[1], 6000, heads[0]), "decode time went back")
	assert.Equal(t, index.Head{}, heads[3], "not fragmented")
	assert.Equal(t, index.Head{}, heads[4], "MPEG-TS")
	assert.Equal(t, int64(4), cs.gets.Load(), "one head read per fMP4 segment")
	assert.Equal(t, indexedHeads, heads, "ingest recorded the heads playback reads")

	// Cached: only the unfragmented one is read again.
	heads2, err := h.segHeads(ctx, ref, list)
	require.NoError(t, err)
	assert.Equal(t, heads, heads2)
	assert.Equal(t, int64(5), cs.gets.Load())

	// One run, then the unfragmented segment is a run of its own, and
	// the TS after it another.
	var b bytes.Buffer
	h.writePlaylist(&b, auth.Principal{Kind: auth.Operator}, "s1", list, heads, playlistHead{}, time.Now())
	assert.Equal(t, 2, strings.Count(b.String(), "#EXT-X-MAP:"), b.String())
	assert.Equal(t, 2, strings.Count(b.String(), "#EXT-X-DISCONTINUITY\n"), b.String())

	// A storage failure is an error, not a run of its own.
	_, err = New(failingStore{m.store}, m.idx, nil, nil).segHeads(ctx, ref, list)
	assert.ErrorIs(t, err, errStoreDown)
	// A segment gone since it was listed has no head.
	gone := append([]index.Segment(nil), list[0])
	gone[0].Start--
	heads, err = h.segHeads(ctx, ref, gone)
	require.NoError(t, err)
	assert.Equal(t, []index.Head{{}}, heads)
}

// With heads in the index a playlist reads none from storage, and splits
// runs as it does from storage: one run per init section, a discontinuity
// where decode times do not run on.
func TestPlaylistUsesIndexedHeads(t *testing.T) {
	segs := recorderSegments(t, 3, "320x240", "libx264")
	m := newMediaEnv(t, Options{})
	base := recentBase()
	// Segment 1 is left out: decode times jump from 0 to 12 s.
	m.record(t, "s1", [][]byte{segs[0], segs[2]}, base, []int64{base, base + 6_000}, "video/mp4")
	hevc := recorderSegments(t, 1, "320x240", "libx265")
	m.record(t, "s1", hevc, base+12_000, nil, "video/mp4")
	ctx := context.Background()
	list, err := m.idx.Segments(ctx, ref, base, base+18_000)
	require.NoError(t, err)
	require.Len(t, list, 3)
	for _, s := range list {
		require.True(t, s.Head.Known(), "segment %d has its head in the index", s.Start)
	}

	serve := func(h *Handler) string {
		t.Helper()
		q := "?start=" + strconv.FormatInt(base, 10) + "&end=" + strconv.FormatInt(base+18_000, 10)
		w := httptest.NewRecorder()
		h.playlist(w, httptest.NewRequest(http.MethodGet, "/v1/streams/s1/hls/playlist.m3u8"+q, nil), auth.Principal{Kind: auth.Operator}, "s1", ref)
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		return w.Body.String()
	}
	cs := &countingStore{Backend: m.store}
	pl := serve(New(cs, m.idx, nil, nil))
	assert.Zero(t, cs.gets.Load(), "no head read from storage")
	assert.Equal(t, 2, strings.Count(pl, "#EXT-X-DISCONTINUITY\n"), pl)
	assert.Equal(t, 3, strings.Count(pl, "#EXT-X-MAP:"), pl)

	// The same playlist from storage, as for entries without heads.
	bare := make([]index.Segment, len(list))
	for i, s := range list {
		s.Head = index.Head{}
		bare[i] = s
	}
	fromStore, err := New(m.store, m.idx, nil, nil).segHeads(ctx, ref, bare)
	require.NoError(t, err)
	fromIndex, err := New(cs, m.idx, nil, nil).segHeads(ctx, ref, list)
	require.NoError(t, err)
	assert.Equal(t, fromStore, fromIndex)
	assert.Zero(t, cs.gets.Load())
	var b bytes.Buffer
	New(m.store, m.idx, nil, nil).writePlaylist(&b, auth.Principal{Kind: auth.Operator}, "s1", list, fromStore, playlistHead{}, time.Now())
	assert.Equal(t, strings.Count(b.String(), "#EXT-X-DISCONTINUITY\n"), strings.Count(pl, "#EXT-X-DISCONTINUITY\n"))
}

var errStoreDown = fmt.Errorf("store down: %w", fs.ErrClosed)

type failingStore struct{ storage.Backend }

func (failingStore) Get(context.Context, string, int64, int64) (io.ReadCloser, storage.ObjectInfo, error) {
	return nil, storage.ObjectInfo{}, errStoreDown
}
