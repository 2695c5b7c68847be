package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/health"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/fs"
)

// t0 is when the fixture's streams start recording.
var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC).UnixMilli()

const segMS = 6_000

// fixture: reseller r1 with sub-accounts s1 (bridge b1: camera c1 with st1
// and st2) and s2 (bridge b2: camera c2 with st3); reseller r2 (bridge b3:
// camera c3 with st4). The registry is the replicated state machine's, the
// index embedded on an fs store.
type fixture struct {
	t   *testing.T
	reg *accounts.Registry
	idx *embedded.Index
	now time.Time
	chk *health.Checker
}

func newFixture(t *testing.T) *fixture {
	h := machinetest.New(t)
	machinetest.Seed(h)
	for _, c := range []struct {
		bridge, cam string
		streams     []string
	}{{"b1", "c1", []string{"st1", "st2"}}, {"b2", "c2", []string{"st3"}}, {"b3", "c3", []string{"st4"}}} {
		var ns []accounts.NewStream
		for _, s := range c.streams {
			ns = append(ns, accounts.NewStream{ID: s})
		}
		h.Must(cluster.CmdCreateCamera, c.cam, "", accounts.CreateCameraCmd{Bridge: c.bridge, Camera: machinetest.Cam(c.cam, ns...)})
	}
	store, err := fs.New(t.TempDir())
	require.NoError(t, err)
	f := &fixture{t: t, reg: accounts.New(h.M.Accounts, nil, nil), idx: embedded.New(store, embedded.Options{}), now: time.UnixMilli(t0)}
	f.chk = health.New(f.reg, f.idx, health.Config{OfflineAfter: 5 * time.Minute, Now: func() time.Time { return f.now }})
	return f
}

// record adds segments of segMS to stream from..to (Unix ms).
func (f *fixture) record(stream string, from, to int64) {
	f.t.Helper()
	st, err := f.reg.Stream(context.Background(), stream)
	require.NoError(f.t, err)
	ref := storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID}
	for s := from; s < to; s += segMS {
		_, _, err := f.idx.Add(context.Background(), ref, index.Segment{Start: s, DurationMS: segMS, Size: 1000, ContentType: "video/mp4"})
		require.NoError(f.t, err)
	}
}

func (f *fixture) report(account string) health.Report {
	f.t.Helper()
	rep, err := f.chk.Report(context.Background(), account, 0)
	require.NoError(f.t, err)
	return rep
}

func streamOf(t *testing.T, rep health.Report, id string) (health.Bridge, health.Camera, health.Stream) {
	t.Helper()
	for _, b := range rep.Bridges {
		for _, c := range b.Cameras {
			for _, s := range c.Streams {
				if s.ID == id {
					return b, c, s
				}
			}
		}
	}
	t.Fatalf("stream %s not in the report", id)
	return health.Bridge{}, health.Camera{}, health.Stream{}
}

func TestStreamTurnsStalledThenOffline(t *testing.T) {
	f := newFixture(t)
	f.record("st1", t0, t0+60_000)
	end := t0 + 60_000

	f.now = time.UnixMilli(end + 1_000)
	b, c, s := streamOf(t, f.report("s1"), "st1")
	require.Equal(t, health.Recording, s.State)
	require.Equal(t, index.Segment{Start: end - segMS, DurationMS: segMS, Size: 1000, ContentType: "video/mp4"}, *s.LastSegment)
	require.Equal(t, end, s.LastEnd)
	require.NotZero(t, s.ReceivedAt, "recorded by this index")
	require.Empty(t, s.Gaps)
	require.Equal(t, health.Recording, c.State, "a camera is as good as its best stream")
	require.Equal(t, health.Recording, b.State)
	_, _, never := streamOf(t, f.report("s1"), "st2")
	require.Equal(t, health.Offline, never.State, "never recorded")
	require.Nil(t, never.LastSegment)

	f.now = time.UnixMilli(end + 2*segMS) // exactly twice the segment duration
	_, _, s = streamOf(t, f.report("s1"), "st1")
	require.Equal(t, health.Recording, s.State)

	f.now = time.UnixMilli(end + 2*segMS + 1)
	b, _, s = streamOf(t, f.report("s1"), "st1")
	require.Equal(t, health.Stalled, s.State)
	require.Equal(t, health.Stalled, b.State)
	require.Equal(t, []index.Span{{Start: end, End: end + 2*segMS + 1}}, s.Gaps, "the hole up to now")

	f.now = time.UnixMilli(end + 5*60_000 + 1)
	b, _, s = streamOf(t, f.report("s1"), "st1")
	require.Equal(t, health.Offline, s.State)
	require.Equal(t, health.Offline, b.State)
	require.Equal(t, end, b.LastEnd)
}

func TestBridgeOutageIsAGap(t *testing.T) {
	f := newFixture(t)
	f.record("st1", t0, t0+60_000)
	f.record("st1", t0+180_000, t0+240_000) // the bridge was cut off for two minutes
	f.now = time.UnixMilli(t0 + 241_000)
	_, _, s := streamOf(t, f.report("r1"), "st1")
	require.Equal(t, health.Recording, s.State)
	require.Equal(t, []index.Span{{Start: t0 + 60_000, End: t0 + 180_000}}, s.Gaps)

	// The Bridge drains its backlog: the gap closes.
	f.record("st1", t0+60_000, t0+180_000)
	_, _, s = streamOf(t, f.report("r1"), "st1")
	require.Empty(t, s.Gaps)
	require.Equal(t, t0+240_000, s.LastEnd, "the backlog is not the last segment")

	// Gaps before ?since= are not listed.
	f.record("st3", t0, t0+60_000)
	f.record("st3", t0+120_000, t0+240_000)
	rep, err := f.chk.Report(context.Background(), "s2", t0+150_000)
	require.NoError(t, err)
	_, _, s = streamOf(t, rep, "st3")
	require.Empty(t, s.Gaps)
}

func TestGapsAreCapped(t *testing.T) {
	f := newFixture(t)
	for i := int64(0); i < 5; i++ {
		f.record("st4", t0+i*60_000, t0+i*60_000+segMS)
	}
	f.now = time.UnixMilli(t0 + 4*60_000 + segMS)
	chk := health.New(f.reg, f.idx, health.Config{MaxGaps: 2, Now: func() time.Time { return f.now }})
	rep, err := chk.Report(context.Background(), "r2", 0)
	require.NoError(t, err)
	_, _, s := streamOf(t, rep, "st4")
	require.True(t, s.GapsTruncated)
	require.Equal(t, []index.Span{{Start: t0 + 2*60_000 + segMS, End: t0 + 3*60_000}, {Start: t0 + 3*60_000 + segMS, End: t0 + 4*60_000}}, s.Gaps, "the newest kept")
}

func TestScope(t *testing.T) {
	f := newFixture(t)
	ids := func(rep health.Report) []string {
		var out []string
		for _, b := range rep.Bridges {
			out = append(out, b.Account+"/"+b.ID)
		}
		return out
	}
	require.Equal(t, []string{"s1/b1", "s2/b2"}, ids(f.report("r1")), "a reseller sees its sub-accounts")
	require.Equal(t, []string{"s2/b2"}, ids(f.report("s2")), "a sub-account sees only itself")
	require.Equal(t, []string{"r2/b3"}, ids(f.report("r2")))
	_, err := f.chk.Report(context.Background(), "nobody", 0)
	require.ErrorIs(t, err, health.ErrNotFound)
}

func TestStateOf(t *testing.T) {
	const now = 1_000_000
	for _, tc := range []struct {
		lastEnd, dur int64
		ok           bool
		want         health.State
	}{
		{now + 5_000, 6_000, true, health.Recording}, // a Bridge clock ahead
		{now - 12_000, 6_000, true, health.Recording},
		{now - 12_001, 6_000, true, health.Stalled},
		{now - 300_000, 6_000, true, health.Stalled},
		{now - 300_001, 6_000, true, health.Offline},
		{now - 400_000, 300_000, true, health.Recording}, // long segments stall later
		{0, 0, false, health.Offline},
	} {
		require.Equal(t, tc.want, health.StateOf(now, tc.lastEnd, tc.dur, tc.ok, 5*time.Minute), "%+v", tc)
	}
}

func TestHandler(t *testing.T) {
	f := newFixture(t)
	f.record("st1", t0, t0+60_000)
	f.now = time.UnixMilli(t0 + 61_000)
	errNoAccess := errors.New("not yours")
	allow := func(r *http.Request, account string) error {
		if r.Header.Get("Authorization") != "Bearer ok" {
			return errNoAccess
		}
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle(health.Pattern, health.Handler(f.chk, allow))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	get := func(path, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}

	code, body := get("/v1/accounts/s1/health", "ok")
	require.Equal(t, http.StatusOK, code, body)
	var rep health.Report
	require.NoError(t, json.Unmarshal([]byte(body), &rep))
	_, _, s := streamOf(t, rep, "st1")
	require.Equal(t, health.Recording, s.State)

	for _, tc := range []struct {
		path, token string
		code        int
		errCode     string
	}{
		{"/v1/accounts/bad.id/health", "ok", http.StatusBadRequest, "invalid_id"},
		{"/v1/accounts/" + strings.Repeat("a", 65) + "/health", "ok", http.StatusBadRequest, "invalid_id"},
		{"/v1/accounts/nobody/health", "ok", http.StatusNotFound, "unknown_account"},
		{"/v1/accounts/s1/health", "other", http.StatusForbidden, "forbidden"},
		{"/v1/accounts/s1/health?since=yesterday", "ok", http.StatusBadRequest, "invalid_since"},
		{"/v1/accounts/s1/health?since=" + strconv.FormatInt(t0+62_000, 10), "ok", http.StatusBadRequest, "invalid_since"},
		{"/v1/accounts/s1/health?since=1", "ok", http.StatusBadRequest, "invalid_since"},
	} {
		code, body := get(tc.path, tc.token)
		require.Equal(t, tc.code, code, "%s: %s", tc.path, body)
		require.Contains(t, body, `"code":"`+tc.errCode+`"`, tc.path)
	}

	code, body = get("/v1/accounts/s1/health?since="+time.UnixMilli(t0+30_000).UTC().Format(time.RFC3339), "ok")
	require.Equal(t, http.StatusOK, code, body)
	require.NoError(t, json.Unmarshal([]byte(body), &rep))
	require.Equal(t, t0+30_000, rep.Since)

	// Without an Allow nothing passes.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v1/accounts/s1/health", nil)
	req.SetPathValue("id", "s1")
	health.Handler(f.chk, nil).ServeHTTP(rec, req)
	require.Equal(t, http.StatusForbidden, rec.Code)
}

func TestMetric(t *testing.T) {
	f := newFixture(t)
	f.record("st1", t0, t0+60_000)
	f.record("st3", t0, t0+40_000)
	f.now = time.UnixMilli(t0 + 61_000)
	reg := prometheus.NewPedanticRegistry()
	m := health.NewMetrics(f.chk, reg, time.Second)
	// gather returns the exposed value of every account/state.
	gather := func() map[string]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		require.NoError(t, err)
		out := map[string]float64{}
		for _, mf := range mfs {
			require.Equal(t, "vigil_stream_health", mf.GetName())
			for _, m := range mf.GetMetric() {
				lbl := map[string]string{}
				for _, l := range m.GetLabel() {
					lbl[l.GetName()] = l.GetValue()
				}
				out[lbl["account"]+"/"+lbl["state"]] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	// want is the exposition with the counts {recording, stalled, offline}.
	want := func(s1, s2, r2 [3]float64) map[string]float64 {
		out := map[string]float64{}
		for a, n := range map[string][3]float64{"s1": s1, "s2": s2, "r2": r2} {
			for i, st := range health.States {
				out[a+"/"+string(st)] = n[i]
			}
			out[a+"/unknown"] = 0
		}
		return out
	}
	require.Equal(t, want([3]float64{1, 0, 1}, [3]float64{0, 1, 0}, [3]float64{0, 0, 1}), gather())

	// Cached within the refresh interval, recomputed after it.
	f.now = f.now.Add(500 * time.Millisecond)
	f.record("st4", t0, t0+61_000)
	require.Equal(t, 0, m.Counts(context.Background())["r2"][health.Recording])
	f.now = time.UnixMilli(t0 + 61_000 + 5*60_000)
	require.Equal(t, want([3]float64{0, 0, 2}, [3]float64{0, 0, 1}, [3]float64{0, 1, 0}), gather())
}
