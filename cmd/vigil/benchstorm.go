package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/bench"
)

// runBenchBacklog is `vigil bench backlog`: live latency of a Bridge fleet
// while a fifth of it drains a 48-hour backlog, against the same fleet
// calm in the same run.
func runBenchBacklog(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newBenchFlags("backlog", "A fleet of simulated Bridges (one stream per camera, live at their bitrate divided by\n--scale) uploads live video into vigil on MinIO and Redis; after a warm-up each run is a calm\nphase, a storm phase in which --storm-share of the Bridges drain a --outage backlog, and\na calm phase again. Reports the drain rate and live p50/p99 in the storm against both calm phases.", "a short run: one run of 30-s phases", "where MinIO, Redis and the node keep data", stdout, stderr)
	cfg := bench.BacklogConfig{Log: newLogger(stderr, "info")}
	f.fs.IntVar(&cfg.Bridges, "bridges", 200, "simulated Bridges")
	f.fs.IntVar(&cfg.Cameras, "cameras", 4, "cameras per Bridge (one stream each)")
	f.fs.Float64Var(&cfg.StormShare, "storm-share", 0.2, "share of the Bridges that come back from the outage")
	f.fs.IntVar(&cfg.BitrateBps, "bitrate", 2_000_000, "bits/s per camera before --scale")
	f.fs.IntVar(&cfg.Scale, "scale", 40, "divides every segment's size (bitrate), so the fleet fits this machine; counts and timing stay real")
	f.fs.DurationVar(&cfg.SegmentDuration, "segment-duration", 6*time.Second, "segment duration (real time)")
	f.fs.DurationVar(&cfg.Outage, "outage", 48*time.Hour, "age of the oldest backlog segment")
	f.fs.DurationVar(&cfg.Phase, "phase", 60*time.Second, "length of each calm and storm phase")
	f.fs.IntVar(&cfg.BacklogWorkers, "backlog-workers", 4, "concurrent backlog uploads per draining Bridge")
	f.fs.IntVar(&cfg.Runs, "runs", 3, "calm+storm repetitions; medians are reported")
	minioBin := f.fs.String("minio", "", "the minio binary (default: minio on PATH, else the one scripts/test.sh built)")
	serveArgs := f.fs.String("serve-args", "", "extra space-separated `vigil serve` flags for the node (e.g. --backlog-concurrency 8)")
	drives := minioDrivesFlag(f)
	self, dir, cleanup, err := f.parse(args)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg.VigilBin, cfg.WorkDir, cfg.MinIOBin, cfg.NodeArgs = self, dir, *minioBin, strings.Fields(*serveArgs)
	cfg.MinIODrives = *drives
	if *f.quick {
		cfg.Phase, cfg.Runs = 30*time.Second, 1
	}
	if cfg.Bridges < 1 || cfg.Cameras < 1 || cfg.SegmentDuration <= 0 || cfg.Phase < cfg.SegmentDuration || cfg.StormShare <= 0 || cfg.StormShare > 1 {
		return fmt.Errorf("bench backlog: --bridges and --cameras must be positive, --phase at least --segment-duration, --storm-share in (0,1]")
	}
	res, err := bench.RunBacklog(ctx, cfg)
	if err != nil {
		return err
	}
	printBench(stdout, "backlog", res, *f.asJSON)
	return nil
}

// runBenchStreams is `vigil bench streams`: 10,000 low-bitrate streams
// through one ingest node against direct PUTs to the same MinIO.
func runBenchStreams(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newBenchFlags("streams", "--streams low-bitrate streams (100 per Bridge) upload through one vigil node on MinIO\nand Redis, round robin with --concurrency uploads in flight, against the same bodies\nPUT straight to the same MinIO: segments/s, p50/p99 and the node's peak RSS.", "a short run: every stream once, once", "where MinIO, Redis and the node keep data", stdout, stderr)
	cfg := bench.StreamsConfig{Log: newLogger(stderr, "info")}
	f.fs.IntVar(&cfg.Streams, "streams", 10_000, "simulated streams")
	f.fs.IntVar(&cfg.StreamsPerBridge, "streams-per-bridge", 100, "streams per Bridge (cameras of 50 streams)")
	f.fs.IntVar(&cfg.BitrateBps, "bitrate", 32_000, "bits/s per stream")
	f.fs.DurationVar(&cfg.SegmentDuration, "segment-duration", 5*time.Second, "segment duration (sets the segment size with --bitrate)")
	f.fs.IntVar(&cfg.Rounds, "rounds", 3, "segments per stream per run")
	f.fs.IntVar(&cfg.Concurrency, "concurrency", 64, "uploads in flight")
	f.fs.IntVar(&cfg.Runs, "runs", 3, "repetitions; medians are reported")
	minioBin := f.fs.String("minio", "", "the minio binary (default: minio on PATH, else the one scripts/test.sh built)")
	serveArgs := f.fs.String("serve-args", "", "extra space-separated `vigil serve` flags for the node")
	drives := minioDrivesFlag(f)
	self, dir, cleanup, err := f.parse(args)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg.VigilBin, cfg.WorkDir, cfg.MinIOBin, cfg.NodeArgs = self, dir, *minioBin, strings.Fields(*serveArgs)
	cfg.MinIODrives = *drives
	if *f.quick {
		cfg.Rounds, cfg.Runs = 1, 1
	}
	if cfg.Streams < 1 || cfg.Concurrency < 1 || cfg.Rounds < 1 || cfg.SegmentDuration <= 0 {
		return fmt.Errorf("bench streams: --streams, --concurrency, --rounds and --segment-duration must be positive")
	}
	res, err := bench.RunStreams(ctx, cfg)
	if err != nil {
		return err
	}
	printBench(stdout, "streams", res, *f.asJSON)
	return nil
}

// minioDrivesFlag is --minio-drives: 1 runs MinIO on one drive, 4 or more
// one MinIO server erasure-coded across that many drive directories.
func minioDrivesFlag(f *benchFlags) *int {
	return f.fs.Int("minio-drives", 1, "MinIO drives: 1, or 4 and more for one erasure-coded (distributed-mode) server over that many drive directories")
}
