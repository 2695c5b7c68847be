package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/bench"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

var metricsDocRow = regexp.MustCompile("^\\| `(vigil_[a-z0-9_]+)`")

// documentedMetrics returns the metrics docs/metrics.md lists.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if m := metricsDocRow.FindStringSubmatch(sc.Text()); m != nil {
			if slices.Contains(out, m[1]) {
				t.Errorf("docs/metrics.md lists %s twice", m[1])
			}
			out = append(out, m[1])
		}
	}
	if len(out) == 0 {
		t.Fatal("docs/metrics.md lists no metric")
	}
	return out
}

// exportedMetrics returns the vigil_* metric families a node's /metrics
// has (one # TYPE line each).
func exportedMetrics(t *testing.T, base string) []string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" && strings.HasPrefix(f[2], "vigil_") {
			out = append(out, f[2])
		}
	}
	return out
}

// TestMetricsDocumented runs a real node with RTSP, gives every metric a
// reason to appear (a stream, an upload, a failed authentication, a
// malformed RTSP request), and compares its /metrics with docs/metrics.md
// both ways.
func TestMetricsDocumented(t *testing.T) {
	documented := documentedMetrics(t)
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{RTSP: true})
	token := n.Provision("s1")
	start := time.Now().Add(-10 * time.Second).UnixMilli()
	if code, body := n.Put(token, "s1", start, bench.SyntheticFMP4(4096), "video/mp4"); code != http.StatusCreated {
		t.Fatalf("upload: %d %s", code, body)
	}
	req, _ := http.NewRequest(http.MethodGet, n.Base+"/v1/accounts", nil)
	req.Header.Set("Authorization", "Bearer not-a-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong token: %d, want 401", resp.StatusCode)
	}
	c, err := net.DialTimeout("tcp", n.RTSPAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write([]byte("NOT RTSP\r\n\r\n"))
	_, _ = io.Copy(io.Discard, c) // the server answers and closes
	c.Close()

	// Counters move just after the answers: poll until the sets agree.
	var missing, undocumented []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		exported := exportedMetrics(t, n.Base)
		missing, undocumented = nil, nil
		for _, m := range documented {
			if !slices.Contains(exported, m) {
				missing = append(missing, m)
			}
		}
		for _, m := range exported {
			if !slices.Contains(documented, m) {
				undocumented = append(undocumented, m)
			}
		}
		if len(missing)+len(undocumented) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(undocumented) > 0 {
		t.Errorf("exported but not in docs/metrics.md: %s", strings.Join(undocumented, ", "))
	}
	if len(missing) > 0 {
		t.Errorf("in docs/metrics.md but not exported: %s", strings.Join(missing, ", "))
	}
}
