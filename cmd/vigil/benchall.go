package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vigilcloud/vigil/bench"
)

// allBenches is what `vigil bench all` runs, in order, with the flags that
// keep --quick within ten minutes on a 2-core machine.
var allBenches = []struct {
	name  string
	quick []string
}{
	{"ingest", []string{"--sizes", "256KiB,4MiB", "--concurrency", "16"}},
	{"meter", nil},
	{"retention", nil},
	{"rtsp", nil},
	{"playback", nil},
	{"live", nil},
	{"backlog", nil},
	{"streams", nil},
}

// runBenchAll is `vigil bench all`: every benchmark, one after the other,
// then one table of every figure with its baseline and ratio.
func runBenchAll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newBenchFlags("all", "Every benchmark in turn ("+benchNames()+"), then one summary table: each figure,\nits same-run baseline and the ratio, and whether it meets its goal.", "every benchmark's short run (under ten minutes here)", "where the benchmarks keep data", stdout, stderr)
	only := f.fs.String("only", "", "comma-separated benchmarks to run (default: all)")
	if err := parseFlags(f.fs, args); err != nil {
		return err
	}
	_, dir, cleanup, err := benchSetup(*f.work)
	if err != nil {
		return err
	}
	defer cleanup()
	type row struct {
		bench string
		m     bench.Metric
	}
	var rows []row
	var failed []string
	began := time.Now()
	for _, b := range allBenches {
		if *only != "" && !strings.Contains(","+*only+",", ","+b.name+",") {
			continue
		}
		work := filepath.Join(dir, b.name)
		if err := os.MkdirAll(work, 0o755); err != nil {
			return err
		}
		a := []string{b.name, "--json", "--work-dir", work}
		if *f.quick {
			a = append(append(a, "--quick"), b.quick...)
		}
		fmt.Fprintf(stderr, "bench all: %s (%s)\n", b.name, strings.Join(a[1:], " "))
		t := time.Now()
		var out bytes.Buffer
		if err := runBench(ctx, a, &out, stderr); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(stderr, "bench all: %s failed: %v\n", b.name, err)
			failed = append(failed, b.name)
			continue
		}
		res, err := lastJSON(out.Bytes())
		if err != nil {
			return fmt.Errorf("bench all: %s: %w", b.name, err)
		}
		fmt.Fprintf(stderr, "bench all: %s done in %v\n", b.name, time.Since(t).Round(time.Second))
		for _, m := range res {
			rows = append(rows, row{b.name, m})
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "bench\tfigure\tvalue\tunit\tbaseline\tratio\tgoal")
	for _, r := range rows {
		m := r.m
		goal := ""
		if m.Met != nil {
			goal = m.Goal + map[bool]string{true: " met", false: " NOT MET"}[*m.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%s\t%s\n", r.bench, m.Metric, m.Value, m.Unit, blankZero(m.Baseline), blankZero(m.Ratio), goal)
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "bench all: %d figures in %v", len(rows), time.Since(began).Round(time.Second))
	if len(failed) > 0 {
		fmt.Fprintf(stdout, "; failed: %s", strings.Join(failed, ", "))
	}
	fmt.Fprintln(stdout)
	if *f.asJSON {
		all := make([]bench.Metric, len(rows))
		for i, r := range rows {
			all[i] = r.m
			all[i].Metric = r.bench + "/" + r.m.Metric
		}
		b, _ := json.Marshal(map[string]any{"bench": "all", "results": all})
		fmt.Fprintln(stdout, string(b))
	}
	if len(failed) > 0 {
		return fmt.Errorf("bench all: %s failed", strings.Join(failed, ", "))
	}
	return nil
}

func benchNames() string {
	var n []string
	for _, b := range allBenches {
		n = append(n, b.name)
	}
	return strings.Join(n, ", ")
}

func blankZero(v float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", v)
}

// lastJSON reads the results of a benchmark's --json output: its last line.
func lastJSON(out []byte) ([]bench.Metric, error) {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r struct {
		Results []bench.Metric `json:"results"`
	}
	if len(lines) == 0 || json.Unmarshal([]byte(lines[len(lines)-1]), &r) != nil {
		return nil, errors.New("no JSON results line")
	}
	return r.Results, nil
}
