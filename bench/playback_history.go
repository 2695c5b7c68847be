package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"time"

	"github.com/vigilcloud/vigil/index"
)

// HistoryConfig sets up the history part of `vigil bench playback`: how the
// timeline and a day's page behave as a stream's stored history grows.
type HistoryConfig struct {
	VigilBin string // the binary that runs the node under test
	WorkDir  string
	// Days are the history lengths, one fresh node each; every day is hour
	// manifests of 6-s segments (the lists read the index, never objects).
	Days []int
	Runs int      // repetitions; percentiles over all of them
	Env  []string // extra environment of the node (e.g. VIGIL_INDEX_CACHE_MB=0)
	Log  *slog.Logger
}

// historyResult is what one history length measured.
type historyResult struct {
	days                      int
	list1h, timeline, dayPage []time.Duration
	dayPageCold               time.Duration // the first request: stream load and cold manifests
	// After a restart over the same data (the stream now has its summary,
	// written by the first load): the start until ready, which loads every
	// registered stream, and the first timeline and day page after it;
	// one of each per run.
	restartReady, restartTimeline, restartDayPage []time.Duration
}

// RunPlaybackHistory measures, for each history length, the one-hour list
// (the baseline), the timeline (spans=only) over min(days, 30) days and one
// page of the last day's segments (limit=20000, 14,400 segments) on a node
// whose stream holds that many days. Each figure is reported with its ratio
// to the one-hour list of the same node; flat means these ratios do not
// grow with the history (DESIGN.md section 5).
func RunPlaybackHistory(ctx context.Context, cfg HistoryConfig) ([]Metric, error) {
	var results []historyResult
	for _, days := range cfg.Days {
		r, err := runHistory(ctx, cfg, days)
		if err != nil {
			return nil, err
		}
		results = append(results, r)
	}
	var out []Metric
	var tlRatios, dayRatios []float64
	for _, r := range results {
		// The flatness is judged on medians: a p99 of 100 requests on a
		// shared 2-core box is one stall, on either side of the ratio.
		base50, base99 := pct(r.list1h, 50), pct(r.list1h, 99)
		tl50, tl99 := pct(r.timeline, 50), pct(r.timeline, 99)
		day50, day99 := pct(r.dayPage, 50), pct(r.dayPage, 99)
		tlMet, dayMet := ms(tl99) < 20, ms(day99) < 50
		tlDays := min(r.days, 30)
		out = append(out,
			Metric{Metric: fmt.Sprintf("history_%dd_list_1h_p50", r.days), Unit: "ms", Value: ms(base50)},
			Metric{Metric: fmt.Sprintf("history_%dd_list_1h_p99", r.days), Unit: "ms", Value: ms(base99)},
			Metric{Metric: fmt.Sprintf("history_%dd_timeline_%dd_p50", r.days, tlDays), Unit: "ms", Value: ms(tl50), Baseline: ms(base50), Ratio: ratio(tl50, base50)},
			Metric{Metric: fmt.Sprintf("history_%dd_timeline_%dd_p99", r.days, tlDays), Unit: "ms", Value: ms(tl99), Baseline: ms(base99), Ratio: ratio(tl99, base99), Goal: "< 20", Met: &tlMet},
			Metric{Metric: fmt.Sprintf("history_%dd_day_page_p50", r.days), Unit: "ms", Value: ms(day50), Baseline: ms(base50), Ratio: ratio(day50, base50)},
			Metric{Metric: fmt.Sprintf("history_%dd_day_page_p99", r.days), Unit: "ms", Value: ms(day99), Baseline: ms(base99), Ratio: ratio(day99, base99), Goal: "< 50", Met: &dayMet},
			Metric{Metric: fmt.Sprintf("history_%dd_day_page_first", r.days), Unit: "ms", Value: ms(r.dayPageCold)},
		)
		tlRatios, dayRatios = append(tlRatios, ratio(tl50, base50)), append(dayRatios, ratio(day50, base50))
		// The restart figures (medians) against the shortest history's:
		// flat is 1.
		for _, f := range []struct {
			name     string
			v, first []time.Duration
		}{{"restart_ready", r.restartReady, results[0].restartReady},
			{"restart_timeline_first", r.restartTimeline, results[0].restartTimeline},
			{"restart_day_page_first", r.restartDayPage, results[0].restartDayPage}} {
			v, base := pct(f.v, 50), pct(f.first, 50)
			out = append(out, Metric{Metric: fmt.Sprintf("history_%dd_%s_p50", r.days, f.name), Unit: "ms", Value: ms(v), Baseline: ms(base), Ratio: ratio(v, base)})
		}
	}
	if len(results) > 1 {
		// Flatness: the largest of the per-history p50 ratios over the
		// smallest; 1 is perfectly flat.
		for _, f := range []struct {
			name   string
			ratios []float64
		}{{"history_timeline_flatness", tlRatios}, {"history_day_page_flatness", dayRatios}} {
			lo, hi := slices.Min(f.ratios), slices.Max(f.ratios)
			spread := 0.0
			if lo > 0 {
				spread = round(hi / lo)
			}
			met := spread > 0 && spread <= 2
			out = append(out, Metric{Metric: f.name, Unit: "x", Value: spread, Ratio: spread, Goal: "<= 2.0x (max/min over the histories of p50 / the 1-h list's p50)", Met: &met})
		}
	}
	return out, nil
}

// ratio is v/base to three significant digits (a timeline is a small
// fraction of the 1-h list).
func ratio(v, base time.Duration) float64 {
	if base <= 0 || v <= 0 {
		return 0
	}
	r := float64(v) / float64(base)
	scale := math.Pow(10, 2-math.Floor(math.Log10(r)))
	return math.Round(r*scale) / scale
}

// runHistory seeds a fresh node's stream with days of manifests ending an
// hour ago and times its lists.
func runHistory(ctx context.Context, cfg HistoryConfig, days int) (historyResult, error) {
	log := cfg.Log
	r := historyResult{days: days}
	name := fmt.Sprintf("vigil-history-%dd", days)
	n, err := startPlaybackNode(ctx, cfg.VigilBin, cfg.WorkDir, name, slices.Clone(cfg.Env))
	if err != nil {
		return r, err
	}
	defer func() { n.Close() }() // n is replaced by the restart
	to := time.Now().Truncate(time.Hour).Add(-time.Hour).UnixMilli()
	from := to - int64(days)*24*index.HourMS
	began := time.Now()
	// The objects are never read: a small stand-in body gives the sizes.
	segs, err := seedManifests(ctx, filepath.Join(cfg.WorkDir, name, "data", "objects"), make([]byte, 1_500_000), from, to)
	if err != nil {
		return r, err
	}
	log.Info("bench playback: history seeded", "days", days, "segments", segs, "took", time.Since(began).Round(time.Millisecond))

	hourURL := n.recordingsURL(to-index.HourMS, to)
	tlURL := n.recordingsURL(to-int64(min(days, 30))*24*index.HourMS, to) + "&spans=only"
	dayURL := n.recordingsURL(to-24*index.HourMS, to) + "&limit=20000"
	// The first request loads the stream (a scan of its manifests) and
	// reads the day's manifests; it is reported on its own.
	first, err := n.fetch(ctx, dayURL)
	if err != nil {
		return r, err
	}
	r.dayPageCold = first.took
	var day struct {
		Segments []struct{ Start int64 } `json:"segments"`
	}
	if err := n.callJSON(ctx, "GET", dayURL[len(n.base):], nil, &day); err != nil {
		return r, err
	}
	if len(day.Segments) != 24*3600_000/pbSegMS {
		return r, fmt.Errorf("bench playback: history %dd: the day page lists %d segments", days, len(day.Segments))
	}
	for run := range max(cfg.Runs, 1) {
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		r.list1h = append(r.list1h, n.timeGets(ctx, log, 100, false, func(int) string { return hourURL })...)
		r.timeline = append(r.timeline, n.timeGets(ctx, log, 100, false, func(int) string { return tlURL })...)
		r.dayPage = append(r.dayPage, n.timeGets(ctx, log, 50, false, func(int) string { return dayURL })...)
		log.Info("bench playback: history run", "days", days, "run", run, "list_1h_p99", pct(r.list1h, 99),
			"timeline_p99", pct(r.timeline, 99), "day_page_p50", pct(r.dayPage, 50), "day_page_p99", pct(r.dayPage, 99), "day_page_first", r.dayPageCold)
	}
	for range max(cfg.Runs, 1) {
		n.Close()
		began = time.Now()
		if n, err = n.restart(ctx); err != nil {
			return r, err
		}
		r.restartReady = append(r.restartReady, time.Since(began))
		for _, m := range []struct {
			url string
			d   *[]time.Duration
		}{{tlURL, &r.restartTimeline}, {dayURL, &r.restartDayPage}} {
			tr, err := n.fetch(ctx, m.url)
			if err != nil {
				return r, err
			}
			*m.d = append(*m.d, tr.took)
		}
		log.Info("bench playback: history restart", "days", days, "ready", r.restartReady[len(r.restartReady)-1],
			"timeline_first", r.restartTimeline[len(r.restartTimeline)-1], "day_page_first", r.restartDayPage[len(r.restartDayPage)-1])
	}
	return r, nil
}
