package retention

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
)

// Expiries, purges and a lost usage report leave the meter's stored bytes
// off; reconcile reports the drift and fixes it through a meter command.
func TestReconcileAgainstMinIO(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, false)
	m := openMeter(t)
	_, err := m.Accounts.CreateAccount(ctx, "", accounts.NewAccount{ID: "a1", Name: "A"})
	require.NoError(t, err)
	_, err = m.Accounts.CreateBridge(ctx, "", "a1", accounts.NewBridge{ID: "b1", Name: "B"})
	require.NoError(t, err)
	_, err = m.Accounts.CreateCamera(ctx, "", "b1", accounts.NewCamera{ID: "c1", Name: "C", Streams: []accounts.NewStream{{ID: "x"}, {ID: "y"}}})
	require.NoError(t, err)
	rx := storage.StreamRef{Account: "a1", Camera: "c1", Stream: "x"}
	sx := f.segs(t, rx, T.Add(-2*time.Hour), T, 5*time.Minute)
	var size int64
	for _, s := range sx {
		size += s.Size
	}
	usage := aggUsage(m)
	// The meter missed two segments (a crash lost their usage batch).
	require.NoError(t, usage.Adjust(ctx, "x", size-sx[0].Size-sx[1].Size, int64(len(sx)-2)))
	// And counts bytes for y that storage does not hold.
	require.NoError(t, usage.Adjust(ctx, "y", 5000, 3))

	r := &Reconciler{Store: f.store, Streams: m.Accounts, Usage: usage, Settle: 10 * time.Millisecond}
	drifts, err := r.Reconcile(ctx, "", false)
	require.NoError(t, err)
	require.Len(t, drifts, 2)
	byID := map[string]Drift{}
	for _, d := range drifts {
		byID[d.Stream] = d
	}
	require.Equal(t, sx[0].Size+sx[1].Size, byID["x"].DriftBytes)
	require.Equal(t, int64(2), byID["x"].DriftObjects)
	require.Equal(t, int64(-5000), byID["y"].DriftBytes)
	require.False(t, byID["x"].Fixed, "dry run")

	drifts, err = r.Reconcile(ctx, "x", true)
	require.NoError(t, err)
	require.Len(t, drifts, 1)
	require.True(t, drifts[0].Fixed)
	u, err := m.Meter.StreamUsage(ctx, "x")
	require.NoError(t, err)
	require.Equal(t, size, u.StorageBytes)
	require.Equal(t, int64(len(sx)), u.StoredObjects)

	_, err = r.Reconcile(ctx, "", true)
	require.NoError(t, err)
	drifts, err = r.Reconcile(ctx, "", false)
	require.NoError(t, err)
	for _, d := range drifts {
		require.Zero(t, d.DriftBytes, d.Stream)
		require.Zero(t, d.DriftObjects, d.Stream)
	}
	_, err = r.Reconcile(ctx, "nope", false)
	require.ErrorIs(t, err, meter.ErrNotFound)

	// After a sweep that reports through the same meter, no drift either.
	sw := NewSweeper(SweeperConfig{Margin: time.Minute, Now: func() time.Time { return T.Add(31 * 24 * time.Hour) }}, f.store, f.idx, m.Accounts, usage, nil)
	st, err := sw.Sweep(ctx)
	require.NoError(t, err)
	require.NotZero(t, st.Objects)
	drifts, err = r.Reconcile(ctx, "x", false)
	require.NoError(t, err)
	require.Zero(t, drifts[0].DriftBytes)
}
