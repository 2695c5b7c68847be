package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/vigilcloud/vigil/internal/testutil"
)

// TestBenchBacklogAndStreamsRun: a smoke test that the two commands run
// end to end at a tiny size (real MinIO, Redis and vigil) and end with
// their JSON line. It checks no figure: benchmarks are not tests.
func TestBenchBacklogAndStreamsRun(t *testing.T) {
	testutil.RequireBinary(t, "minio")
	testutil.RequireBinary(t, "redis-server")
	for _, args := range [][]string{
		{"bench", "backlog", "--bridges", "5", "--cameras", "1", "--segment-duration", "1s", "--phase", "3s", "--runs", "1", "--json"},
		{"bench", "streams", "--streams", "60", "--rounds", "1", "--runs", "1", "--concurrency", "4", "--json"},
	} {
		cmd := exec.Command(vigilBin, append(args, "--work-dir", t.TempDir())...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("vigil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		var r struct {
			Bench   string            `json:"bench"`
			Results []json.RawMessage `json:"results"`
		}
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil || r.Bench != args[1] || len(r.Results) == 0 {
			t.Fatalf("vigil %s: last line is not its results (%v):\n%s", strings.Join(args, " "), err, out)
		}
	}
}
