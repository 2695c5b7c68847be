package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/bench"
)

// A bench table names its baseline and ends with one line per goal: met or
// not, and by how much.
func TestPrintBenchNamesBaselineAndGoals(t *testing.T) {
	yes, no := true, false
	res := []bench.Metric{
		{Metric: "s3_1MiB_c16_mbps", Unit: "MB/s", Value: 90, Baseline: 100, Ratio: 0.9, Goal: ">= 0.8x", Met: &yes},
		{Metric: "p99_ms", Unit: "ms", Value: 250, Goal: "< 200", Met: &no},
		{Metric: "updates_per_s", Unit: "1/s", Value: 50000, Goal: "≥ 100000 updates/s and ≥ 20× one update per Apply", Met: &no},
		{Metric: "loss", Unit: "packets", Value: 0, Goal: "0", Met: &yes},
		{Metric: "no_goal", Unit: "s", Value: 1},
	}
	for _, name := range []string{"ingest", "meter", "retention", "rtsp", "playback", "live"} {
		var b strings.Builder
		printBench(&b, name, res, false)
		out := b.String()
		first := strings.SplitN(out, "\n", 2)[0]
		if !strings.Contains(first, "baseline: ") || len(first) < len("bench "+name+" — baseline: ")+10 {
			t.Errorf("%s: first line %q does not name the baseline", name, first)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		goals := lines[len(lines)-4:]
		for i, want := range []string{
			"s3_1MiB_c16_mbps", ">= 0.8x: met (0.90x, +12% against the bound 0.80x)",
			"p99_ms", "< 200: NOT MET (250.00 ms, 25% over the bound 200.00 ms)",
			"updates_per_s", "NOT MET (50000.00 1/s, -50% against the bound 100000.00 1/s)",
			"loss", "0: met (0.00 packets)",
		} {
			if !strings.Contains(goals[i/2], want) || !strings.HasPrefix(goals[i/2], "goal ") {
				t.Errorf("%s: goal line %q lacks %q\n%s", name, goals[i/2], want, out)
			}
		}
	}
}

func TestParseHistoryDays(t *testing.T) {
	days, err := parseDays("1, 30,90,365")
	require.NoError(t, err)
	require.Equal(t, []int{1, 30, 90, 365}, days)
	days, err = parseDays("")
	require.NoError(t, err)
	require.Empty(t, days)
	for _, bad := range []string{"0", "x", "3651", "-1", "1,,2x"} {
		_, err := parseDays(bad)
		require.Error(t, err, bad)
	}
}
