package ingest

import "github.com/prometheus/client_golang/prometheus"

// Upload classes: live segments are admitted ahead of backlog.
const (
	classLive    = "live"
	classBacklog = "backlog"
)

type metrics struct {
	requests *prometheus.CounterVec   // route, code
	bytesIn  prometheus.Counter       // body bytes read
	latency  *prometheus.HistogramVec // class
	queued   *prometheus.GaugeVec     // class: waiting for a slot
	inflight *prometheus.GaugeVec     // class: holding a slot
	shed     *prometheus.CounterVec   // class
	// backlogLimit is the backlog slots in use now (it follows live latency).
	backlogLimit prometheus.Gauge
	// resMismatch counts uploads whose claimed width/height disagree
	// with the SPS of their media.
	resMismatch prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ingest_requests_total",
			Help: "Ingest HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_ingest_bytes_total",
			Help: "Segment body bytes received.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vigil_ingest_upload_duration_seconds",
			Help:    "Time from admission to response of admitted segment uploads, by class.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"class"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_ingest_queue_depth",
			Help: "Uploads waiting for an admission slot, by class.",
		}, []string{"class"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_ingest_inflight",
			Help: "Uploads holding an admission slot, by class.",
		}, []string{"class"}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ingest_shed_total",
			Help: "Uploads refused with 503 because their class was saturated.",
		}, []string{"class"}),
		backlogLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_ingest_backlog_limit",
			Help: "Backlog uploads admitted at once now: --backlog-concurrency, halved while live uploads are slower than --backlog-live-slowdown times their recent best.",
		}),
		resMismatch: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_ingest_resolution_mismatch_total",
			Help: "Segments whose claimed width/height disagree with the picture size in their SPS (the SPS wins).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.bytesIn, m.latency, m.queued, m.inflight, m.shed, m.backlogLimit, m.resMismatch)
	}
	for _, c := range []string{classLive, classBacklog} {
		m.queued.WithLabelValues(c)
		m.inflight.WithLabelValues(c)
		m.shed.WithLabelValues(c)
	}
	return m
}
