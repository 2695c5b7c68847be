package purge

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// openStates are the states of a purge job that is not done.
var openStates = []string{PurgePending, PurgeRunning, PurgeFailed}

// Metrics exports the purge jobs of the replicated state, read at each
// scrape: how many are open and whether one has stopped making progress.
// Every node holds the same jobs, so every node reports the same values.
type Metrics struct {
	st      *State
	now     func() time.Time
	jobs    *prometheus.Desc
	oldest  *prometheus.Desc
	stalled *prometheus.Desc
}

// NewMetrics returns the collector over st (from Register); register it
// on the node's registry.
func NewMetrics(st *State, now func() time.Time) *Metrics {
	if now == nil {
		now = time.Now
	}
	return &Metrics{st: st, now: now,
		jobs: prometheus.NewDesc("vigil_purge_jobs",
			"Purge jobs not done yet, by state (pending, running, failed).", []string{"state"}, nil),
		oldest: prometheus.NewDesc("vigil_purge_oldest_job_age_seconds",
			"Age of the oldest purge job not done yet (0 when none is open).", nil, nil),
		stalled: prometheus.NewDesc("vigil_purge_stalled_seconds",
			"Longest time an open purge job has gone without recording progress (0 when none is open); a purge works in batches, each recorded.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.jobs
	ch <- m.oldest
	ch <- m.stalled
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	now := m.now()
	counts := map[string]int{}
	var oldest, stalled time.Duration
	m.st.m.RLock()
	for _, j := range m.st.Purges {
		if j.State == PurgeDone {
			continue
		}
		counts[j.State]++
		oldest = max(oldest, now.Sub(j.CreatedAt))
		stalled = max(stalled, now.Sub(j.UpdatedAt))
	}
	m.st.m.RUnlock()
	for _, s := range openStates {
		ch <- prometheus.MustNewConstMetric(m.jobs, prometheus.GaugeValue, float64(counts[s]), s)
	}
	ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, oldest.Seconds())
	ch <- prometheus.MustNewConstMetric(m.stalled, prometheus.GaugeValue, stalled.Seconds())
}
