package retention

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	tu "github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/purge"
	"github.com/vigilcloud/vigil/replica"
	"github.com/vigilcloud/vigil/storage"
)

// crashingJobs fails right after the n-th progress was recorded, before
// the batch is deleted: what a crash at the worst moment leaves. gate, if
// set, runs before each record (to let the lister get ahead).
type crashingJobs struct {
	Jobs
	n       int64
	calls   atomic.Int64
	gate    func()
	mu      sync.Mutex
	records []int64 // objects of each record
}

func (c *crashingJobs) PurgeProgress(ctx context.Context, id, cursor string, objects, bytes int64) (purge.PurgeJob, error) {
	if c.gate != nil {
		c.gate()
	}
	j, err := c.Jobs.PurgeProgress(ctx, id, cursor, objects, bytes)
	if err == nil {
		c.mu.Lock()
		c.records = append(c.records, objects)
		c.mu.Unlock()
	}
	if err == nil && c.calls.Add(1) == c.n {
		return j, errors.New("simulated crash after recording a batch")
	}
	return j, err
}

func openMeter(t *testing.T) *replica.Replica {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := replica.Open(ctx, cluster.PeerConfig{Dir: t.TempDir(), NodeID: "m1", RaftAddr: tu.FreePort(t), HeartbeatTimeout: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// aggUsage is usage as the node wires it: through an Aggregator (here
// without a journal, flushed only when asked), read back from the meter.
func aggUsage(m *replica.Replica) MeterUsage {
	return MeterUsage{Agg: meter.NewAggregator(m.Meter, meter.AggregatorConfig{Interval: time.Hour}), M: m.Meter}
}

// TestPurgeResumesExactly crashes a purge right after its second progress
// record and resumes it with a fresh worker: every object and byte is
// counted exactly once. "grouped" makes the lister run ahead of the
// recorder, so one record covers several pages and deletes of earlier
// records are in flight (three at once) when the crash comes.
func TestPurgeResumesExactly(t *testing.T) {
	t.Parallel()
	t.Run("page per record", func(t *testing.T) {
		t.Parallel()
		testPurgeResumes(t, false)
	})
	t.Run("grouped", func(t *testing.T) {
		t.Parallel()
		testPurgeResumes(t, true)
	})
}

func testPurgeResumes(t *testing.T, grouped bool) {
	ctx := context.Background()
	f := newFixture(t, false)
	m := openMeter(t)
	_, err := m.Accounts.CreateAccount(ctx, "", accounts.NewAccount{ID: "a1", Name: "A"})
	require.NoError(t, err)
	_, err = m.Accounts.CreateBridge(ctx, "", "a1", accounts.NewBridge{ID: "b1", Name: "B"})
	require.NoError(t, err)
	cam1 := accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}, {ID: "y"}}}
	_, err = m.Accounts.CreateCamera(ctx, "", "b1", cam1)
	require.NoError(t, err)
	_, err = m.Accounts.CreateCamera(ctx, "", "b1", accounts.NewCamera{ID: "c2", Name: "C2", Streams: []accounts.NewStream{{ID: "z"}}})
	require.NoError(t, err)

	rx := storage.StreamRef{Account: "a1", Camera: "c1", Stream: "x"}
	ry := storage.StreamRef{Account: "a1", Camera: "c1", Stream: "y"}
	rz := storage.StreamRef{Account: "a1", Camera: "c2", Stream: "z"}
	sx := f.segs(t, rx, T.Add(-5*time.Hour), T, 2*time.Minute)
	sy := f.segs(t, ry, T.Add(-5*time.Hour), T, 3*time.Minute)
	f.segs(t, rz, T.Add(-5*time.Hour), T, 10*time.Minute)
	require.NoError(t, f.idx.Compact(ctx, T.Add(-time.Hour).UnixMilli()))
	var (
		wantObjs, wantBytes int64
		before              []storage.ObjectInfo
	)
	require.NoError(t, storage.Walk(ctx, f.store, storage.CameraPrefix("a1", "c1"), func(o storage.ObjectInfo) error {
		wantObjs++
		wantBytes += o.Size
		before = append(before, o)
		return nil
	}))
	require.Greater(t, wantObjs, int64(len(sx)+len(sy)), "manifests too")
	otherBefore := f.keys(t, storage.CameraPrefix("a1", "c2"))
	usage := aggUsage(m)
	var sizeX int64
	for _, s := range sx {
		sizeX += s.Size
	}
	require.NoError(t, usage.Adjust(ctx, "x", sizeX, int64(len(sx))))
	require.NoError(t, usage.Adjust(ctx, "z", 1234, 1))

	del, err := m.Accounts.DeleteCamera(ctx, "", "c1")
	require.NoError(t, err)
	j, err := m.Purges.Purge(ctx, del.PurgeID)
	require.NoError(t, err)
	require.Equal(t, purge.PurgePending, j.State)

	// The first worker "crashes" after recording its second batch.
	cj := &crashingJobs{Jobs: m.Purges, n: 2}
	cfg := PurgerConfig{Straggle: -1, PageSize: 100}
	var store storage.Backend = f.store
	if grouped {
		cs := &counting{Backend: f.store}
		store = cs
		cfg.PageSize, cfg.DeleteConcurrency = 20, 3
		// Before the first record the lister lists four pages (no delete
		// has started yet, so every call is a listing): the second record
		// takes the three waiting.
		cj.gate = func() {
			deadline := time.Now().Add(30 * time.Second)
			for cs.calls.Load() < 4 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	p1 := NewPurger(cfg, store, f.idx, cj, usage, nil)
	require.Error(t, p1.RunOnce(ctx))
	j, err = m.Purges.Purge(ctx, del.PurgeID)
	require.NoError(t, err)
	require.Equal(t, purge.PurgeFailed, j.State)
	// What was recorded is exactly what sorts at or before the cursor.
	var atCursor, atCursorBytes int64
	for _, o := range before {
		if o.Key <= j.Cursor {
			atCursor++
			atCursorBytes += o.Size
		}
	}
	require.Equal(t, atCursor, j.ObjectsDeleted)
	require.Equal(t, atCursorBytes, j.BytesFreed)
	require.GreaterOrEqual(t, j.ObjectsDeleted, 2*int64(cfg.PageSize), "two records of at least a page")
	if grouped {
		require.Len(t, cj.records, 2)
		require.Greater(t, cj.records[1], int64(cfg.PageSize), "the second record covers several pages")
	}
	require.NotEmpty(t, f.keys(t, storage.CameraPrefix("a1", "c1")))
	_, err = m.Accounts.CreateCamera(ctx, "", "b1", cam1)
	require.ErrorIs(t, err, accounts.ErrConflict, "the id is not reusable before the purge is done")

	// A fresh worker (after the restart) finishes it, counting every
	// object exactly once.
	p2 := NewPurger(cfg, store, f.idx, m.Purges, usage, nil)
	require.NoError(t, p2.RunOnce(ctx))
	j, err = m.Purges.Purge(ctx, del.PurgeID)
	require.NoError(t, err)
	require.Equal(t, purge.PurgeDone, j.State)
	require.Equal(t, wantObjs, j.ObjectsDeleted)
	require.Equal(t, wantBytes, j.BytesFreed)
	require.Empty(t, f.keys(t, storage.CameraPrefix("a1", "c1")))
	require.Equal(t, otherBefore, f.keys(t, storage.CameraPrefix("a1", "c2")), "other cameras untouched")
	open, err := m.Purges.OpenPurges(ctx)
	require.NoError(t, err)
	require.Empty(t, open)
	// Running again is harmless.
	require.NoError(t, p2.RunOnce(ctx))

	// Usage: the purged streams are zero, the other untouched.
	ux, err := m.Meter.StreamUsage(ctx, "x")
	require.NoError(t, err)
	require.Zero(t, ux.StorageBytes)
	require.Zero(t, ux.StoredObjects)
	uz, err := m.Meter.StreamUsage(ctx, "z")
	require.NoError(t, err)
	require.Equal(t, int64(1234), uz.StorageBytes)

	// Re-created with the same ids, the camera starts empty.
	_, err = m.Accounts.CreateCamera(ctx, "", "b1", cam1)
	require.NoError(t, err)
	segs, err := f.idx.Segments(ctx, rx, 0, T.Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	require.Empty(t, segs)
	ux, err = m.Meter.StreamUsage(ctx, "x")
	require.NoError(t, err)
	require.Zero(t, ux.StorageBytes)
	st, err := m.Accounts.Stream(ctx, "x")
	require.NoError(t, err)
	require.Nil(t, st.DeletedAt)
}
