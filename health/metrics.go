package health

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/storage"
)

// Unknown is the metric's state for a stream whose index did not answer.
const Unknown State = "unknown"

// Metrics exports vigil_stream_health{account,state}: how many streams of
// each account are in each state. Counts per account, not a series per
// stream, keep the cardinality bounded by the number of accounts; the HTTP
// report names the streams. It is computed on scrape, at most once per
// refresh interval, with one index read per stream (no storage reads).
type Metrics struct {
	c       *Checker
	desc    *prometheus.Desc
	every   time.Duration
	timeout time.Duration

	mu     sync.Mutex // serializes computations and guards the cache
	at     time.Time
	counts map[string]map[State]int
}

// NewMetrics registers the metric on reg, recomputed at most every
// refresh (default 10s).
func NewMetrics(c *Checker, reg prometheus.Registerer, refresh time.Duration) *Metrics {
	if refresh <= 0 {
		refresh = 10 * time.Second
	}
	m := &Metrics{c: c, every: refresh, timeout: 10 * time.Second,
		desc: prometheus.NewDesc("vigil_stream_health", "Live streams per account and health state (recording, stalled, offline; unknown when the index did not answer).",
			[]string{"account", "state"}, nil)}
	reg.MustRegister(m)
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.desc }

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	for account, byState := range m.Counts(ctx) {
		for _, s := range append(States, Unknown) {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.GaugeValue, float64(byState[s]), account, string(s))
		}
	}
}

// Counts returns the streams per account and state, recomputed when the
// cached counts are older than the refresh interval.
func (m *Metrics) Counts(ctx context.Context) map[string]map[State]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.c.cfg.Now()
	if m.counts != nil && now.Sub(m.at) < m.every && !now.Before(m.at) {
		return m.counts
	}
	streams, err := m.c.reg.Streams(ctx)
	if err != nil {
		m.c.cfg.Logger.Warn("health: metric: streams", "err", err)
		return m.counts
	}
	counts := map[string]map[State]int{}
	failed := 0
	for _, st := range streams {
		if counts[st.Account] == nil {
			counts[st.Account] = map[State]int{}
		}
		seg, _, ok, err := m.c.latest(ctx, storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID})
		if err != nil {
			counts[st.Account][Unknown]++
			failed++
			continue
		}
		counts[st.Account][StateOf(now.UnixMilli(), seg.End(), seg.DurationMS, ok, m.c.cfg.OfflineAfter)]++
	}
	if failed > 0 {
		m.c.cfg.Logger.Warn("health: metric: index did not answer for some streams", "streams", failed)
	}
	m.at, m.counts = now, counts
	return counts
}
