package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/health"
)

// A Bridge uploads over HTTP after an outage, then stops: its stream turns
// stalled, then offline; the outage is a gap; the reseller sees it all
// under its customer's privacy mode.
func TestHealthStalledThenOffline(t *testing.T) {
	n := startVigil(t, nil, "--health-offline-after", "10s")
	ctx := context.Background()
	must(t, n.api.do(ctx, "POST", "/v1/accounts", map[string]any{"id": "res", "name": "Reseller"}, nil))
	must(t, n.api.do(ctx, "POST", "/v1/accounts", map[string]any{"id": "sub", "name": "Customer", "parent": "res"}, nil))
	var br struct{ Token string }
	must(t, n.api.do(ctx, "POST", "/v1/accounts/sub/bridges", map[string]any{"id": "hbr", "name": "Bridge"}, &br))
	must(t, n.api.do(ctx, "POST", "/v1/bridges/hbr/cameras", map[string]any{"id": "hcam", "name": "Cam", "streams": []map[string]any{
		{"id": "hst", "width": 1280, "height": 720}, {"id": "hidle", "width": 640, "height": 480}}}, nil))
	must(t, n.api.do(ctx, "PATCH", "/v1/accounts/sub", map[string]any{"privacy_mode_allowed": true}, nil))
	must(t, n.api.do(ctx, "PATCH", "/v1/accounts/sub", map[string]any{"privacy_mode": true}, nil))

	body, ctype := realSegment(t, "fmp4")
	upload := func(start int64) {
		t.Helper()
		if code, _ := put(t, n.base, br.Token, "hst", start, body, ctype); code != http.StatusCreated {
			t.Fatalf("upload %d: %d", start, code)
		}
	}
	get := func(path, token string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, n.base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		must(t, err)
		return resp.StatusCode, b
	}
	stream := func(id string) (health.Bridge, health.Stream) {
		t.Helper()
		code, b := get("/v1/accounts/res/health", e2eToken)
		if code != http.StatusOK {
			t.Fatalf("health: %d %s", code, b)
		}
		var rep health.Report
		must(t, json.Unmarshal(b, &rep))
		for _, br := range rep.Bridges {
			for _, c := range br.Cameras {
				for _, s := range c.Streams {
					if s.ID == id {
						return br, s
					}
				}
			}
		}
		t.Fatalf("stream %s not in %s", id, b)
		return health.Bridge{}, health.Stream{}
	}

	// Six seconds recorded two minutes ago, then the bridge was cut off.
	old := time.Now().Add(-2*time.Minute).UnixMilli() / 1000 * 1000
	for i := int64(0); i < 3; i++ {
		upload(old + i*2000)
	}
	// Live again: upload like a Bridge until the stream reports recording.
	var first int64
	var s health.Stream
	for i := 0; ; i++ {
		start := time.Now().UnixMilli() - 2000
		if first == 0 {
			first = start
		}
		upload(start)
		if _, s = stream("hst"); s.State == health.Recording {
			break
		}
		if i == 50 {
			t.Fatalf("never recording: %+v", s)
		}
	}
	if len(s.Gaps) != 1 || s.Gaps[0].Start != old+6000 || s.Gaps[0].End != first {
		t.Fatalf("gaps %+v, want the outage [%d, %d)", s.Gaps, old+6000, first)
	}
	if s.LastSegment == nil || s.LastSegment.DurationMS != 2000 || s.ReceivedAt == 0 {
		t.Fatalf("last segment %+v received %d", s.LastSegment, s.ReceivedAt)
	}
	b, idle := stream("hidle")
	if idle.State != health.Offline || b.ID != "hbr" || b.Account != "sub" || b.State != health.Recording {
		t.Fatalf("idle stream %+v on bridge %+v", idle, b)
	}

	// The Bridge stops: stalled after twice the segment duration, then
	// offline after --health-offline-after.
	var seen []health.State
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		_, s = stream("hst")
		if len(seen) == 0 || seen[len(seen)-1] != s.State {
			seen = append(seen, s.State)
		}
		if s.State == health.Offline {
			break
		}
	}
	if want := []health.State{health.Recording, health.Stalled, health.Offline}; !slices.Equal(seen, want) && !slices.Equal(seen, want[1:]) {
		t.Fatalf("states %v, want %v", seen, want)
	}
	if len(s.Gaps) != 2 || s.Gaps[1].Start != s.LastEnd {
		t.Fatalf("gaps %+v: want the outage and the hole since %d", s.Gaps, s.LastEnd)
	}

	_, metrics := get("/metrics", "")
	if !strings.Contains(string(metrics), `vigil_stream_health{account="sub",state="offline"} 2`) {
		t.Fatalf("metric: %s", grepLines(string(metrics), "vigil_stream_health"))
	}

	for _, tc := range []struct {
		path, token string
		code        int
	}{
		{"/v1/accounts/bad.id/health", e2eToken, http.StatusBadRequest},
		{"/v1/accounts/nobody/health", e2eToken, http.StatusNotFound},
		{"/v1/accounts/sub/health", br.Token, http.StatusForbidden},
		{"/v1/accounts/sub/health?since=soon", e2eToken, http.StatusBadRequest},
	} {
		if code, b := get(tc.path, tc.token); code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.path, code, b, tc.code)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
