package playback

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
	fsstore "github.com/vigilcloud/vigil/storage/fs"
)

// mediaEnv is an in-process node: the real ingest PUT handler and the
// playback handler on one mux behind the auth middleware, as cmd/vigil
// mounts them, over the fs backend and the embedded index.
type mediaEnv struct {
	*env
	clock atomic.Int64 // Unix ms; 0 = time.Now
}

func newMediaEnv(t *testing.T, opts Options) *mediaEnv {
	t.Helper()
	fsb, err := fsstore.New(t.TempDir())
	require.NoError(t, err)
	idx := embedded.New(fsb, embedded.Options{})
	reg := &fakeRegistry{streams: map[string]accounts.Stream{
		"s1": {ID: "s1", Camera: "cam1", Bridge: "b1", Account: "acct", RetentionDays: 30},
		"s2": {ID: "s2", Camera: "cam1", Bridge: "b1", Account: "acct", RetentionDays: 30},
	}}
	m := &mediaEnv{}
	opts.URLKey = DeriveURLKey(adminToken)
	opts.Now = func() time.Time {
		if ms := m.clock.Load(); ms != 0 {
			return time.UnixMilli(ms)
		}
		return time.Now()
	}
	mux := http.NewServeMux()
	mux.Handle(ingest.SegmentPattern, ingest.New(ingest.Config{Registerer: prometheus.NewRegistry()}, fsb, idx, reg))
	mux.Handle(Pattern, NewWithOptions(fsb, idx, reg, opts))
	authn := auth.New(adminToken, bridgeTokens{"b1-token": "b1"})
	srv := httptest.NewServer(authn.Middleware(mux, HasURLSignature))
	t.Cleanup(srv.Close)
	m.env = &env{srv: srv, store: fsb, idx: idx, bodies: map[int64][]byte{}}
	return m
}

// put uploads body with the real HTTP PUT, as a bridge does.
func (m *mediaEnv) put(t *testing.T, stream string, start, durMS int64, body []byte, ctype string, query ...string) {
	t.Helper()
	u := fmt.Sprintf("%s/v1/streams/%s/segments/%d?duration_ms=%d", m.srv.URL, stream, start, durMS) + strings.Join(query, "")
	req, err := http.NewRequest(http.MethodPut, u, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer b1-token")
	req.Header.Set("Content-Type", ctype)
	resp, err := m.srv.Client().Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode, "%s", b)
}

// putStored stores and indexes a segment without the upload handler, as
// an object stored before a check ingest makes now.
func (m *mediaEnv) putStored(t *testing.T, stream string, start, durMS int64, body []byte, ctype string) {
	t.Helper()
	ref := storage.StreamRef{Account: "acct", Camera: "cam1", Stream: stream}
	seg := index.Segment{Start: start, DurationMS: durMS, Size: int64(len(body)), ContentType: ctype}
	_, err := m.store.Put(context.Background(), ref.SegmentKey(start), bytes.NewReader(body), seg.Size, storage.PutOptions{ContentType: ctype, Metadata: index.SegmentMetadata(seg)})
	require.NoError(t, err)
	_, _, err = m.idx.Add(context.Background(), ref, seg)
	require.NoError(t, err)
}

// recentBase is a segment start inside the streams' 30-day retention.
func recentBase() int64 { return time.Now().Add(-2 * time.Hour).Truncate(time.Second).UnixMilli() }

// ffmpegSegments makes n consecutive 6-s segments of 320x240 H.264 test
// video (25 fps, a keyframe every 2 s), each self-contained: fragmented
// MP4 (ftyp+moov, then moof+mdat) for "mp4", MPEG-TS for "ts". MPEG-TS
// timestamps run on across segments; ffmpeg's segment muxer starts each
// fMP4 segment's decode times at zero (recorderSegments runs them on).
func ffmpegSegments(t *testing.T, n int, format string) [][]byte {
	t.Helper()
	return ffmpegSegmentsSized(t, n, format, "320x240")
}

// ffmpegSegmentsSized is ffmpegSegments with another frame size (and so
// other parameter sets).
func ffmpegSegmentsSized(t *testing.T, n int, format, size string) [][]byte {
	t.Helper()
	return ffmpegSegmentsCodec(t, n, format, size, "libx264")
}

// ffmpegSegmentsCodec is ffmpegSegmentsSized with another encoder
// (libx264 or libx265).
func ffmpegSegmentsCodec(t *testing.T, n int, format, size, codec string) [][]byte {
	t.Helper()
	key := fmt.Sprint(n, format, size, codec)
	segCache.Lock()
	defer segCache.Unlock()
	if segs, ok := segCache.m[key]; ok {
		return segs
	}
	segs := encodeSegments(t, n, format, size, codec)
	segCache.m[key] = segs
	return segs
}

// segCache keeps the test package's encodes: the same few sets serve
// every test (read only once made).
var segCache = struct {
	sync.Mutex
	m map[string][][]byte
}{m: map[string][][]byte{}}

func encodeSegments(t *testing.T, n int, format, size, codec string) [][]byte {
	t.Helper()
	testutil.RequireBinary(t, "ffmpeg")
	dir := t.TempDir()
	args := []string{"-v", "error", "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=25:duration=%d", size, 6*n),
		"-c:v", codec, "-preset", "ultrafast", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-pix_fmt", "yuv420p"}
	if codec == "libx265" {
		args = append(args, "-x265-params", "log-level=error:scenecut=0", "-tag:v", "hvc1")
	}
	args = append(args, "-f", "segment", "-segment_time", "6")
	ext := "mp4"
	if format == "mp4" {
		args = append(args, "-segment_format", "mp4", "-segment_format_options", "movflags=frag_keyframe+empty_moov+default_base_moof")
	} else {
		ext = "ts"
		args = append(args, "-segment_format", "mpegts")
	}
	args = append(args, filepath.Join(dir, "seg%03d."+ext))
	out, err := exec.Command("ffmpeg", args...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	var segs [][]byte
	for i := range n {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("seg%03d.%s", i, ext)))
		require.NoError(t, err)
		segs = append(segs, b)
	}
	return segs
}

func ffprobeDuration(t *testing.T, path string) float64 {
	t.Helper()
	testutil.RequireBinary(t, "ffprobe")
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path).CombinedOutput()
	require.NoError(t, err, "ffprobe rejects %s: %s", path, out)
	d, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	require.NoError(t, err, "%s", out)
	return d
}

// ffmpegCopy remuxes in (a URL or file) to out.mp4 with -c copy and
// returns the path; extra arguments go before -i.
func ffmpegCopy(t *testing.T, in string, pre ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.mp4")
	args := append([]string{"-v", "error"}, pre...)
	args = append(args, "-i", in, "-c", "copy", "-y", out)
	b, err := exec.Command("ffmpeg", args...).CombinedOutput()
	require.NoError(t, err, "ffmpeg %v: %s", args, b)
	return out
}

// fakeTS is four MPEG-TS packets: framing ingest accepts, no video.
func fakeTS() []byte { return bytes.Repeat(append([]byte{0x47}, make([]byte, 187)...), 4) }

// box is an ISO-BMFF box of typ with n zero bytes of payload.
func box(typ string, n int) []byte {
	b := make([]byte, 8+n)
	b[3] = byte(8 + n)
	copy(b[4:], typ)
	return b
}

func window(from, to int64) string { return fmt.Sprintf("?start=%d&end=%d", from, to) }

// record uploads segs to stream at starts (6 s apart from base when nil).
func (m *mediaEnv) record(t *testing.T, stream string, segs [][]byte, base int64, starts []int64, ctype string) {
	t.Helper()
	for i, b := range segs {
		start := base + int64(i)*6000
		if starts != nil {
			start = starts[i]
		}
		m.put(t, stream, start, 6000, b, ctype)
	}
}

// playlist fetches the VOD playlist of [from, to) with the operator token.
func (m *mediaEnv) playlist(t *testing.T, stream string, from, to int64) (path, pl string) {
	t.Helper()
	path = "/v1/streams/" + stream + "/playlist.m3u8" + window(from, to)
	resp, body := m.get(t, path, adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	assert.Equal(t, "application/vnd.apple.mpegurl", resp.Header.Get("Content-Type"))
	return path, string(body)
}

func TestHLSPlaylistPlaysInFFmpeg(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.record(t, "s1", recorderSegments(t, 4, "320x240", "libx264"), base, nil, "video/mp4")
	path, pl := m.playlist(t, "s1", base, base+24_000)
	for _, want := range []string{"#EXTM3U\n", "#EXT-X-VERSION:7\n", "#EXT-X-PLAYLIST-TYPE:VOD\n", "#EXT-X-TARGETDURATION:6\n", "#EXT-X-ENDLIST\n",
		"#EXT-X-PROGRAM-DATE-TIME:" + time.UnixMilli(base+6000).UTC().Format("2006-01-02T15:04:05.000Z") + "\n"} {
		assert.Contains(t, pl, want)
	}
	// One encoder, one init section: one run, one map.
	assert.Equal(t, 1, strings.Count(pl, "#EXT-X-MAP:URI=\"segments/"), pl)
	assert.Equal(t, 4, strings.Count(pl, "#EXTINF:6.000,\nsegments/"), pl)
	assert.Equal(t, 4, strings.Count(pl, "/media.m4s?exp="), pl)
	assert.NotContains(t, pl, "#EXT-X-DISCONTINUITY")

	out := ffmpegCopy(t, m.srv.URL+path, "-headers", "Authorization: Bearer "+adminToken+"\r\n")
	d := ffprobeDuration(t, out)
	assert.InDelta(t, 24, d, 6, "out.mp4 lasts %.2fs", d)
}

// rewriteAbsolute makes a playlist's relative URIs absolute so that ffmpeg
// can read it from a file, with no header at all: the segments open by
// their signatures alone.
func rewriteAbsolute(t *testing.T, srvURL, stream, pl string) string {
	t.Helper()
	pl = strings.ReplaceAll(pl, "URI=\"segments/", "URI=\""+srvURL+"/v1/streams/"+stream+"/segments/")
	pl = strings.ReplaceAll(pl, "\nsegments/", "\n"+srvURL+"/v1/streams/"+stream+"/segments/")
	f := filepath.Join(t.TempDir(), "pl.m3u8")
	require.NoError(t, os.WriteFile(f, []byte(pl), 0o600))
	return f
}

func TestHLSGapHasDiscontinuityAndPlays(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	// Two segments, a 48-s gap, two more.
	m.record(t, "s1", recorderSegments(t, 4, "320x240", "libx264"), base, []int64{base, base + 6000, base + 60_000, base + 66_000}, "video/mp4")
	_, pl := m.playlist(t, "s1", base, base+72_000)
	require.Equal(t, 1, strings.Count(pl, "#EXT-X-DISCONTINUITY\n"), pl)
	// The tag sits right before the segment after the gap.
	assert.Contains(t, pl, "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:"+time.UnixMilli(base+60_000).UTC().Format("2006-01-02T15:04:05.000Z"))

	f := rewriteAbsolute(t, m.srv.URL, "s1", pl)
	out := ffmpegCopy(t, f, "-protocol_whitelist", "file,http,tcp")
	d := ffprobeDuration(t, out)
	assert.InDelta(t, 24, d, 6, "out.mp4 lasts %.2fs", d)
}

func TestHLSTransportStreamSegmentsPlay(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.record(t, "s2", ffmpegSegments(t, 4, "ts"), base, nil, "video/mp2t")
	path, pl := m.playlist(t, "s2", base, base+24_000)
	assert.NotContains(t, pl, "#EXT-X-MAP")
	assert.Equal(t, 4, strings.Count(pl, "#EXTINF:6.000,\nsegments/"), pl)

	out := ffmpegCopy(t, m.srv.URL+path, "-headers", "Authorization: Bearer "+adminToken+"\r\n")
	d := ffprobeDuration(t, out)
	assert.InDelta(t, 24, d, 6, "out.mp4 lasts %.2fs", d)
}

func TestHLSContentTypeChangeIsDiscontinuity(t *testing.T) {
	e := newEnv(t, nil)
	e.add(t, base, 2000, 100)
	e.add(t, base+2000, 2000, 100)
	h := New(e.store, e.idx, nil, nil)
	var b bytes.Buffer
	segs, err := e.idx.Segments(context.Background(), ref, base, base+4000)
	require.NoError(t, err)
	segs[1].ContentType = "video/mp2t" // same time line, another container
	h.writePlaylist(&b, auth.Principal{Kind: auth.Operator}, "s1", segs, nil, playlistHead{}, time.Now())
	assert.Contains(t, b.String(), "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME")
	assert.Equal(t, 1, strings.Count(b.String(), "#EXT-X-MAP"))
	// And a resolution change.
	segs[1].ContentType, segs[0].Width, segs[0].Height, segs[1].Width, segs[1].Height = "video/mp4", 640, 480, 1280, 720
	b.Reset()
	h.writePlaylist(&b, auth.Principal{Kind: auth.Operator}, "s1", segs, nil, playlistHead{}, time.Now())
	assert.Equal(t, 1, strings.Count(b.String(), "#EXT-X-DISCONTINUITY\n"))
}

var uriRE = regexp.MustCompile(`(?m)(?:URI="|^)(segments/[^"\s]+)`)

// playlistURIs returns the segment URIs a playlist lists, in order.
func playlistURIs(pl string) []string {
	var out []string
	for _, m := range uriRE.FindAllStringSubmatch(pl, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestInitAndMediaParts(t *testing.T) {
	segs := ffmpegSegments(t, 1, "mp4")
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.put(t, "s1", base, 6000, segs[0], "video/mp4")
	seg := "/v1/streams/s1/segments/" + strconv.FormatInt(base, 10)
	moof := bytes.Index(segs[0], []byte("moof")) - 4
	require.Positive(t, moof)

	resp, initB := m.get(t, seg+"/init.mp4", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", initB)
	assert.Equal(t, segs[0][:moof], initB)
	assert.Equal(t, "video/mp4", resp.Header.Get("Content-Type"))
	initTag := resp.Header.Get("ETag")
	assert.True(t, strings.HasSuffix(initTag, `-init"`), initTag)

	resp, mediaB := m.get(t, seg+"/media.m4s", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, segs[0][moof:], mediaB)
	assert.Equal(t, "bytes", resp.Header.Get("Accept-Ranges"))
	mediaTag := resp.Header.Get("ETag")
	assert.NotEqual(t, initTag, mediaTag)

	// init + media is the segment, and plays.
	f := filepath.Join(t.TempDir(), "joined.mp4")
	require.NoError(t, os.WriteFile(f, append(initB, mediaB...), 0o600))
	assert.InDelta(t, 6, ffprobeDuration(t, f), 1)

	// Ranges are within the part.
	resp, b := m.get(t, seg+"/media.m4s", adminToken, map[string]string{"Range": "bytes=8-15"})
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, mediaB[8:16], b)
	assert.Equal(t, fmt.Sprintf("bytes 8-15/%d", len(mediaB)), resp.Header.Get("Content-Range"))
	resp, b = m.get(t, seg+"/init.mp4", adminToken, map[string]string{"Range": "bytes=-4"})
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, initB[len(initB)-4:], b)
	resp, _ = m.get(t, seg+"/init.mp4", adminToken, map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(initB))})
	assert.Equal(t, http.StatusRequestedRangeNotSatisfiable, resp.StatusCode)
	resp, _ = m.get(t, seg+"/media.m4s", adminToken, map[string]string{"If-None-Match": mediaTag})
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)
	resp, b = m.request(t, http.MethodHead, seg+"/media.m4s", adminToken, nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, int64(len(mediaB)), resp.ContentLength)
	assert.Empty(t, b)
}

func TestPartErrors(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.put(t, "s2", base, 6000, fakeTS(), "video/mp2t")
	// Well-formed at the top level, but not fragmented: ftyp, moov, mdat.
	// Ingest refuses these now (415 mp4_not_fragmented); one stored
	// before that is put in storage and the index directly.
	flat := append(append(box("ftyp", 8), box("moov", 16)...), box("mdat", 32)...)
	m.putStored(t, "s1", base, 6000, flat, "video/mp4")

	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"ts has no init", fmt.Sprintf("/v1/streams/s2/segments/%d/init.mp4", base), 404, "not_fmp4"},
		{"ts has no media part", fmt.Sprintf("/v1/streams/s2/segments/%d/media.m4s", base), 404, "not_fmp4"},
		{"mp4 is not media.ts", fmt.Sprintf("/v1/streams/s1/segments/%d/media.ts", base), 404, "not_mpegts"},
		{"not fragmented", fmt.Sprintf("/v1/streams/s1/segments/%d/init.mp4", base), 422, "not_fragmented"},
		{"no segment", fmt.Sprintf("/v1/streams/s1/segments/%d/init.mp4", base+1), 404, "segment_not_found"},
		{"unknown sub-resource", fmt.Sprintf("/v1/streams/s1/segments/%d/other.mp4", base), 404, "not_found"},
		{"bad start", "/v1/streams/s1/segments/yesterday/init.mp4", 400, "bad_time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := m.get(t, tt.path, adminToken, nil)
			assert.Equal(t, tt.status, resp.StatusCode, "%s", b)
			assert.Equal(t, tt.code, code(t, b))
		})
	}
}

func TestPlaylistErrors(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.put(t, "s1", base, 6000, fakeTS(), "video/mp2t")
	day := int64(24 * 3600 * 1000)
	tests := []struct {
		name, path, token string
		status            int
		code              string
	}{
		{"no token", "/v1/streams/s1/playlist.m3u8" + window(base, base+1000), "", 401, "unauthorized"},
		{"bad token", "/v1/streams/s1/playlist.m3u8" + window(base, base+1000), "nope", 401, "unauthorized"},
		{"bridge token", "/v1/streams/s1/playlist.m3u8" + window(base, base+1000), "b1-token", 403, "forbidden"},
		{"empty range", "/v1/streams/s1/playlist.m3u8" + window(base-60_000, base-30_000), adminToken, 404, "no_recordings"},
		{"unknown stream", "/v1/streams/nope/playlist.m3u8" + window(base, base+1000), adminToken, 404, "stream_not_found"},
		{"missing start", "/v1/streams/s1/playlist.m3u8?end=5", adminToken, 400, "bad_time"},
		{"bad end", "/v1/streams/s1/playlist.m3u8?start=5&end=later", adminToken, 400, "bad_time"},
		{"end before start", "/v1/streams/s1/playlist.m3u8" + window(base, base-1), adminToken, 400, "bad_time"},
		{"window over a day", "/v1/streams/s1/playlist.m3u8" + window(base, base+day+1), adminToken, 400, "window_too_large"},
		{"live needs a token", "/v1/streams/s1/live.m3u8", "", 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := m.get(t, tt.path, tt.token, nil)
			assert.Equal(t, tt.status, resp.StatusCode, "%s", b)
			assert.Equal(t, tt.code, code(t, b))
		})
	}
}

func TestSignedURLs(t *testing.T) {
	m := newMediaEnv(t, Options{URLTTL: time.Hour})
	base := recentBase()
	body := fakeTS()
	m.put(t, "s1", base, 6000, body, "video/mp2t")
	m.put(t, "s1", base+6000, 6000, body, "video/mp2t")
	m.put(t, "s2", base, 6000, body, "video/mp2t")
	_, pl := m.get(t, "/v1/streams/s1/playlist.m3u8"+window(base, base+12_000), adminToken, nil)
	uris := playlistURIs(string(pl))
	require.Len(t, uris, 2, "%s", pl)
	signed := "/v1/streams/s1/" + uris[0]
	p0, q0, _ := strings.Cut(signed, "?")
	_, q1, _ := strings.Cut(uris[1], "?")

	resp, b := m.get(t, signed, "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	assert.Equal(t, body, b)
	resp, _ = m.request(t, http.MethodHead, signed, "", nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp, b = m.get(t, signed, "", map[string]string{"Range": "bytes=0-0"})
	assert.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, []byte{0x47}, b)

	expVal, by0, sig0 := splitSigned(t, q0)
	require.Equal(t, "operator", by0)
	tampered := []byte(sig0)
	tampered[0] = 'A' // the first character's 6 bits all count
	if sig0[0] == 'A' {
		tampered[0] = 'B'
	}
	later, _ := strconv.ParseInt(expVal, 10, 64)
	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"no signature", p0, 401, "unauthorized"},
		{"tampered signature", p0 + "?exp=" + expVal + "&by=" + by0 + "&sig=" + string(tampered), 403, "bad_signature"},
		{"later exp with the same sig", p0 + "?exp=" + strconv.FormatInt(later+3600, 10) + "&by=" + by0 + "&sig=" + sig0, 403, "bad_signature"},
		{"sig not base64", p0 + "?exp=" + expVal + "&by=" + by0 + "&sig=%25%25", 403, "bad_signature"},
		{"exp not a number", p0 + "?exp=soon&by=" + by0 + "&sig=" + sig0, 403, "bad_signature"},
		{"another signer with the same sig", p0 + "?exp=" + expVal + "&by=user.u1.acct.admin.t1&sig=" + sig0, 403, "bad_signature"},
		{"signer not a principal", p0 + "?exp=" + expVal + "&by=root&sig=" + sig0, 403, "bad_signature"},
		{"first format (no signer)", p0 + "?exp=" + expVal + "&sig=" + sig0, 403, "signed_url_outdated"},
		{"other segment's signature", p0 + "?" + q1, 403, "bad_signature"},
		{"same start on another stream", strings.Replace(p0, "/s1/", "/s2/", 1) + "?" + q0, 403, "bad_signature"},
		{"init of a signed segment", strings.Replace(p0, "/media.ts", "/init.mp4", 1) + "?" + q0, 403, "bad_signature"},
		{"whole object of a signed media.ts", strings.TrimSuffix(p0, "/media.ts") + "?" + q0, 403, "bad_signature"},
		{"playlist with a signature", "/v1/streams/s1/playlist.m3u8" + window(base, base+12_000) + "&" + q0, 401, "unauthorized"},
		{"recordings with a signature", "/v1/streams/s1/recordings" + window(base, base+12_000) + "&" + q0, 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := m.get(t, tt.path, "", nil)
			assert.Equal(t, tt.status, resp.StatusCode, "%s", b)
			assert.Equal(t, tt.code, code(t, b))
		})
	}
	// A PUT with a signature is still a bridge's business.
	req, err := http.NewRequest(http.MethodPut, m.srv.URL+signed, bytes.NewReader(body))
	require.NoError(t, err)
	resp, err = m.srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	// Expired: the clock moves past exp.
	m.clock.Store(time.Now().Add(2 * time.Hour).UnixMilli())
	resp, b = m.get(t, signed, "", nil)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "bad_signature", code(t, b))
	assert.Contains(t, string(b), "expired")
}

func TestSignedURLsOtherKey(t *testing.T) {
	// A node with another operator token derives another key: it refuses
	// what this one signed.
	a, b := signer{key: DeriveURLKey("one")}, signer{key: DeriveURLKey("two")}
	exp := time.Now().Add(time.Hour)
	op := auth.Principal{Kind: auth.Operator}
	q, ok := a.query("/v1/streams/s1/segments/1", op, exp)
	require.True(t, ok)
	exps, by, sig := splitSigned(t, q)
	p, err := a.verify("/v1/streams/s1/segments/1", exps, &by, sig, time.Now())
	require.NoError(t, err)
	assert.Equal(t, op, p)
	_, err = b.verify("/v1/streams/s1/segments/1", exps, &by, sig, time.Now())
	assert.ErrorIs(t, err, errSigInvalid)
	_, err = signer{}.verify("/v1/streams/s1/segments/1", exps, &by, sig, time.Now())
	assert.ErrorIs(t, err, errSigInvalid)
	_, err = a.verify("/v1/streams/s1/segments/1", exps, &by, sig, exp)
	assert.ErrorIs(t, err, errSigExpired)
}

// splitSigned splits a signed query into its exp, by and sig values.
func splitSigned(t *testing.T, q string) (exp, by, sig string) {
	t.Helper()
	v, err := url.ParseQuery(q)
	require.NoError(t, err)
	require.Len(t, v, 3, q)
	return v.Get(paramExp), v.Get(paramBy), v.Get(paramSig)
}

var seqRE = regexp.MustCompile(`#EXT-X-MEDIA-SEQUENCE:(\d+)`)

// liveNumbers maps each listed segment start to its media sequence number.
func liveNumbers(t *testing.T, pl string) map[int64]int64 {
	t.Helper()
	mm := seqRE.FindStringSubmatch(pl)
	require.NotNil(t, mm, pl)
	seq, _ := strconv.ParseInt(mm[1], 10, 64)
	out := map[int64]int64{}
	for _, u := range playlistURIs(pl) {
		if strings.Contains(u, "/init.mp4") {
			continue
		}
		s, _, _ := strings.Cut(strings.TrimPrefix(u, "segments/"), "/")
		start, err := strconv.ParseInt(s, 10, 64)
		require.NoError(t, err)
		out[start] = seq + int64(len(out))
	}
	return out
}

func TestLivePlaylist(t *testing.T) {
	m := newMediaEnv(t, Options{LiveSegments: 3})
	// A day start, so that the numbering is predictable.
	day := time.Now().Add(-24 * time.Hour).UTC().Truncate(24 * time.Hour).UnixMilli()
	dayNo := day / dayMS
	body := fakeTS()
	for i := range 5 {
		m.put(t, "s1", day+int64(i)*6000, 6000, body, "video/mp2t")
	}
	m.clock.Store(day + 31_000)
	resp, b := m.get(t, "/v1/streams/s1/live.m3u8", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	pl := string(b)
	assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	assert.NotContains(t, pl, "#EXT-X-ENDLIST")
	assert.NotContains(t, pl, "#EXT-X-PLAYLIST-TYPE")
	assert.Contains(t, pl, fmt.Sprintf("#EXT-X-MEDIA-SEQUENCE:%d\n", dayNo*1_000_000+2))
	assert.Contains(t, pl, fmt.Sprintf("#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", dayNo*1_000_000))
	first := liveNumbers(t, pl)
	assert.Equal(t, map[int64]int64{day + 12_000: dayNo*1_000_000 + 2, day + 18_000: dayNo*1_000_000 + 3, day + 24_000: dayNo*1_000_000 + 4}, first)

	// A new segment after a gap: the window slides by one, every segment
	// keeps its number, and the gap is a discontinuity.
	m.put(t, "s1", day+60_000, 6000, body, "video/mp2t")
	m.clock.Store(day + 67_000)
	_, b = m.get(t, "/v1/streams/s1/live.m3u8", adminToken, nil)
	pl = string(b)
	second := liveNumbers(t, pl)
	require.Len(t, second, 3)
	for start, n := range second {
		if old, ok := first[start]; ok {
			assert.Equal(t, old, n, "segment %d renumbered", start)
		}
	}
	assert.Equal(t, dayNo*1_000_000+5, second[day+60_000])
	assert.Equal(t, 1, strings.Count(pl, "#EXT-X-DISCONTINUITY\n"), pl)
	assert.Contains(t, pl, fmt.Sprintf("#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", dayNo*1_000_000))

	// Two more after it: the segment behind the gap is first now, its tag
	// is gone and the discontinuity sequence counts it.
	m.put(t, "s1", day+66_000, 6000, body, "video/mp2t")
	m.put(t, "s1", day+72_000, 6000, body, "video/mp2t")
	m.clock.Store(day + 79_000)
	_, b = m.get(t, "/v1/streams/s1/live.m3u8", adminToken, nil)
	pl = string(b)
	third := liveNumbers(t, pl)
	assert.Equal(t, dayNo*1_000_000+5, third[day+60_000])
	assert.NotContains(t, pl, "#EXT-X-DISCONTINUITY\n")
	assert.Contains(t, pl, fmt.Sprintf("#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", dayNo*1_000_000+1))

	// Nothing recent: an empty live playlist players keep polling.
	m.clock.Store(day + 3_600_000)
	resp, b = m.get(t, "/v1/streams/s1/live.m3u8", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.NotContains(t, string(b), "#EXTINF")
	assert.Contains(t, string(b), "#EXT-X-TARGETDURATION:6\n")
}
