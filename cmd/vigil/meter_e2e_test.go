package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/bench"
)

// TestMeterBillingE2E: a real vigil process; uploads reach the meter's
// usage through the aggregator, the stream view shows storage and the
// observed resolution, the billing run preview is served in JSON and CSV,
// an ended month is final and identical on every request (also after a
// SIGKILL and restart), malformed months are 400, and `vigil meter`
// writes the run to a file.
func TestMeterBillingE2E(t *testing.T) {
	n := startVigil(t, nil)
	token := n.provision("cam-main", "cam-sub")
	ctx := context.Background()
	seg := bench.SyntheticFMP4(64 << 10)
	start := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/streams/cam-main/segments/%d?duration_ms=2000&width=1920&height=1080", n.base, start+int64(i)*2000), bytes.NewReader(seg))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "video/mp4")
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("upload: %d", resp.StatusCode)
		}
	}
	// Usage arrives within a couple of aggregation intervals.
	var view struct {
		SKU           string `json:"sku"`
		StorageBytes  int64  `json:"storage_bytes"`
		SegmentCount  int64  `json:"segment_count"`
		ObservedTier  string `json:"observed_tier"`
		ObservedWidth int    `json:"observed_width"`
		Above         bool   `json:"observed_above_configured"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		must(t, n.api.do(ctx, "GET", "/v1/meter/streams/cam-main", nil, &view))
		if view.SegmentCount == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if view.SegmentCount != 3 || view.StorageBytes != 3*int64(len(seg)) || view.ObservedTier != "HD2" || view.SKU != "HD1-D30" || !view.Above {
		t.Fatalf("meter stream view: %+v", view)
	}

	month := time.Now().UTC().Format("2006-01")
	var prev struct {
		Month   string `json:"month"`
		Final   bool   `json:"final"`
		Summary struct {
			Streams       int            `json:"streams"`
			Subscriptions int            `json:"subscriptions"`
			SKUs          map[string]int `json:"skus"`
		} `json:"summary"`
	}
	must(t, n.api.do(ctx, "GET", "/v1/billing/runs/"+month, nil, &prev))
	if prev.Final || prev.Summary.Streams != 2 || prev.Summary.SKUs["HD1-D30"] != 2 {
		t.Fatalf("preview: %+v", prev)
	}
	csvBody, err := n.api.raw(ctx, "/v1/billing/runs/"+month+"?format=csv&part=items")
	must(t, err)
	rows, err := csv.NewReader(bytes.NewReader(csvBody)).ReadAll()
	must(t, err)
	if len(rows) != 3 || rows[0][6] != "stream" || rows[1][6] != "cam-main" || rows[1][15] != fmt.Sprint(3*len(seg)) {
		t.Fatalf("csv items: %q", rows)
	}

	// Bad input.
	for _, bad := range []string{"2026-13", "abc", "2026-1", "2999-01"} {
		resp, err := authGet(n.base+"/v1/billing/runs/"+bad, e2eToken, "")
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !json.Valid(body) {
			t.Fatalf("month %s: %d %s", bad, resp.StatusCode, body)
		}
	}
	for _, q := range []string{"?format=xml", "?part=nope"} {
		resp, err := authGet(n.base+"/v1/billing/runs/"+month+q, e2eToken, "")
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("%s: %d", q, resp.StatusCode)
		}
	}
	resp, err := authGet(n.base+"/v1/billing/runs/"+month, "wrong-token", "")
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 401 && resp.StatusCode != 403 {
		t.Fatalf("bad token: %d", resp.StatusCode)
	}

	// An ended month is final and the same bytes every time, across a
	// SIGKILL and restart.
	last := time.Now().UTC().AddDate(0, -1, 0).Format("2006-01")
	first, err := n.api.raw(ctx, "/v1/billing/runs/"+last+"?format=csv&part=summary")
	must(t, err)
	firstJSON, err := n.api.raw(ctx, "/v1/billing/runs/"+last)
	must(t, err)
	if !bytes.Contains(firstJSON, []byte(`"final":true`)) {
		t.Fatalf("ended month not final: %s", firstJSON)
	}
	must(t, n.api.do(ctx, "PATCH", "/v1/streams/cam-sub", map[string]any{"retention_days": 90}, nil))
	n.restart()
	again, err := n.api.raw(ctx, "/v1/billing/runs/"+last+"?format=csv&part=summary")
	must(t, err)
	againJSON, err := n.api.raw(ctx, "/v1/billing/runs/"+last)
	must(t, err)
	if !bytes.Equal(first, again) || !bytes.Equal(firstJSON, againJSON) {
		t.Fatalf("final run changed:\n%s\n%s", firstJSON, againJSON)
	}

	// The CLI: billing run to a file, status, history.
	out := filepath.Join(t.TempDir(), "run.csv")
	cli := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		t.Setenv("VIGIL_ADMIN_TOKEN", e2eToken)
		if err := run(ctx, append([]string{"meter"}, append(args, "--server", n.base)...), &stdout, &stderr); err != nil {
			t.Fatalf("vigil meter %v: %v\n%s", args, err, stderr.String())
		}
		return stdout.String()
	}
	cli("billing", month, "--format", "csv", "--part", "items", "-o", out)
	b, err := os.ReadFile(out)
	must(t, err)
	if !strings.Contains(string(b), "cam-main") || !strings.HasPrefix(string(b), "month,final,") {
		t.Fatalf("billing file: %s", b)
	}
	if s := cli("status"); !strings.Contains(s, `"streams": 2`) {
		t.Fatalf("status: %s", s)
	}
	if h := cli("history", "cam-sub"); !strings.Contains(h, "updated") || !strings.Contains(h, "D90") {
		t.Fatalf("history: %s", h)
	}
}
