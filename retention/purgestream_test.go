package retention

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/purge"
	"github.com/vigilcloud/vigil/storage"
)

// TestPurgeOneStream: the purge of DELETE /v1/streams/{id} frees that
// stream's objects, index and stored bytes, and leaves the camera's other
// stream as it was.
func TestPurgeOneStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, true)
	m := openMeter(t)
	_, err := m.Accounts.CreateAccount(ctx, "", accounts.NewAccount{ID: "a1", Name: "A"})
	require.NoError(t, err)
	_, err = m.Accounts.CreateBridge(ctx, "", "a1", accounts.NewBridge{ID: "b1", Name: "B"})
	require.NoError(t, err)
	_, err = m.Accounts.CreateCamera(ctx, "", "b1", accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}, {ID: "y"}}})
	require.NoError(t, err)
	rx := storage.StreamRef{Account: "a1", Camera: "c1", Stream: "x"}
	ry := storage.StreamRef{Account: "a1", Camera: "c1", Stream: "y"}
	sx := f.segs(t, rx, T.Add(-2*time.Hour), T, 5*time.Minute)
	sy := f.segs(t, ry, T.Add(-2*time.Hour), T, 5*time.Minute)
	require.NoError(t, f.idx.Compact(ctx, T.Add(-time.Hour).UnixMilli()))
	yKeys := f.keys(t, ry.StreamPrefix())
	require.NotEmpty(t, yKeys)
	usage := aggUsage(m)
	require.NoError(t, usage.Adjust(ctx, "x", 1000, int64(len(sx))))
	require.NoError(t, usage.Adjust(ctx, "y", 2000, int64(len(sy))))

	del, err := m.Accounts.DeleteStream(ctx, "", "x")
	require.NoError(t, err)
	p := NewPurger(PurgerConfig{Straggle: -1, PageSize: 7}, f.store, f.idx, m.Purges, usage, nil)
	require.NoError(t, p.RunOnce(ctx))
	j, err := m.Purges.Purge(ctx, del.PurgeID)
	require.NoError(t, err)
	require.Equal(t, purge.PurgeDone, j.State)
	require.Greater(t, j.ObjectsDeleted, int64(len(sx)), "segments and manifests")

	require.Empty(t, f.keys(t, rx.StreamPrefix()))
	require.Equal(t, yKeys, f.keys(t, ry.StreamPrefix()))
	segs, err := f.idx.Segments(ctx, rx, 0, T.Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	require.Empty(t, segs)
	segs, err = f.idx.Segments(ctx, ry, 0, T.Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	require.Len(t, segs, len(sy))
	ux, err := m.Meter.StreamUsage(ctx, "x")
	require.NoError(t, err)
	require.Zero(t, ux.StorageBytes)
	uy, err := m.Meter.StreamUsage(ctx, "y")
	require.NoError(t, err)
	require.Equal(t, int64(2000), uy.StorageBytes)
	_, err = m.Accounts.Stream(ctx, "y")
	require.NoError(t, err, "the other stream stays live")
}
