package playback

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/live"
)

func TestParseHLSParams(t *testing.T) {
	for q, want := range map[string]hlsParams{
		"":                                {-1, -1},
		"_HLS_msn=5":                      {5, -1},
		"_HLS_msn=5&_HLS_part=0":          {5, 0},
		"_HLS_part=3&_HLS_msn=7":          {7, 3},
		"start=1&_HLS_msn=2":              {2, -1},
		"_HLS_msn=123456789012345678":     {123456789012345678, -1},
		"_HLS_msn=0&_HLS_part=600":        {0, 600},
		"exp=1&sig=x&by=u&_HLS_msn=00009": {9, -1},
	} {
		got, err := parseHLSParams(httptest.NewRequest("GET", "/v1/streams/s/live.m3u8?"+q, nil))
		if assert.NoError(t, err, q) {
			assert.Equal(t, want, got, q)
		}
	}
	for _, q := range []string{"_HLS_msn=", "_HLS_msn=x", "_HLS_msn=-1", "_HLS_msn=+1", "_HLS_msn=1.0", "_HLS_msn=1e3",
		"_HLS_msn=1&_HLS_msn=1", "_HLS_part=1", "_HLS_msn=1&_HLS_part=601", "_HLS_msn=1234567890123456789",
		"_HLS_skip=YES", "_HLS_msn=1&_HLS_part=1&_HLS_part=2", "_HLS_msn=%zz", "_HLS_msn=1;2", "_HLS_msn= 1"} {
		_, err := parseHLSParams(httptest.NewRequest("GET", "/v1/streams/s/live.m3u8?"+strings.ReplaceAll(q, " ", "%20"), nil))
		assert.Error(t, err, q)
	}
}

func FuzzParseHLSParams(f *testing.F) {
	for _, s := range []string{"", "_HLS_msn=1", "_HLS_msn=1&_HLS_part=2", "_HLS_part=1", "_HLS_msn=1&_HLS_msn=2", "_HLS_skip=v2", "%", "_HLS_msn=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest("GET", "/x", nil)
		r.URL.RawQuery = q
		p, err := parseHLSParams(r)
		if err != nil {
			return
		}
		if p.part >= 0 && p.msn < 0 || p.msn < -1 || p.part < -1 || p.part > maxPartIndex {
			t.Fatalf("%q parsed to %+v", q, p)
		}
	})
}

func FuzzParsePartRoute(f *testing.F) {
	for _, s := range []string{"0123456789abcdef/0.m4s", "0123456789abcdef/12.m4s", "x/1.m4s", "0123456789abcdef/-1.m4s", "0123456789abcdef/1", "/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rt, err := parsePartRoute(s)
		if err != nil || rt.kind == routeNone {
			return
		}
		if rt.kind != routeLivePart || !live.ValidSession(rt.session) || rt.start < 0 || partRel(rt.session, rt.start) != "parts/"+s {
			t.Fatalf("%q parsed to %+v", s, rt)
		}
	})
}

func TestBlockedShare(t *testing.T) {
	b := newBlocked(3, 2, nil)
	r1, ok := b.take("a")
	require.True(t, ok)
	_, ok = b.take("a")
	require.True(t, ok)
	_, ok = b.take("a")
	assert.False(t, ok, "one client holds at most its share")
	_, ok = b.take("b")
	require.True(t, ok)
	_, ok = b.take("c")
	assert.False(t, ok, "the node holds at most its total")
	r1()
	_, ok = b.take("c")
	assert.True(t, ok, "a released slot is free again")
}

func TestWindowRequests(t *testing.T) {
	lw := llWindow{seq0: 10, openMSN: 12, openParts: 2, segs: []live.Segment{
		{Closed: true, Parts: make([]live.Part, 6)},
		{Closed: true, Parts: make([]live.Part, 6)},
		{Parts: make([]live.Part, 2)},
	}}
	for _, c := range []struct {
		q              hlsParams
		satisfied, far bool
	}{
		{hlsParams{-1, -1}, true, false},
		{hlsParams{9, -1}, true, false},   // older than the window
		{hlsParams{11, -1}, true, false},  // complete
		{hlsParams{12, -1}, false, false}, // open
		{hlsParams{12, 1}, true, false},
		{hlsParams{12, 2}, false, false}, // the next part
		{hlsParams{11, 6}, true, false},  // past a closed segment's parts: the next segment's first
		{hlsParams{12, 5}, false, false},
		{hlsParams{12, 6}, false, true},
		{hlsParams{13, 0}, false, false},
		{hlsParams{13, 3}, false, false},
		{hlsParams{13, 4}, false, true},
		{hlsParams{14, 0}, false, false},
		{hlsParams{15, 0}, false, true},
	} {
		assert.Equal(t, c.satisfied, lw.satisfied(c.q), "satisfied %+v", c.q)
		assert.Equal(t, c.far, lw.tooFar(c.q), "too far %+v", c.q)
	}
}

// gauge reads a gauge of reg by name (0 when absent).
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// waitBlocked polls until n live requests are held waiting.
func waitBlocked(t *testing.T, reg *prometheus.Registry, n float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for gauge(t, reg, "vigil_live_blocked_requests") != n {
		if time.Now().After(deadline) {
			t.Fatalf("%v requests never held waiting", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLowLatencyHTTP drives the LL-HLS endpoints over HTTP with a live
// window fed as the recorder feeds it.
func TestLowLatencyHTTP(t *testing.T) {
	buf := live.New(live.Config{})
	reg := prometheus.NewRegistry()
	m := newMediaEnv(t, Options{Live: buf, LiveBlockedPerClient: 1, Registerer: reg})
	day := time.Now().UTC().Truncate(24 * time.Hour).UnixMilli()
	start := time.Now().Add(-2 * time.Second).UnixMilli()
	init := []byte("an init section")
	part := func(i int) []byte {
		return append([]byte("\x00\x00\x00\x10moof"), bytes.Repeat([]byte{byte(i)}, 100)...)
	}
	buf.Open("s1", start, init)

	// Before the first part: only the hint.
	resp, b := m.get(t, "/v1/streams/s1/live.m3u8", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	pl := string(b)
	snap, _ := buf.Snapshot("s1")
	assert.Contains(t, pl, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=")
	assert.Contains(t, pl, `#EXT-X-PRELOAD-HINT:TYPE=PART,URI="parts/`+snap.Session+`/0.m4s?`)
	assert.NotContains(t, pl, "#EXT-X-PART:")

	buf.Part("s1", start, [][]byte{part(0)}, time.Second, true)
	buf.Part("s1", start, [][]byte{part(1)}, time.Second, false)
	resp, b = m.get(t, "/v1/streams/s1/live.m3u8", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	pl = string(b)
	seq := day / dayMS * 1_000_000
	assert.Contains(t, pl, fmt.Sprintf("#EXT-X-MEDIA-SEQUENCE:%d\n", seq))
	assert.Contains(t, pl, "#EXT-X-PART-INF:PART-TARGET=1.000\n")
	assert.Contains(t, pl, `#EXT-X-PART:DURATION=1.000,URI="parts/`+snap.Session+`/0.m4s?`)
	assert.Contains(t, pl, "INDEPENDENT=YES")
	assert.Contains(t, pl, fmt.Sprintf(`#EXT-X-MAP:URI="segments/%d/init.mp4?`, start))
	assert.Equal(t, 2, strings.Count(pl, "#EXT-X-PART:"))
	assert.NotContains(t, pl, "#EXTINF", "the open segment has no EXTINF")

	// Held bytes: the parts and the open segment's init section.
	resp, b = m.get(t, "/v1/streams/s1/parts/"+snap.Session+"/1.m4s", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, part(1), b)
	resp, b = m.get(t, fmt.Sprintf("/v1/streams/s1/segments/%d/init.mp4", start), adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, init, b)
	resp, _ = m.get(t, "/v1/streams/s1/parts/"+snap.Session+"/7.m4s", adminToken, nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "a part past the hint")
	resp, _ = m.get(t, "/v1/streams/s1/parts/0123456789abcdef/0.m4s", adminToken, nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "another session")

	// A blocking reload waits for the part; a second one of the same
	// client meanwhile is over its share.
	type answer struct {
		code int
		body string
	}
	got := make(chan answer, 1)
	go func() {
		resp, b := m.get(t, fmt.Sprintf("/v1/streams/s1/live.m3u8?_HLS_msn=%d&_HLS_part=2", seq), adminToken, nil)
		got <- answer{resp.StatusCode, string(b)}
	}()
	waitBlocked(t, reg, 1)
	resp, b = m.get(t, fmt.Sprintf("/v1/streams/s1/live.m3u8?_HLS_msn=%d&_HLS_part=2", seq), adminToken, nil)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", b)
	assert.Contains(t, string(b), "too_many_blocked_requests")
	buf.Part("s1", start, [][]byte{part(2)}, time.Second, false)
	a := <-got
	require.Equal(t, http.StatusOK, a.code, a.body)
	assert.Contains(t, a.body, "/2.m4s?", "the reload returns with the part it waited for")
	waitBlocked(t, reg, 0)

	// The hinted part waits too.
	gotPart := make(chan answer, 1)
	go func() {
		resp, b := m.get(t, "/v1/streams/s1/parts/"+snap.Session+"/3.m4s", adminToken, nil)
		gotPart <- answer{resp.StatusCode, string(b)}
	}()
	waitBlocked(t, reg, 1)
	buf.Part("s1", start, [][]byte{part(3)}, time.Second, false)
	a = <-gotPart
	require.Equal(t, http.StatusOK, a.code)
	assert.Equal(t, string(part(3)), a.body)

	// Too far ahead, and malformed.
	for _, q := range []string{fmt.Sprintf("_HLS_msn=%d", seq+3), fmt.Sprintf("_HLS_msn=%d&_HLS_part=8", seq), "_HLS_part=1", "_HLS_msn=a"} {
		resp, b = m.get(t, "/v1/streams/s1/live.m3u8?"+q, adminToken, nil)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, q)
		assert.Contains(t, string(b), "bad_hls_param", q)
	}

	// Closed: EXTINF and the media from memory until stored.
	buf.Close("s1", start, 4000)
	buf.Open("s1", start+4000, init)
	resp, b = m.get(t, "/v1/streams/s1/live.m3u8", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(b), fmt.Sprintf("#EXTINF:4.000,\nsegments/%d/media.m4s?", start))
	resp, b = m.get(t, fmt.Sprintf("/v1/streams/s1/segments/%d/media.m4s", start), adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, bytes.Join([][]byte{part(0), part(1), part(2), part(3)}, nil), b)

	// A stream not recorded here: the segment window, without parts.
	resp, b = m.get(t, "/v1/streams/s2/live.m3u8?_HLS_msn=5", adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.NotContains(t, string(b), "#EXT-X-PART")

	// The session ends: no hint, and no waiting.
	buf.End("s1")
	resp, b = m.get(t, fmt.Sprintf("/v1/streams/s1/live.m3u8?_HLS_msn=%d&_HLS_part=0", seq+1), adminToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.NotContains(t, string(b), "#EXT-X-PRELOAD-HINT")
}
