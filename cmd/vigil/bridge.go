package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
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
	fs.IntVar(&f.Width, "width", 0, "picture width (default: each stream's registered size, looked up with VIGIL_ADMIN_TOKEN when set, else 1280x720)")
	fs.IntVar(&f.Height, "height", 0, "picture height (default: as --width)")
	fs.DurationVar(&f.Live, "live", 30*time.Second, "how long live recording runs")
	fs.DurationVar(&f.Outage, "outage", 0, "simulated internet outage before the live phase; its backlog drains while live continues")
	fs.IntVar(&f.BacklogWorkers, "backlog-workers", 4, "concurrent backlog uploads")
	fs.StringVar(&f.CacheDir, "cache-dir", filepath.Join(cache, "vigil", "payloads"), "where ffmpeg payloads are kept")
	fs.StringVar(&f.LogLevel, "log-level", "info", "debug, info, warn or error")
}

// defaultBridgeSize is the picture size of a stream whose registered size
// is unknown to the simulator.
var defaultBridgeSize = [2]int{1280, 720}

// config builds the simulation. Each stream uploads video of the size given
// by --width/--height, else of its registered size in sizes, else
// defaultBridgeSize: a bridge sends what its camera was registered with.
func (f *bridgeFlags) config(ctx context.Context, sizes map[string][2]int) (bench.BridgeConfig, error) {
	cfg := bench.BridgeConfig{
		SegmentDuration: f.SegmentDuration,
		Live:            f.Live, Outage: f.Outage, BacklogWorkers: f.BacklogWorkers,
		Payloads: map[string]bench.Payload{},
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
	if f.Payload != bench.PayloadSynthetic && f.Payload != bench.PayloadFMP4 && f.Payload != bench.PayloadTS {
		return cfg, fmt.Errorf("--payload %q: want fmp4, ts or synthetic", f.Payload)
	}
	made := map[[2]int]bench.Payload{} // one ffmpeg run per size
	for _, s := range cfg.Streams {
		size := defaultBridgeSize
		if sz, ok := sizes[s]; ok {
			size = sz
		}
		if f.Width > 0 && f.Height > 0 {
			size = [2]int{f.Width, f.Height}
		}
		p, ok := made[size]
		if !ok {
			p = bench.Payload{Width: size[0], Height: size[1]}
			switch f.Payload {
			case bench.PayloadSynthetic:
				p.Body, p.ContentType = bench.SyntheticFMP4(int(int64(f.Bitrate)*f.SegmentDuration.Milliseconds()/8000)), "video/mp4"
			default:
				var err error
				if _, err := exec.LookPath("ffmpeg"); err != nil {
					return cfg, fmt.Errorf("--payload %s makes real video with ffmpeg, which is not on PATH: install it (apt-get install ffmpeg) or use --payload synthetic", f.Payload)
				}
				if p.Body, p.ContentType, err = bench.FFmpegSegment(ctx, f.CacheDir, f.Payload, f.SegmentDuration, size[0], size[1]); err != nil {
					return cfg, err
				}
			}
			made[size] = p
		}
		cfg.Payloads[s] = p
	}
	return cfg, nil
}

// registeredSizes looks up the registered picture size of each stream with
// the operator token; without one (a bridge's token cannot read the
// registry) it returns nothing.
func registeredSizes(ctx context.Context, server, operatorToken string, streams []string) map[string][2]int {
	sizes := map[string][2]int{}
	if operatorToken == "" {
		return sizes
	}
	c := &apiClient{base: strings.TrimRight(server, "/"), token: operatorToken}
	for _, s := range streams {
		var st struct{ Width, Height int }
		if err := c.do(ctx, "GET", "/v1/meter/streams/"+url.PathEscape(s), nil, &st); err == nil && st.Width > 0 && st.Height > 0 {
			sizes[s] = [2]int{st.Width, st.Height}
		}
	}
	return sizes
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
	cfg, err := f.config(ctx, registeredSizes(ctx, f.Server, os.Getenv("VIGIL_ADMIN_TOKEN"), strings.Split(f.Streams, ",")))
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
		"live", cfg.Live, "outage", cfg.Outage)
	for _, s := range cfg.Streams {
		if p, ok := cfg.Payloads[s]; ok {
			fmt.Fprintf(stdout, "%s: %dx%d, %d bytes per %v segment\n", s, p.Width, p.Height, len(p.Body), cfg.SegmentDuration)
		}
	}
	rep, err := bench.RunBridge(ctx, up, cfg)
	fmt.Fprintf(stdout, "live:    %s\n", rep.Live.String())
	if cfg.Outage > 0 {
		fmt.Fprintf(stdout, "backlog: %s\n", rep.Backlog.String())
	}
	return rep, err
}
