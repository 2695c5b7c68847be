package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/bench"
)

type bridgeFlags struct {
	Server          string
	Token           string
	Streams         string
	SegmentDuration time.Duration
	Bitrate         int
	Payload         string
	Width, Height   int
	Live            time.Duration
	Outage          time.Duration
	BacklogWorkers  int
	CacheDir        string
	LogLevel        string
}

func (f *bridgeFlags) register(fs *flag.FlagSet) {
	cache, _ := os.UserCacheDir()
	fs.StringVar(&f.Server, "server", "http://127.0.0.1:8080", "vigil node URL")
	fs.StringVar(&f.Token, "token", "", "bridge token (or the operator token)")
	fs.StringVar(&f.Streams, "streams", "", "comma-separated stream ids, one per camera stream")
	fs.DurationVar(&f.SegmentDuration, "segment-duration", 6*time.Second, "segment duration")
	fs.IntVar(&f.Bitrate, "bitrate", 2_000_000, "bits per second of synthetic payloads")
	fs.StringVar(&f.Payload, "payload", bench.PayloadFMP4, "payload: fmp4 or ts (real, made by ffmpeg once), or synthetic")
	fs.IntVar(&f.Width, "width", 1280, "picture width")
	fs.IntVar(&f.Height, "height", 720, "picture height")
	fs.DurationVar(&f.Live, "live", 30*time.Second, "how long live recording runs")
	fs.DurationVar(&f.Outage, "outage", 0, "simulated internet outage before the live phase; its backlog drains while live continues")
	fs.IntVar(&f.BacklogWorkers, "backlog-workers", 4, "concurrent backlog uploads")
	fs.StringVar(&f.CacheDir, "cache-dir", filepath.Join(cache, "vigil", "payloads"), "where ffmpeg payloads are kept")
	fs.StringVar(&f.LogLevel, "log-level", "info", "debug, info, warn or error")
}

func (f *bridgeFlags) config(ctx context.Context) (bench.BridgeConfig, error) {
	cfg := bench.BridgeConfig{
		SegmentDuration: f.SegmentDuration, Width: f.Width, Height: f.Height,
		Live: f.Live, Outage: f.Outage, BacklogWorkers: f.BacklogWorkers,
	}
	for _, s := range strings.Split(f.Streams, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Streams = append(cfg.Streams, s)
		}
	}
	if len(cfg.Streams) == 0 {
		return cfg, errors.New("--streams: give at least one stream id")
	}
	if f.SegmentDuration <= 0 {
		return cfg, errors.New("--segment-duration must be positive")
	}
	switch f.Payload {
	case bench.PayloadSynthetic:
		cfg.Body = bench.SyntheticFMP4(int(int64(f.Bitrate) * f.SegmentDuration.Milliseconds() / 8000))
		cfg.ContentType = "video/mp4"
	case bench.PayloadFMP4, bench.PayloadTS:
		var err error
		cfg.Body, cfg.ContentType, err = bench.FFmpegSegment(ctx, f.CacheDir, f.Payload, f.SegmentDuration, f.Width, f.Height)
		if err != nil {
			return cfg, err
		}
	default:
		return cfg, fmt.Errorf("--payload %q: want fmp4, ts or synthetic", f.Payload)
	}
	return cfg, nil
}

func runBridge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("bridge", "bridge --token TOKEN --streams ID[,ID…] [flags]", `A simulated Bridge: uploads segments of its streams to a node over HTTP PUT,
live, and the backlog of a simulated outage drained while live continues; it
retries with backoff on 503 and network errors, and prints what it uploaded.`, stdout, stderr)
	var f bridgeFlags
	f.register(fset)
	if err := parseFlags(fset, args); err != nil {
		return err
	}
	if f.Token == "" {
		return errors.New("--token (VIGIL_TOKEN) is required")
	}
	cfg, err := f.config(ctx)
	if err != nil {
		return err
	}
	log := newLogger(stderr, f.LogLevel)
	up := &bench.Uploader{BaseURL: strings.TrimRight(f.Server, "/"), Token: f.Token, Log: log}
	rep, err := simulate(ctx, up, cfg, stdout, log)
	if err != nil {
		return err
	}
	if n := rep.Live.Failures + rep.Backlog.Failures; n > 0 {
		return fmt.Errorf("%d segments got no final answer", n)
	}
	return nil
}

// simulate runs the bridge and prints what happened.
func simulate(ctx context.Context, up *bench.Uploader, cfg bench.BridgeConfig, stdout io.Writer, log *slog.Logger) (bench.Report, error) {
	log.Info("bridge: starting", "streams", len(cfg.Streams), "segment", cfg.SegmentDuration,
		"bytes_per_segment", len(cfg.Body), "live", cfg.Live, "outage", cfg.Outage)
	rep, err := bench.RunBridge(ctx, up, cfg)
	fmt.Fprintf(stdout, "live:    %s\n", rep.Live.String())
	if cfg.Outage > 0 {
		fmt.Fprintf(stdout, "backlog: %s\n", rep.Backlog.String())
	}
	return rep, err
}
