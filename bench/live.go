package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LiveConfig sets up `vigil bench live`.
type LiveConfig struct {
	VigilBin string // runs `vigil serve` (recording)
	WorkDir  string
	Streams  int // live streams of the measured case
	Baseline int // live streams of the baseline case (1: the unloaded latency)
	Duration time.Duration
	Warmup   time.Duration
	Runs     int
	Log      *slog.Logger
	// ServeArgs are extra `vigil serve` flags.
	ServeArgs []string
}

// liveStats is one case: glass-to-playlist latencies of the frames sent
// in the window.
type liveStats struct {
	p50, p99, max time.Duration
	frames        int
	failed        int64         // publishers that could not start or broke off
	pollErrors    int64         // playlist requests that failed (other than a timed-out blocking reload)
	maxLag        time.Duration // how far the slowest publisher fell behind real time
	nodeCores     float64       // the node's CPU over the window, in cores
	benchCores    float64       // the bench process's (publishers and players)
}

// RunLive measures glass-to-playlist latency of LL-HLS: N publishers
// replay the 2 Mbit/s 720p H.264 of `bench rtsp` in real time into a
// recording `vigil serve` (6-s segments, 1-s parts), and one player per
// stream follows its live.m3u8 with blocking reloads (_HLS_msn/_HLS_part).
// A frame's latency is the time from its send until the first playlist
// listing its part arrives. The baseline is the same with cfg.Baseline
// streams in the same run.
func RunLive(ctx context.Context, cfg LiveConfig) ([]Metric, error) {
	src, _, err := loadBenchH264(ctx, cfg.WorkDir)
	if err != nil {
		return nil, err
	}
	var base, main []liveStats
	for run := 0; run < max(cfg.Runs, 1); run++ {
		b, err := runLiveCase(ctx, cfg, src, cfg.Baseline)
		if err != nil {
			return nil, fmt.Errorf("bench live: baseline N=%d: %w", cfg.Baseline, err)
		}
		base = append(base, b)
		m, err := runLiveCase(ctx, cfg, src, cfg.Streams)
		if err != nil {
			return nil, fmt.Errorf("bench live: N=%d: %w", cfg.Streams, err)
		}
		main = append(main, m)
		cfg.Log.Info("bench live: run", "run", run+1,
			"base_p50_ms", ms(b.p50), "base_p99_ms", ms(b.p99), "p50_ms", ms(m.p50), "p99_ms", ms(m.p99), "max_ms", ms(m.max),
			"frames", m.frames, "failed", m.failed+b.failed, "poll_errors", m.pollErrors+b.pollErrors,
			"publisher_max_lag_ms", ms(m.maxLag), "node_cpu_cores", round(m.nodeCores), "base_node_cpu_cores", round(b.nodeCores), "bench_cpu_cores", round(m.benchCores))
	}
	med := func(runs []liveStats, f func(liveStats) time.Duration) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = ms(f(r))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	p50 := func(s liveStats) time.Duration { return s.p50 }
	p99 := func(s liveStats) time.Duration { return s.p99 }
	m50, b50, m99, b99 := med(main, p50), med(base, p50), med(main, p99), med(base, p99)
	met := m99 < 2000
	var failed, frames float64
	for _, m := range main {
		failed += float64(m.failed)
		frames += float64(m.frames)
	}
	pfx := fmt.Sprintf("N=%d (baseline N=%d): ", cfg.Streams, cfg.Baseline)
	p99m := ratioMetric(pfx+"glass-to-playlist p99", "ms", m99, b99, 0)
	p99m.Goal, p99m.Met = "< 2000 ms", &met
	return []Metric{
		ratioMetric(pfx+"glass-to-playlist p50 (frame sent → its LL-HLS part listed)", "ms", m50, b50, 0),
		p99m,
		{Metric: pfx + "frames measured, all runs", Unit: "frames", Value: frames},
		{Metric: pfx + "publishers failed, all runs", Unit: "sessions", Value: failed},
	}, nil
}

func runLiveCase(ctx context.Context, cfg LiveConfig, src *benchH264, n int) (liveStats, error) {
	dir := mkdir(cfg.WorkDir, fmt.Sprintf("live-%d-%d", n, time.Now().UnixNano()))
	defer os.RemoveAll(dir)
	args := append([]string{"--live-blocked-per-client", strconv.Itoa(n + 16), "--http-max-conns-per-ip", "0"}, cfg.ServeArgs...)
	t, err := startRecordingTarget(ctx, RTSPConfig{VigilBin: cfg.VigilBin, Log: cfg.Log, ServeArgs: args}, dir, n)
	if err != nil {
		return liveStats{}, err
	}
	defer t.proc.Close()
	clients, failed := dialPublishers(ctx, t, src, cfg.Log)
	warmup := cfg.Warmup
	if warmup <= 0 {
		warmup = 8 * time.Second
	}
	start := time.Now().Add(500 * time.Millisecond)
	windowStart := start.Add(warmup)
	end := windowStart.Add(cfg.Duration)
	frames := int((end.Sub(start)+3*time.Second)/time.Second) * benchFPS
	sentAt := make([][]atomic.Int64, n) // by stream, frame: Unix ns
	for i := range sentAt {
		sentAt[i] = make([]atomic.Int64, frames)
	}
	pctx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n + 16, IdleConnTimeout: time.Minute}}
	defer hc.CloseIdleConnections()
	var mu sync.Mutex
	var lat []time.Duration
	var pollErrors atomic.Int64
	var polls sync.WaitGroup
	for i, c := range clients {
		if c == nil {
			continue
		}
		polls.Go(func() {
			p := &livePoller{hc: hc, url: t.httpBase + "/v1/streams/" + t.streams[i] + "/live.m3u8", token: t.token, seen: map[[2]int64]bool{}}
			p.run(pctx, func(frame int, listed time.Time) {
				if frame < 0 || frame >= frames {
					return
				}
				sent := sentAt[i][frame].Load()
				if sent == 0 || sent < windowStart.UnixNano() || sent > end.UnixNano() {
					return
				}
				mu.Lock()
				lat = append(lat, listed.Sub(time.Unix(0, sent)))
				mu.Unlock()
			}, &pollErrors)
		})
	}
	var pubs sync.WaitGroup
	var sent atomic.Int64
	var lagMu sync.Mutex
	var maxLag time.Duration
	for i, c := range clients {
		if c == nil {
			continue
		}
		pubs.Go(func() {
			lag, err := publishBench(c, src, i, start, end, &sent, func(f int, at time.Time) {
				if f < frames {
					sentAt[i][f].Store(at.UnixNano())
				}
			})
			lagMu.Lock()
			maxLag = max(maxLag, lag)
			lagMu.Unlock()
			if err != nil {
				failed.Add(1)
				cfg.Log.Warn("bench live: publisher broke off", "stream", t.streams[i], "err", err)
			}
		})
	}
	pid := t.proc.Pid()
	time.Sleep(time.Until(windowStart))
	cpu0, err := procCPUSeconds(pid)
	if err != nil {
		return liveStats{}, err
	}
	self0, err := procCPUSeconds(os.Getpid())
	if err != nil {
		return liveStats{}, err
	}
	time.Sleep(time.Until(end))
	cpu1, err := procCPUSeconds(pid)
	if err != nil {
		return liveStats{}, err
	}
	self1, err := procCPUSeconds(os.Getpid())
	if err != nil {
		return liveStats{}, err
	}
	pubs.Wait()
	// The last frames' parts are cut when the next part starts or the
	// session ends: give the players a moment, then end the sessions.
	time.Sleep(2 * time.Second)
	stopPolling()
	polls.Wait()
	for _, c := range clients {
		if c != nil {
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = c.Teardown(tctx)
			cancel()
			c.Close()
		}
	}
	if len(lat) == 0 {
		return liveStats{}, fmt.Errorf("no frame of the window was listed (poll errors %d)", pollErrors.Load())
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return liveStats{p50: q(0.50), p99: q(0.99), max: lat[len(lat)-1], frames: len(lat), failed: failed.Load(), pollErrors: pollErrors.Load(),
		maxLag: maxLag, nodeCores: (cpu1 - cpu0) / cfg.Duration.Seconds(), benchCores: (self1 - self0) / cfg.Duration.Seconds()}, nil
}

// livePoller follows one stream's live.m3u8 as an LL-HLS player does.
type livePoller struct {
	hc    *http.Client
	url   string
	token string
	seen  map[[2]int64]bool // (msn, part) already listed
	// Media time (ms from the session's first frame) where each segment
	// starts, by msn: the sum of the durations of the parts before it.
	// Part durations, not EXT-X-PROGRAM-DATE-TIME: a sender report may
	// re-anchor the recorder's wall clock, which moves the latter.
	segStart map[int64]float64
}

// run polls until ctx ends, calling listed for every frame of every part
// the first time a playlist lists it. Frames are numbered from the
// session's first, by media time (25 fps).
func (p *livePoller) run(ctx context.Context, listed func(frame int, at time.Time), errs *atomic.Int64) {
	query := ""
	for ctx.Err() == nil {
		body, status, err := p.get(ctx, query)
		at := time.Now()
		if err != nil || status != http.StatusOK {
			if ctx.Err() == nil && status != http.StatusServiceUnavailable {
				errs.Add(1)
				time.Sleep(50 * time.Millisecond)
			}
			if status != http.StatusServiceUnavailable {
				query = ""
			}
			continue
		}
		pl := parseLivePlaylist(body)
		if len(pl.segs) == 0 || !strings.Contains(body, "#EXT-X-PART-INF") {
			query = ""
			time.Sleep(50 * time.Millisecond) // not publishing yet
			continue
		}
		if p.segStart == nil {
			p.segStart = map[int64]float64{pl.seq: 0} // the session's first segment
		}
		for i, s := range pl.segs {
			msn := pl.seq + int64(i)
			cum, known := p.segStart[msn]
			if !known {
				continue // its start is not known: its frames are not measured
			}
			if s.closed && len(s.parts) > 0 {
				var d float64
				for _, pd := range s.parts {
					d += pd
				}
				p.segStart[msn+1] = cum + d
			}
			for j, d := range s.parts {
				k := [2]int64{msn, int64(j)}
				if !p.seen[k] {
					p.seen[k] = true
					for f := int(math.Round(cum / 40)); f < int(math.Round((cum+d)/40)); f++ {
						listed(f, at)
					}
				}
				cum += d
			}
		}
		last := pl.segs[len(pl.segs)-1]
		msn := pl.seq + int64(len(pl.segs)) - 1
		if last.closed {
			query = fmt.Sprintf("?_HLS_msn=%d&_HLS_part=0", msn+1)
		} else {
			query = fmt.Sprintf("?_HLS_msn=%d&_HLS_part=%d", msn, len(last.parts))
		}
	}
}

func (p *livePoller) get(ctx context.Context, query string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+query, nil)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), resp.StatusCode, err
}

type livePlaylist struct {
	seq  int64
	segs []liveSeg
}

type liveSeg struct {
	parts  []float64 // durations, ms
	closed bool
}

// parseLivePlaylist reads what the bench needs of an LL-HLS playlist.
func parseLivePlaylist(body string) livePlaylist {
	var pl livePlaylist
	var cur liveSeg
	open := false
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"):
			pl.seq, _ = strconv.ParseInt(strings.TrimPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
		case strings.HasPrefix(l, "#EXT-X-PROGRAM-DATE-TIME:"):
			open = true
		case strings.HasPrefix(l, "#EXT-X-PART:DURATION="):
			v, _, _ := strings.Cut(strings.TrimPrefix(l, "#EXT-X-PART:DURATION="), ",")
			d, _ := strconv.ParseFloat(v, 64)
			cur.parts = append(cur.parts, d*1000)
		case l != "" && !strings.HasPrefix(l, "#"):
			cur.closed = true
			pl.segs = append(pl.segs, cur)
			cur, open = liveSeg{}, false
		}
	}
	if open {
		pl.segs = append(pl.segs, cur)
	}
	return pl
}
