package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigilcloud/vigil/bench"
	"github.com/vigilcloud/vigil/ingest/rtsp"
)

// runBenchRTSP is `vigil bench rtsp`: N concurrent 2 Mbit/s H.264
// publishers into a recording `vigil serve` vs a packet-counting baseline.
func runBenchRTSP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newBenchFlags("rtsp", "N concurrent 2 Mbit/s H.264 RTSP publishers into a recording vigil serve (fs) against\nthe baseline of a packet-counting RTSP server: CPU per packet and session, RSS,\nloss, and the recording floor. Needs ffmpeg.", "a short run: 20 streams for 10 s, once", "where the nodes keep data and the recorded source is cached", stdout, stderr)
	runs := f.fs.Int("runs", 3, "repetitions of every case; medians are reported")
	streams := f.fs.String("streams", "50,200,500", "concurrent publishers per case")
	duration := f.fs.Duration("duration", 30*time.Second, "measured window per case (after the warm-up)")
	warmup := f.fs.Duration("warmup", 10*time.Second, "publishing before the window opens: at least the segment duration plus 2 s, so the first segments (and their directories) are stored before it")
	serveArgs := f.fs.String("serve-args", "", "extra space-separated `vigil serve` flags for the recording node (e.g. --debug-addr 127.0.0.1:6060)")
	self, dir, cleanup, err := f.parse(args)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg := bench.RTSPConfig{VigilBin: self, WorkDir: dir, Duration: *duration, Warmup: *warmup, Runs: *runs, Log: newLogger(stderr, "info"),
		ServeArgs: strings.Fields(*serveArgs)}
	if cfg.Streams, err = parseList(*streams, strconv.Atoi); err != nil {
		return fmt.Errorf("--streams: %w", err)
	}
	if *f.quick {
		cfg.Streams, cfg.Duration, cfg.Runs = []int{20}, 10*time.Second, 1
	}
	res, err := bench.RunRTSP(ctx, cfg)
	if err != nil {
		return err
	}
	printBench(stdout, "rtsp", res, *f.asJSON)
	return nil
}

// runBenchRTSPSink is the hidden `vigil bench rtsp-sink`: the RTSP server
// with sinks that only count packets, the baseline `bench rtsp` measures
// in a process of its own.
func runBenchRTSPSink(ctx context.Context, args []string, stderr io.Writer) error {
	fset := flag.NewFlagSet("bench rtsp-sink", flag.ContinueOnError)
	fset.SetOutput(stderr)
	rtspAddr := fset.String("rtsp-addr", "127.0.0.1:8554", "RTSP listen address")
	httpAddr := fset.String("http-addr", "127.0.0.1:0", "serves /metrics")
	maxSessions := fset.Int("max-sessions", 1000, "concurrent RTSP sessions")
	if err := fset.Parse(args); err != nil {
		return err
	}
	log := newLogger(stderr, "warn")
	reg := prometheus.NewRegistry()
	srv, err := rtsp.NewServer(rtsp.Config{Addr: *rtspAddr, MaxSessions: *maxSessions, Logger: log, Registerer: reg,
		MaxUnauthenticatedPerIP: 64}, // the benchmark's publishers all connect from loopback
		&bench.CountingHandler{})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("rtsp-sink: http", "err", err)
		}
	}()
	return srv.Serve(ctx)
}
