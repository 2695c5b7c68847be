package segmenter

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sessions      prometheus.Gauge
	closed        *prometheus.CounterVec
	segments      *prometheus.CounterVec
	retries       prometheus.Counter
	backlog       prometheus.Gauge
	lost          prometheus.Counter
	audioLost     prometheus.Counter
	audioDropped  prometheus.Counter
	aboveTier     prometheus.Gauge
	aboveTierSegs prometheus.Counter
	jumps         prometheus.Counter
	quarantined   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_recorder_sessions",
			Help: "RTSP publishing sessions being recorded on this node."}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_recorder_sessions_closed_total",
			Help: "Recorded sessions that ended, by reason (teardown, disconnect, error)."}, []string{"reason"}),
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_recorder_segments_total",
			Help: "Recorded segments by outcome (stored, duplicate, conflict, rejected, invalid, dropped_deleted_stream)."}, []string{"result"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_recorder_store_retries_total",
			Help: "Store attempts of recorded segments that failed and are retried."}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_recorder_spool_backlog",
			Help: "Closed segments spooled on disk waiting to be stored."}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_recorder_rtp_gaps_total",
			Help: "RTP sequence gaps (lost packets) in recorded video."}),
		audioLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_recorder_audio_frames_lost_total",
			Help: "Fragmented audio frames (RFC 3640 AUs) given up because packets of them were lost."}),
		audioDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_recorder_audio_frames_dropped_total",
			Help: "Audio frames not recorded because they repeat or precede one already received (duplicated or reordered packets)."}),
		aboveTier: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_recorder_observed_tier_above_configured",
			Help: "Live sessions whose observed resolution tier (from the SPS) is above the stream's configured tier."}),
		aboveTierSegs: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_recorder_segments_above_configured_tier_total",
			Help: "Recorded segments whose observed resolution tier is above the stream's configured tier."}),
		jumps: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_recorder_rtp_timestamp_jumps_total",
			Help: "RTP timestamp jumps (an encoder restart, a long pause) that cut a recorded segment and re-anchored its clock."}),
		quarantined: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_recorder_segments_quarantined_total",
			Help: "Spooled segments no retry can store, moved to the spool's .quarantine directory, by reason (invalid, conflict, rejected)."}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.closed, m.segments, m.retries, m.backlog, m.lost, m.audioLost, m.audioDropped, m.aboveTier, m.aboveTierSegs, m.jumps, m.quarantined)
	}
	// Exported at 0 from the start, so that rates and alerts see the first one.
	for _, r := range []string{"teardown", "disconnect", "error"} {
		m.closed.WithLabelValues(r)
	}
	for _, r := range []string{"stored", "invalid", "conflict", "rejected"} {
		m.segments.WithLabelValues(r)
		if r != "stored" {
			m.quarantined.WithLabelValues(r)
		}
	}
	return m
}
