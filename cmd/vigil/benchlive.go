package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/bench"
)

// runBenchLive is `vigil bench live`: glass-to-playlist latency of LL-HLS
// at N live RTSP streams vs the same with one stream, in the same run.
func runBenchLive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newBenchFlags("live", "N publishers replay 2 Mbit/s 720p H.264 over RTSP into a recording vigil serve (6-s\nsegments, 1-s parts) while one LL-HLS player per stream follows live.m3u8 with blocking\nreloads: the time from a frame's send until its part is listed, p50/p99, against the\nsame with --baseline streams. Needs ffmpeg.", "a short run: 20 streams for 10 s, once", "where the nodes keep data and the recorded source is cached", stdout, stderr)
	runs := f.fs.Int("runs", 3, "repetitions of every case; medians are reported")
	streams := f.fs.Int("streams", 200, "live streams of the measured case")
	baseline := f.fs.Int("baseline", 1, "live streams of the baseline case")
	duration := f.fs.Duration("duration", 30*time.Second, "measured window per case (after the warm-up)")
	warmup := f.fs.Duration("warmup", 8*time.Second, "publishing before the window opens")
	serveArgs := f.fs.String("serve-args", "", "extra space-separated `vigil serve` flags for the recording node")
	self, dir, cleanup, err := f.parse(args)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg := bench.LiveConfig{VigilBin: self, WorkDir: dir, Streams: *streams, Baseline: *baseline, Duration: *duration,
		Warmup: *warmup, Runs: *runs, Log: newLogger(stderr, "info"), ServeArgs: strings.Fields(*serveArgs)}
	if *f.quick {
		cfg.Streams, cfg.Duration, cfg.Runs = 20, 10*time.Second, 1
	}
	res, err := bench.RunLive(ctx, cfg)
	if err != nil {
		return err
	}
	printBench(stdout, "live", res, *f.asJSON)
	return nil
}
