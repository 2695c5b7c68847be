package purge

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/testutil"
)

func TestMetrics(t *testing.T) {
	st := Register(cluster.NewMachine(nil))
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := t0
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewMetrics(st, func() time.Time { return now }))

	g := testutil.Gauges(t, reg)
	for _, s := range []string{"pending", "running", "failed"} {
		require.Equal(t, 0.0, g["vigil_purge_jobs{"+s+"}"], s)
	}
	require.Equal(t, 0.0, g["vigil_purge_oldest_job_age_seconds"])
	require.Equal(t, 0.0, g["vigil_purge_stalled_seconds"])

	st.Add(t0, "p1", "acct", "cam1", []string{"s1"}, "")
	st.Add(t0.Add(time.Minute), "p2", "acct", "cam2", []string{"s2"}, "")
	st.Add(t0.Add(2*time.Minute), "p3", "acct", "cam3", []string{"s3"}, "")
	// p1 progresses at 10 min, p2 fails at 11 min, p3 is done at 12 min.
	_, err := st.ProgressCmd(t0.Add(10*time.Minute), ProgressCmd{ID: "p1", Cursor: "k1", Objects: 5, Bytes: 50})
	require.NoError(t, err)
	_, err = st.ProgressCmd(t0.Add(11*time.Minute), ProgressCmd{ID: "p2", Error: "storage down"})
	require.NoError(t, err)
	_, err = st.DoneCmd(t0.Add(12*time.Minute), "p3")
	require.NoError(t, err)

	now = t0.Add(30 * time.Minute)
	g = testutil.Gauges(t, reg)
	require.Equal(t, 0.0, g["vigil_purge_jobs{pending}"])
	require.Equal(t, 1.0, g["vigil_purge_jobs{running}"])
	require.Equal(t, 1.0, g["vigil_purge_jobs{failed}"])
	require.Equal(t, (30 * time.Minute).Seconds(), g["vigil_purge_oldest_job_age_seconds"])
	require.Equal(t, (20 * time.Minute).Seconds(), g["vigil_purge_stalled_seconds"], "p1, last progress at 10 min")

	// Once every job is done nothing is stuck.
	for _, id := range []string{"p1", "p2"} {
		_, err = st.DoneCmd(now, id)
		require.NoError(t, err)
	}
	g = testutil.Gauges(t, reg)
	require.Equal(t, 0.0, g["vigil_purge_jobs{running}"])
	require.Equal(t, 0.0, g["vigil_purge_stalled_seconds"])
	require.Equal(t, 0.0, g["vigil_purge_oldest_job_age_seconds"])
}
