package rtsp

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sessions                         prometheus.Gauge
	unauthenticated                  prometheus.Gauge
	packets                          *prometheus.CounterVec // transport, kind (rtp|rtcp)
	bytes                            *prometheus.CounterVec // transport
	lost                             prometheus.Counter
	refused                          *prometheus.CounterVec // reason
	udpDropped                       prometheus.Counter
	tcpRTP, udpRTP, tcpRTCP, udpRTCP prometheus.Counter
	tcpBytes, udpBytes               prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_rtsp_sessions", Help: "Open RTSP connections (sessions), publishing or not."}),
		unauthenticated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_rtsp_unauthenticated_connections", Help: "Open RTSP connections that have not authenticated yet (also in vigil_rtsp_sessions)."}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_rtsp_packets_received_total", Help: "RTP and RTCP packets received from publishers."},
			[]string{"transport", "kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_rtsp_bytes_received_total", Help: "RTP and RTCP bytes received from publishers."},
			[]string{"transport"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_rtsp_packets_lost_total", Help: "RTP packets missing, from sequence number gaps."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_rtsp_sessions_refused_total", Help: "Sessions refused or ended early, by reason."},
			[]string{"reason"}),
		udpDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_rtsp_udp_dropped_total", Help: "UDP datagrams from unknown sources or before RECORD."}),
	}
	m.tcpRTP = m.packets.WithLabelValues("tcp", "rtp")
	m.udpRTP = m.packets.WithLabelValues("udp", "rtp")
	m.tcpRTCP = m.packets.WithLabelValues("tcp", "rtcp")
	m.udpRTCP = m.packets.WithLabelValues("udp", "rtcp")
	m.tcpBytes = m.bytes.WithLabelValues("tcp")
	m.udpBytes = m.bytes.WithLabelValues("udp")
	if reg != nil {
		reg.MustRegister(m.sessions, m.unauthenticated, m.packets, m.bytes, m.lost, m.refused, m.udpDropped)
	}
	return m
}
