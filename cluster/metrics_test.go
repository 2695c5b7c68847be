package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/internal/testutil"
)

func TestNodeMetricsLeader(t *testing.T) {
	n := openReady(t, testConfig(t.TempDir()), &listFSM{})
	apply(t, n, "a", "b")
	reg := prometheus.NewRegistry()
	reg.MustRegister(newNodeMetrics(n, time.Now))

	g := testutil.Gauges(t, reg)
	require.Equal(t, 1.0, g["vigil_meter_raft_state{leader}"])
	require.Equal(t, 0.0, g["vigil_meter_raft_state{follower}"])
	require.Equal(t, 0.0, g["vigil_meter_raft_state{candidate}"])
	require.Equal(t, 1.0, g["vigil_meter_has_leader"])
	require.Equal(t, 0.0, g["vigil_meter_last_contact_seconds"])
	require.Equal(t, 1.0, g["vigil_meter_members{voter}"])
	require.Equal(t, 0.0, g["vigil_meter_members{nonvoter}"])
	require.GreaterOrEqual(t, g["vigil_meter_applied_index"], 3.0) // configuration + a + b
	require.GreaterOrEqual(t, g["vigil_meter_last_log_index"], g["vigil_meter_applied_index"])

	// A closed node says so instead of failing the scrape.
	require.NoError(t, n.Close())
	g = testutil.Gauges(t, reg)
	require.Equal(t, 1.0, g["vigil_meter_raft_state{shutdown}"])
	require.Equal(t, 0.0, g["vigil_meter_raft_state{leader}"])
	require.Equal(t, 0.0, g["vigil_meter_has_leader"])
}

func TestNodeMetricsNoLeader(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Bootstrap = false // in no cluster: never hears from a leader
	n, err := Open(context.Background(), cfg, &listFSM{})
	require.NoError(t, err)
	defer n.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newNodeMetrics(n, time.Now))

	g := testutil.Gauges(t, reg)
	require.Equal(t, 0.0, g["vigil_meter_has_leader"])
	require.Equal(t, 0.0, g["vigil_meter_raft_state{leader}"])
	require.Equal(t, -1.0, g["vigil_meter_last_contact_seconds"])
	require.Equal(t, 0.0, g["vigil_meter_members{voter}"])
}
