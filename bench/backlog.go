package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/internal/servers"
)

// BacklogConfig sets up `vigil bench backlog`: a fleet of Bridges uploads
// live video; then a share of them comes back from an outage and drains its
// backlog while the rest stay live.
type BacklogConfig struct {
	VigilBin, MinIOBin, WorkDir string
	MinIODrives                 int     // 1: one drive; 4 or more: erasure-coded
	Bridges                     int     // simulated Bridges (200)
	Cameras                     int     // cameras per Bridge, one stream each (4)
	StormShare                  float64 // share of the Bridges back from the outage (0.2)
	BitrateBps                  int     // per camera (2 Mbit/s)
	Scale                       int     // divides the bitrate, so the fleet fits the machine
	SegmentDuration             time.Duration
	Outage                      time.Duration // how old the oldest backlog segment is (48 h)
	Phase                       time.Duration // length of the calm phase and of the storm phase
	BacklogWorkers              int           // concurrent backlog uploads per draining Bridge
	Runs                        int           // calm+storm repetitions; medians are reported
	NodeArgs                    []string      // extra `vigil serve` flags (admission tuning)
	Log                         *slog.Logger
}

// fleetBridge is one provisioned Bridge and its streams.
type fleetBridge struct {
	id, token string
	streams   []string
}

// phaseStats is what one phase measured.
type phaseStats struct {
	live       []time.Duration // first attempt to final answer, per live segment
	liveShed   int64           // live attempts beyond the first (503s, connection errors)
	liveFailed int64           // live segments without a 2xx
	drained    int64           // backlog segments stored
	backShed   int64           // backlog attempts that did not store (503s, connection errors)
	drainBytes int64
	took       time.Duration
}

// RunBacklog measures live upload latency with the fleet live (calm), then
// with StormShare of the Bridges draining their outage's backlog as fast as
// vigil admits it (storm), in the same run against the same node.
func RunBacklog(ctx context.Context, cfg BacklogConfig) ([]Metric, error) {
	log := cfg.Log
	mio, _, err := startMinIODrives(ctx, cfg.WorkDir, cfg.MinIOBin, cfg.MinIODrives)
	if err != nil {
		return nil, err
	}
	defer mio.Close()
	bucket, err := mio.MakeBucket(ctx)
	if err != nil {
		return nil, err
	}
	env := mio.Env(bucket)
	redis, err := servers.StartRedis(ctx, mkdir(cfg.WorkDir, "redis"))
	if err != nil {
		return nil, fmt.Errorf("bench: start redis: %w", err)
	}
	defer redis.Close()
	env = append(env, "VIGIL_REDIS_ADDR="+redis.Addr)
	// Live means what a Bridge sends as it records: the default threshold.
	// Every simulated Bridge connects from 127.0.0.1, where real ones come
	// from an address each: no per-address connection cap.
	node, err := startNode(ctx, cfg.VigilBin, cfg.WorkDir, "vigil", env,
		append([]string{"--live-threshold", "2m", "--http-max-conns-per-ip", "0"}, cfg.NodeArgs...)...)
	if err != nil {
		return nil, err
	}
	defer node.Close()
	fleet, err := provisionFleet(ctx, node, cfg.Bridges, cfg.Cameras)
	if err != nil {
		return nil, err
	}
	size := max(cfg.BitrateBps/8*int(cfg.SegmentDuration/time.Millisecond)/1000/max(cfg.Scale, 1), 64)
	body := SyntheticFMP4(size)
	storm := fleet[:max(1, int(float64(len(fleet))*cfg.StormShare+0.5))]
	log.Info("bench backlog: fleet provisioned", "bridges", len(fleet), "streams", len(fleet)*cfg.Cameras,
		"storm_bridges", len(storm), "segment_bytes", size, "segment", cfg.SegmentDuration)
	drain := newBacklogSource(storm, cfg.Outage, cfg.SegmentDuration, time.Now())

	// Warm up (connections, caches, the first index writes of every
	// stream) before anything is measured.
	warm := cfg
	warm.Phase = 2 * cfg.SegmentDuration
	if _, err := runPhase(ctx, node.base, fleet, nil, body, warm); err != nil {
		return nil, err
	}
	// Each run is calm, storm, calm; the calm baseline is both calm phases
	// together, so that drift on a shared machine favours neither side.
	var calm, stormy []phaseStats
	for run := range max(cfg.Runs, 1) {
		c1, err := runPhase(ctx, node.base, fleet, nil, body, cfg)
		if err != nil {
			return nil, err
		}
		s, err := runPhase(ctx, node.base, fleet, drain, body, cfg)
		if err != nil {
			return nil, err
		}
		c2, err := runPhase(ctx, node.base, fleet, nil, body, cfg)
		if err != nil {
			return nil, err
		}
		c := phaseStats{live: append(c1.live, c2.live...), liveShed: c1.liveShed + c2.liveShed, liveFailed: c1.liveFailed + c2.liveFailed}
		log.Info("bench backlog: run", "run", run+1,
			"calm_p50", pct(c.live, 50), "calm_p99", pct(c.live, 99), "calm1_p99", pct(c1.live, 99), "calm2_p99", pct(c2.live, 99),
			"storm_p50", pct(s.live, 50), "storm_p99", pct(s.live, 99), "storm_max", pct(s.live, 100),
			"drained", s.drained, "backlog_retries", s.backShed, "live_retries", c.liveShed+s.liveShed)
		calm, stormy = append(calm, c), append(stormy, s)
	}
	return backlogMetrics(cfg, calm, stormy, len(storm), size), nil
}

func backlogMetrics(cfg BacklogConfig, calm, storm []phaseStats, stormBridges, size int) []Metric {
	med := func(runs []phaseStats, f func(phaseStats) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	p := func(q int) func(phaseStats) float64 {
		return func(s phaseStats) float64 { return ms(pct(s.live, q)) }
	}
	rate := med(storm, func(s phaseStats) float64 { return float64(s.drained) / s.took.Seconds() })
	mbps := med(storm, func(s phaseStats) float64 { return float64(s.drainBytes) / s.took.Seconds() / 1e6 })
	calm99, storm99 := med(calm, p(99)), med(storm, p(99))
	p99 := ratioMetric("live_p99_storm_vs_calm", "ms", storm99, calm99, 0)
	met := p99.Ratio <= 1.25
	p99.Goal, p99.Met = "<= 1.25x", &met
	worst := 0.0
	for _, s := range storm {
		worst = max(worst, ms(pct(s.live, 100)))
	}
	late := Metric{Metric: "live_max_latency_storm", Unit: "ms", Value: worst, Baseline: ms(cfg.SegmentDuration)}
	lateMet := worst <= ms(cfg.SegmentDuration)
	late.Goal, late.Met = fmt.Sprintf("<= %.0f", ms(cfg.SegmentDuration)), &lateMet
	failed := 0.0
	for _, s := range append(slices.Clone(calm), storm...) {
		failed += float64(s.liveFailed)
	}
	lost := Metric{Metric: "live_segments_without_2xx", Unit: "count", Value: failed}
	lostMet := failed == 0
	lost.Goal, lost.Met = "0", &lostMet
	// The full outage of every draining stream, at the measured rate.
	backlogSegs := float64(stormBridges*cfg.Cameras) * cfg.Outage.Seconds() / cfg.SegmentDuration.Seconds()
	return []Metric{
		{Metric: "drain_rate", Unit: "segments/s", Value: round(rate)},
		{Metric: "drain_throughput", Unit: "MB/s", Value: round(mbps)},
		{Metric: "drain_of_full_outage", Unit: "h", Value: round(backlogSegs / max(rate, 1e-9) / 3600)},
		ratioMetric("live_p50_storm_vs_calm", "ms", med(storm, p(50)), med(calm, p(50)), 0),
		p99,
		late,
		lost,
		{Metric: "live_retries_storm", Unit: "count", Value: med(storm, func(s phaseStats) float64 { return float64(s.liveShed) })},
		{Metric: "backlog_retries_storm", Unit: "count", Value: med(storm, func(s phaseStats) float64 { return float64(s.backShed) })},
		{Metric: "segment_bytes", Unit: "B", Value: float64(size)},
	}
}

// provisionFleet creates bridges Bridges with cameras one-stream cameras
// each, on a few workers (each camera is one raft apply).
func provisionFleet(ctx context.Context, n *benchNode, bridges, cameras int) ([]fleetBridge, error) {
	fleet := make([]fleetBridge, bridges)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range fleet {
		g.Go(func() error {
			b := fleetBridge{id: fmt.Sprintf("fb%d", i)}
			var tok struct {
				Token string `json:"token"`
			}
			if err := n.callJSON(gctx, "POST", "/v1/accounts/bench/bridges", map[string]any{"id": b.id, "name": b.id}, &tok); err != nil {
				return err
			}
			b.token = tok.Token
			for c := range cameras {
				cam := fmt.Sprintf("%s-c%d", b.id, c)
				st := cam + "-s0"
				if err := n.call(gctx, "POST", "/v1/bridges/"+b.id+"/cameras", map[string]any{"id": cam, "name": cam,
					"streams": []map[string]any{{"id": st, "width": 1920, "height": 1080, "retention_days": 7}}}); err != nil {
					return err
				}
				b.streams = append(b.streams, st)
			}
			fleet[i] = b
			return nil
		})
	}
	return fleet, g.Wait()
}

// backlogSource hands out each draining Bridge's outage segments, oldest
// first and across its streams in turn; it continues where the last phase
// stopped, so no segment is sent twice.
type backlogSource struct {
	mu   sync.Mutex
	next map[string]time.Time // per bridge: start of its next backlog segment
	cam  map[string]int
	by   map[string]fleetBridge
	end  time.Time // the outage ended here: live from then on
	dur  time.Duration
}

func newBacklogSource(storm []fleetBridge, outage, dur time.Duration, now time.Time) *backlogSource {
	s := &backlogSource{next: map[string]time.Time{}, cam: map[string]int{}, by: map[string]fleetBridge{}, end: now, dur: dur}
	for _, b := range storm {
		s.next[b.id] = now.Add(-outage).Truncate(dur)
		s.by[b.id] = b
	}
	return s
}

// take returns bridge's next backlog segment, or false when its outage is
// drained.
func (s *backlogSource) take(bridge string) (stream string, start time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.by[bridge]
	start = s.next[bridge]
	if !start.Before(s.end) {
		return "", time.Time{}, false
	}
	i := s.cam[bridge]
	stream = b.streams[i]
	if s.cam[bridge] = (i + 1) % len(b.streams); s.cam[bridge] == 0 {
		s.next[bridge] = start.Add(s.dur)
	}
	return stream, start, true
}

// runPhase runs the whole fleet live for cfg.Phase and, when drain is not
// nil, drains its Bridges' backlog meanwhile. Every stream sends a segment
// when it ends, at a stream-specific offset: cameras are not in lockstep.
func runPhase(ctx context.Context, base string, fleet []fleetBridge, drain *backlogSource, body []byte, cfg BacklogConfig) (phaseStats, error) {
	var st phaseStats
	var mu sync.Mutex
	var liveShed, liveFailed, drained, backShed atomic.Int64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	uploader := func(token string) *Uploader {
		return &Uploader{BaseURL: base, Token: token, Client: client, MinBackoff: 50 * time.Millisecond, MaxBackoff: 2 * time.Second}
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.Phase)
	defer cancel()
	began := time.Now()
	var wg sync.WaitGroup
	total := len(fleet) * cfg.Cameras
	k := 0
	for _, b := range fleet {
		up := uploader(b.token)
		for _, stream := range b.streams {
			offset := cfg.SegmentDuration * time.Duration(k) / time.Duration(total)
			k++
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.NewTimer(offset)
				defer t.Stop()
				var lwg sync.WaitGroup
				defer lwg.Wait()
				for {
					select {
					case <-pctx.Done():
						return
					case <-t.C:
					}
					t.Reset(cfg.SegmentDuration)
					due := time.Now()
					seg := Segment{Stream: stream, Start: due.Add(-cfg.SegmentDuration), Duration: cfg.SegmentDuration,
						Body: body, ContentType: "video/mp4", Width: 1920, Height: 1080}
					lwg.Add(1)
					go func() {
						defer lwg.Done()
						// A live segment's own deadline: late past it is lost for live viewing.
						uctx, ucancel := context.WithTimeout(ctx, 4*cfg.SegmentDuration)
						defer ucancel()
						r, err := up.Upload(uctx, seg)
						took := time.Since(due)
						liveShed.Add(int64(r.Attempts - 1))
						if err != nil || r.Status/100 != 2 {
							liveFailed.Add(1)
						}
						mu.Lock()
						st.live = append(st.live, took)
						mu.Unlock()
					}()
				}
			}()
		}
	}
	if drain != nil {
		for id := range drain.by {
			up := uploader(drain.by[id].token)
			up.MaxAttempts = 1 // the worker itself retries after Retry-After, so that 503s are counted
			for range max(cfg.BacklogWorkers, 1) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for pctx.Err() == nil {
						stream, start, ok := drain.take(id)
						if !ok {
							return
						}
						seg := Segment{Stream: stream, Start: start, Duration: cfg.SegmentDuration, Body: body,
							ContentType: "video/mp4", Width: 1920, Height: 1080, Backlog: true}
						for pctx.Err() == nil {
							status, retryAfter, err := up.put(pctx, seg)
							if err == nil && status/100 == 2 {
								drained.Add(1)
								mu.Lock()
								st.drainBytes += int64(len(body))
								mu.Unlock()
								break
							}
							if err == nil && Final(status) {
								break // refused for good: the Bridge drops it
							}
							backShed.Add(1)
							wait := max(retryAfter, 100*time.Millisecond)
							select {
							case <-pctx.Done():
							case <-time.After(wait):
							}
						}
					}
				}()
			}
		}
	}
	wg.Wait()
	st.took = min(time.Since(began), cfg.Phase)
	st.liveShed, st.liveFailed, st.drained, st.backShed = liveShed.Load(), liveFailed.Load(), drained.Load(), backShed.Load()
	return st, nil
}
