package retention

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/purge"
	"github.com/vigilcloud/vigil/replica"
	"github.com/vigilcloud/vigil/storage"
)

// zeroLosingReporter passes batches to the meter, but loses the answer to
// the one that zeroes stream (its stored-bytes delta is minus the meter's
// count), as a connection dropped after the leader committed would.
type zeroLosingReporter struct {
	m      *replica.Replica
	stream string
	lost   atomic.Int32
}

func (r *zeroLosingReporter) ReportUsage(ctx context.Context, b meter.UsageBatch) (meter.UsageResult, error) {
	var zeroing bool
	for _, e := range b.Entries {
		if e.Stream != r.stream || e.StoredBytes >= 0 {
			continue
		}
		u, err := r.m.Meter.StreamUsage(ctx, r.stream)
		if err != nil {
			return meter.UsageResult{}, err
		}
		zeroing = u.StorageBytes == -e.StoredBytes
	}
	res, err := r.m.Meter.ReportUsage(ctx, b)
	if err == nil && zeroing && r.lost.Add(1) == 1 {
		return meter.UsageResult{}, errors.New("connection reset")
	}
	return res, err
}

// startAggregator is a node's usage Aggregator over the journal in dir; it
// is "killed" by dropping it unflushed (the journal's file is not closed
// either, as with SIGKILL).
func startAggregator(t *testing.T, r meter.UsageReporter, dir string) *meter.Aggregator {
	t.Helper()
	j, err := meter.OpenJournal(dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = j.Close() })
	return meter.NewAggregator(r, meter.AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j})
}

// TestPurgeUsageThroughKilledAggregator: a purge reports its frees and
// its final give-back (ZeroStored) through the node's Aggregator, and the
// Aggregator is killed twice: once holding frees not yet batched, once
// after the meter committed the give-back but its answer was lost. The
// stream's stored bytes reach zero with every delta applied exactly once:
// none is lost, and none is applied twice (which the meter would clamp).
func TestPurgeUsageThroughKilledAggregator(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, false)
	m := openMeter(t)
	_, err := m.Accounts.CreateAccount(ctx, "", accounts.NewAccount{ID: "a1", Name: "A"})
	require.NoError(t, err)
	_, err = m.Accounts.CreateBridge(ctx, "", "a1", accounts.NewBridge{ID: "b1", Name: "B"})
	require.NoError(t, err)
	_, err = m.Accounts.CreateCamera(ctx, "", "b1", accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}}})
	require.NoError(t, err)
	_, err = m.Accounts.CreateCamera(ctx, "", "b1", accounts.NewCamera{ID: "c2", Name: "C2", Streams: []accounts.NewStream{{ID: "z"}}})
	require.NoError(t, err)
	rx := storage.StreamRef{Account: "a1", Camera: "c1", Stream: "x"}
	sx := f.segs(t, rx, T.Add(-5*time.Hour), T, 2*time.Minute)
	require.NoError(t, f.idx.Compact(ctx, T.Add(-time.Hour).UnixMilli()))
	segBytes := func() (bytes, objs int64) {
		require.NoError(t, storage.Walk(ctx, f.store, rx.SegmentPrefix(), func(o storage.ObjectInfo) error {
			bytes += o.Size
			objs++
			return nil
		}))
		return bytes, objs
	}
	stored := func(stream string) meter.StreamUsage {
		u, err := m.Meter.StreamUsage(ctx, stream)
		require.NoError(t, err)
		return u
	}

	dir := t.TempDir()
	r := &zeroLosingReporter{m: m, stream: "x"}
	u1 := MeterUsage{Agg: startAggregator(t, r, dir), M: m.Meter}
	// The meter counts x's segments plus a drift (a lost free), which
	// only the purge's give-back removes.
	const driftBytes, driftObjs = 777, 3
	allBytes, allObjs := segBytes()
	require.Equal(t, int64(len(sx)), allObjs)
	require.NoError(t, u1.Adjust(ctx, "x", allBytes+driftBytes, allObjs+driftObjs))
	require.NoError(t, u1.Adjust(ctx, "z", 1234, 1))

	del, err := m.Accounts.DeleteCamera(ctx, "", "c1")
	require.NoError(t, err)
	cfg := PurgerConfig{Straggle: -1, PageSize: 50}

	// 1. The worker crashes after its second progress record: what it
	// freed waits in the Aggregator, journaled, and is not in the meter.
	p1 := NewPurger(cfg, f.store, f.idx, &crashingJobs{Jobs: m.Purges, n: 2}, u1, nil)
	require.Error(t, p1.RunOnce(ctx))
	leftBytes, leftObjs := segBytes()
	require.Less(t, leftObjs, allObjs, "the first worker freed segments")
	require.NotZero(t, leftObjs, "and left some")
	require.Equal(t, allBytes+driftBytes, stored("x").StorageBytes, "frees go through the Aggregator, not straight to the meter")

	// The Aggregator is killed; the next process replays its frees once.
	a2 := startAggregator(t, r, dir)
	u2 := MeterUsage{Agg: a2, M: m.Meter}
	require.NoError(t, a2.Flush(ctx))
	ux := stored("x")
	require.Equal(t, leftBytes+driftBytes, ux.StorageBytes)
	require.Equal(t, leftObjs+driftObjs, ux.StoredObjects)

	// 2. A second worker deletes the rest and gives back the drift; the
	// meter commits the give-back, but its answer is lost, so the job is
	// not done.
	p2 := NewPurger(cfg, f.store, f.idx, m.Purges, u2, nil)
	require.Error(t, p2.RunOnce(ctx))
	require.Equal(t, int32(1), r.lost.Load(), "the give-back was submitted")
	j, err := m.Purges.Purge(ctx, del.PurgeID)
	require.NoError(t, err)
	require.Equal(t, purge.PurgeFailed, j.State)
	require.Empty(t, f.keys(t, storage.CameraPrefix("a1", "c1")))
	ux = stored("x")
	require.Zero(t, ux.StorageBytes)
	require.Zero(t, ux.StoredObjects)

	// That Aggregator is killed too; the next process resubmits the
	// journaled give-back, which the meter knows, and the job ends.
	u3 := MeterUsage{Agg: startAggregator(t, r, dir), M: m.Meter}
	p3 := NewPurger(cfg, f.store, f.idx, m.Purges, u3, nil)
	require.NoError(t, p3.RunOnce(ctx))
	j, err = m.Purges.Purge(ctx, del.PurgeID)
	require.NoError(t, err)
	require.Equal(t, purge.PurgeDone, j.State)

	ux = stored("x")
	require.Zero(t, ux.StorageBytes)
	require.Zero(t, ux.StoredObjects)
	require.Equal(t, int64(1234), stored("z").StorageBytes)
	st := m.Meter.Status(ctx).Usage
	require.Zero(t, st.Clamped, "no free was applied twice")
	require.Zero(t, st.Rejected)
}
