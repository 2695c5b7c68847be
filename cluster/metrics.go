package cluster

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// raftStates are the values of vigil_meter_raft_state's state label.
var raftStates = []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown}

// nodeMetrics exports a node's raft health, read from raft at each scrape
// so that it is never stale: whether the cluster has a leader, this node's
// role, how far it has applied the log and the members it knows.
type nodeMetrics struct {
	n           *Node
	now         func() time.Time
	state       *prometheus.Desc
	hasLeader   *prometheus.Desc
	applied     *prometheus.Desc
	last        *prometheus.Desc
	lastContact *prometheus.Desc
	members     *prometheus.Desc
}

func newNodeMetrics(n *Node, now func() time.Time) *nodeMetrics {
	return &nodeMetrics{n: n, now: now,
		state: prometheus.NewDesc("vigil_meter_raft_state",
			"This node's raft state: 1 for the state it is in (follower, candidate, leader, shutdown), 0 for the others.", []string{"state"}, nil),
		hasLeader: prometheus.NewDesc("vigil_meter_has_leader",
			"1 when this node knows a raft leader (the meter takes writes), else 0.", nil, nil),
		applied: prometheus.NewDesc("vigil_meter_applied_index",
			"Index of the last raft log entry this node applied to its state.", nil, nil),
		last: prometheus.NewDesc("vigil_meter_last_log_index",
			"Index of the last raft log entry this node stored; minus vigil_meter_applied_index, what it has yet to apply.", nil, nil),
		lastContact: prometheus.NewDesc("vigil_meter_last_contact_seconds",
			"Seconds since this follower last heard from the leader (0 on the leader; -1 before any contact).", nil, nil),
		members: prometheus.NewDesc("vigil_meter_members",
			"Members of the raft configuration this node knows, by suffrage (voter, nonvoter).", []string{"suffrage"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *nodeMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.state, m.hasLeader, m.applied, m.last, m.lastContact, m.members} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *nodeMetrics) Collect(ch chan<- prometheus.Metric) {
	r := m.n.raft
	st := r.State()
	for _, s := range raftStates {
		ch <- prometheus.MustNewConstMetric(m.state, prometheus.GaugeValue, boolValue(s == st), stateName(s))
	}
	leader, _ := m.n.Leader()
	ch <- prometheus.MustNewConstMetric(m.hasLeader, prometheus.GaugeValue, boolValue(leader != ""))
	ch <- prometheus.MustNewConstMetric(m.applied, prometheus.GaugeValue, float64(r.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(m.last, prometheus.GaugeValue, float64(r.LastIndex()))
	contact := -1.0
	switch t := r.LastContact(); {
	case st == raft.Leader:
		contact = 0
	case !t.IsZero():
		contact = m.now().Sub(t).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(m.lastContact, prometheus.GaugeValue, contact)
	// A node that has shut down cannot read its configuration: it reports
	// no members rather than failing the scrape.
	counts := map[string]int{SuffrageVoter: 0, SuffrageNonvoter: 0}
	if ms, err := m.n.Members(); err == nil {
		for _, mb := range ms {
			counts[mb.Suffrage]++
		}
	}
	for s, c := range counts {
		ch <- prometheus.MustNewConstMetric(m.members, prometheus.GaugeValue, float64(c), s)
	}
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Leader:
		return "leader"
	}
	return "shutdown"
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
