package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/vigilcloud/vigil/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: vigil bench ingest [--quick] [--json]")
	}
	switch args[0] {
	case "ingest":
		return runBenchIngest(ctx, args[1:], stdout, stderr)
	default:
		return fmt.Errorf("bench %q: only ingest is built so far", args[0])
	}
}

func runBenchIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("bench ingest", flag.ContinueOnError)
	fset.SetOutput(stderr)
	quick := fset.Bool("quick", false, "a short run (a couple of minutes)")
	asJSON := fset.Bool("json", false, "print the results as one JSON object on the last line")
	runs := fset.Int("runs", 3, "repetitions of every case; medians are reported")
	work := fset.String("work-dir", "", "where MinIO and the nodes keep data (default: a temp dir, removed after)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir := *work
	if dir == "" {
		if dir, err = os.MkdirTemp("", "vigil-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	cfg := bench.IngestConfig{
		VigilBin: self, WorkDir: dir,
		Sizes:       []int{256 << 10, 1 << 20, 4 << 20},
		Concurrency: []int{16, 64},
		BytesPerRun: 512 << 20,
		Runs:        *runs,
		Log:         newLogger(stderr, "info"),
	}
	if *quick {
		cfg.BytesPerRun = 96 << 20
		cfg.Runs = 1
	}
	res, err := bench.RunIngest(ctx, cfg)
	if err != nil {
		return err
	}
	for _, m := range res {
		line := fmt.Sprintf("%-32s %10.2f %-10s", m.Metric, m.Value, m.Unit)
		if m.Baseline != 0 {
			line += fmt.Sprintf(" baseline %10.2f", m.Baseline)
		}
		if m.Ratio != 0 {
			line += fmt.Sprintf("  ratio %.2f", m.Ratio)
		}
		if m.Met != nil {
			line += fmt.Sprintf("  goal %s met=%v", m.Goal, *m.Met)
		}
		fmt.Fprintln(stdout, line)
	}
	if *asJSON {
		b, _ := json.Marshal(map[string]any{"bench": "ingest", "results": res})
		fmt.Fprintln(stdout, string(b))
	}
	return nil
}
