package retention

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/index/redisindex"
	tu "github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/s3"
)

// T is "now" in these tests: half past noon.
var T = time.Date(2026, 3, 10, 12, 30, 0, 0, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// staticStreams is the meter's stream list, settable by the test.
type staticStreams struct {
	mu sync.Mutex
	s  []accounts.Stream
}

func (s *staticStreams) Streams(ctx context.Context) ([]accounts.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.s), nil
}

func (s *staticStreams) setDays(id string, days int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.s {
		if s.s[i].ID == id {
			s.s[i].RetentionDays = days
		}
	}
}

// usageRec records what the sweeper reports as freed.
type usageRec struct {
	mu      sync.Mutex
	bytes   map[string]int64
	objects map[string]int64
}

func newUsage() *usageRec {
	return &usageRec{bytes: map[string]int64{}, objects: map[string]int64{}}
}

func (u *usageRec) Freed(ctx context.Context, stream string, b, o int64) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.bytes[stream] += b
	u.objects[stream] += o
	return nil
}

func (u *usageRec) get(stream string) (int64, int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bytes[stream], u.objects[stream]
}

// counting counts storage calls (the idle sweep must make none) and can
// inject a hook before deletes.
type counting struct {
	storage.Backend
	calls    atomic.Int64
	beforeDe func(keys []string) ([]string, error)
}

func (c *counting) List(ctx context.Context, p, a string, n int) ([]storage.ObjectInfo, error) {
	c.calls.Add(1)
	return c.Backend.List(ctx, p, a, n)
}

func (c *counting) Stat(ctx context.Context, k string) (storage.ObjectInfo, error) {
	c.calls.Add(1)
	return c.Backend.Stat(ctx, k)
}

func (c *counting) Delete(ctx context.Context, keys []string) error {
	c.calls.Add(1)
	if c.beforeDe != nil {
		rest, err := c.beforeDe(keys)
		if err != nil {
			return err
		}
		keys = rest
	}
	return c.Backend.Delete(ctx, keys)
}

type fixture struct {
	minio *tu.MinIO
	store storage.Backend
	idx   interface {
		index.Index
		TrimBefore(ctx context.Context, ref storage.StreamRef, before int64) error
	}
	rdb *redis.Client
}

func newFixture(t *testing.T, withRedis bool) *fixture {
	t.Helper()
	m := tu.StartMinIO(t)
	ctx := context.Background()
	store, err := s3.New(ctx, s3.Config{
		Endpoint: "http://" + m.Addr, Bucket: m.Bucket(t), AccessKey: m.AccessKey, SecretKey: m.SecretKey,
		Prefix: tu.RandomID() + "/", MaxRetries: 1, DialTimeout: time.Second,
	})
	require.NoError(t, err)
	f := &fixture{minio: m, store: store}
	if withRedis {
		rs := tu.StartRedis(t)
		f.rdb = redis.NewClient(&redis.Options{Addr: rs.Addr})
		t.Cleanup(func() { f.rdb.Close() })
		f.idx = redisindex.New(f.rdb, store, redisindex.Options{KeyPrefix: "t:" + tu.RandomID() + ":"})
	} else {
		f.idx = embedded.New(store, embedded.Options{})
	}
	return f
}

// segs stores a segment every step from `from` to `to` (10 s long, sizes
// varying) for ref and records it in the index; it returns them.
func (f *fixture) segs(t *testing.T, ref storage.StreamRef, from, to time.Time, step time.Duration) []index.Segment {
	t.Helper()
	var out []index.Segment
	for st := from; st.Before(to); st = st.Add(step) {
		out = append(out, index.Segment{Start: st.UnixMilli(), DurationMS: 10_000, Size: int64(100 + len(out)%37), ContentType: "video/mp4"})
	}
	var g errgroup.Group
	g.SetLimit(16)
	for _, s := range out {
		g.Go(func() error {
			body := bytes.Repeat([]byte{'x'}, int(s.Size))
			if _, err := f.store.Put(context.Background(), ref.SegmentKey(s.Start), bytes.NewReader(body), s.Size,
				storage.PutOptions{ContentType: s.ContentType, Metadata: index.SegmentMetadata(s)}); err != nil {
				return err
			}
			_, _, err := f.idx.Add(context.Background(), ref, s)
			return err
		})
	}
	require.NoError(t, g.Wait())
	return out
}

func (f *fixture) keys(t *testing.T, prefix string) []string {
	t.Helper()
	var out []string
	require.NoError(t, storage.Walk(context.Background(), f.store, prefix, func(o storage.ObjectInfo) error {
		out = append(out, o.Key)
		return nil
	}))
	return out
}

func refOf(s accounts.Stream) storage.StreamRef {
	return storage.StreamRef{Account: s.Account, Camera: s.Camera, Stream: s.ID}
}

func expiredOf(p Policy, segs []index.Segment, now time.Time) (gone, kept []index.Segment, bytes int64) {
	for _, s := range segs {
		if p.Expired(s, now) {
			gone = append(gone, s)
			bytes += s.Size
		} else {
			kept = append(kept, s)
		}
	}
	return gone, kept, bytes
}

func segKeys(ref storage.StreamRef, segs []index.Segment) []string {
	var out []string
	for _, s := range segs {
		out = append(out, ref.SegmentKey(s.Start))
	}
	slices.Sort(out)
	return out
}

func TestSweepAgainstMinIO(t *testing.T) {
	t.Parallel()
	for _, withRedis := range []bool{false, true} {
		t.Run(map[bool]string{false: "embedded", true: "redis"}[withRedis], func(t *testing.T) {
			testSweep(t, withRedis)
		})
	}
}

func testSweep(t *testing.T, withRedis bool) {
	ctx := context.Background()
	f := newFixture(t, withRedis)
	s1 := accounts.Stream{ID: "s1", Camera: "c1", Account: "a1", RetentionDays: 1}
	s2 := accounts.Stream{ID: "s2", Camera: "c2", Account: "a1", RetentionDays: 7}
	streams := &staticStreams{s: []accounts.Stream{s1, s2}}
	r1, r2 := refOf(s1), refOf(s2)
	segs1 := f.segs(t, r1, T.Add(-50*time.Hour), T, 15*time.Minute)
	segs2 := f.segs(t, r2, T.Add(-50*time.Hour), T, 45*time.Minute)
	require.NoError(t, f.idx.Compact(ctx, T.Add(-time.Hour).UnixMilli()))

	clk := &clock{t: T}
	cs := &counting{Backend: f.store}
	usage := newUsage()
	reg := prometheus.NewRegistry()
	met := NewMetrics(reg)
	var ls lease.Lease = lease.NewLocal(clk.Now)
	if withRedis {
		ls = lease.NewRedis(f.rdb, "lease:")
	}
	const margin = time.Minute
	sw := NewSweeper(SweeperConfig{Margin: margin, Now: clk.Now, Metrics: met}, cs, f.idx, streams, usage, ls)

	pol := Policy{Days: 1, Margin: margin}
	gone, kept, goneBytes := expiredOf(pol, segs1, T)
	require.NotEmpty(t, gone)
	st, err := sw.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(len(gone)), st.Objects)
	require.Equal(t, goneBytes, st.Bytes)

	// Exactly the expired segments are gone, nothing of the D7 stream.
	require.Equal(t, segKeys(r1, kept), f.keys(t, r1.SegmentPrefix()))
	require.Equal(t, segKeys(r2, segs2), f.keys(t, r2.SegmentPrefix()))
	b, o := usage.get("s1")
	require.Equal(t, goneBytes, b)
	require.Equal(t, int64(len(gone)), o)
	b, _ = usage.get("s2")
	require.Zero(t, b)
	require.Equal(t, float64(len(gone)), counter(t, reg, "vigil_retention_deleted_objects_total", ReasonRetention))
	require.Equal(t, float64(goneBytes), counter(t, reg, "vigil_retention_deleted_bytes_total", ReasonRetention))

	// Manifests: none for a wholly expired hour; the partial hour's lists
	// exactly its kept segments.
	firstKept := kept[0]
	partial := storage.HourStart(firstKept.Start)
	for _, k := range f.keys(t, r1.ManifestPrefix()) {
		_, h, err := storage.ParseManifestKey(k)
		require.NoError(t, err)
		require.GreaterOrEqual(t, h, partial, "manifest of an expired hour left: %s", k)
	}
	man, err := index.ReadManifestIfAny(ctx, f.store, r1, partial)
	require.NoError(t, err)
	for _, s := range man {
		require.False(t, pol.Expired(s, T), "manifest still lists an expired segment")
	}
	// The index no longer lists deleted segments.
	listed, err := f.idx.Segments(ctx, r1, 0, T.UnixMilli())
	require.NoError(t, err)
	require.Len(t, listed, len(kept))

	// Idle: nothing expires before the oldest kept segment does, and the
	// sweep touches no storage at all, twice.
	cs.calls.Store(0)
	for range 2 {
		st, err = sw.Sweep(ctx)
		require.NoError(t, err)
		require.Zero(t, st.Objects)
	}
	clk.Set(pol.ExpiresAt(firstKept).Add(-time.Millisecond))
	_, err = sw.Sweep(ctx)
	require.NoError(t, err)
	require.Zero(t, cs.calls.Load(), "idle sweeps made storage calls")

	// A node that starts afresh finds out that nothing has expired without
	// taking a lease (with the meter lease, a raft write per stream).
	cl := &countingLease{Lease: ls}
	fresh := NewSweeper(SweeperConfig{Margin: margin, Now: clk.Now}, f.store, f.idx, streams, usage, cl)
	st, err = fresh.Sweep(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Objects)
	// s1's oldest hour straddles the expiry instant, which only the sweep
	// under the lease can tell apart; s2's oldest hour cannot hold
	// anything expired.
	require.Equal(t, []string{"sweep/" + r1.StreamPrefix()}, cl.keys, "leases taken")

	// At its expiry instant the oldest kept segment goes, alone.
	clk.Set(pol.ExpiresAt(firstKept))
	st, err = sw.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Objects)
	require.NotContains(t, f.keys(t, r1.SegmentPrefix()), r1.SegmentKey(firstKept.Start))

	// A shorter plan (D7 → D1) removes the older video at the next sweep.
	streams.setDays("s2", 1)
	now := clk.Now()
	gone2, kept2, bytes2 := expiredOf(pol, segs2, now)
	require.NotEmpty(t, gone2)
	_, err = sw.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, segKeys(r2, kept2), f.keys(t, r2.SegmentPrefix()))
	b, _ = usage.get("s2")
	require.Equal(t, bytes2, b)

	// A longer plan (D1 → D30) keeps whatever still exists.
	streams.setDays("s1", 30)
	before := f.keys(t, r1.SegmentPrefix())
	clk.Set(now.Add(12 * time.Hour))
	_, err = sw.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, before, f.keys(t, r1.SegmentPrefix()))
}

// MinIO stopped in the middle of a sweep, after part of a batch was
// deleted: the sweep fails, the next one after MinIO is back finishes, and
// every freed byte is counted exactly once.
func TestSweepStorageDownMidSweep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, false)
	s1 := accounts.Stream{ID: "s1", Camera: "c1", Account: "a1", RetentionDays: 1}
	streams := &staticStreams{s: []accounts.Stream{s1}}
	r1 := refOf(s1)
	segs := f.segs(t, r1, T.Add(-40*time.Hour), T, 10*time.Minute)
	require.NoError(t, f.idx.Compact(ctx, T.Add(-time.Hour).UnixMilli()))

	var stopped atomic.Bool
	cs := &counting{Backend: f.store}
	cs.beforeDe = func(keys []string) ([]string, error) {
		if stopped.Swap(true) {
			return keys, nil
		}
		// Half the batch is deleted, then storage goes away.
		half := len(keys) / 2
		require.NoError(t, f.store.Delete(ctx, keys[:half]))
		f.minio.Stop()
		return keys[half:], nil
	}
	usage := newUsage()
	clk := &clock{t: T}
	sw := NewSweeper(SweeperConfig{Margin: time.Minute, Now: clk.Now}, cs, f.idx, streams, usage, nil)
	_, err := sw.Sweep(ctx)
	require.Error(t, err)
	require.True(t, stopped.Load())
	// Still down: the next sweep fails again and counts nothing twice.
	_, err = sw.Sweep(ctx)
	require.Error(t, err)

	f.minio.Start()
	require.Eventually(t, func() bool {
		_, err := sw.Sweep(ctx)
		return err == nil
	}, 30*time.Second, 200*time.Millisecond)

	pol := Policy{Days: 1, Margin: time.Minute}
	gone, kept, goneBytes := expiredOf(pol, segs, T)
	require.Equal(t, segKeys(r1, kept), f.keys(t, r1.SegmentPrefix()))
	b, o := usage.get("s1")
	require.Equal(t, goneBytes, b, "freed bytes counted exactly once")
	require.Equal(t, int64(len(gone)), o)
}

// Two sweepers (two ingest nodes) share a Redis lease: each stream is
// swept by one at a time and the freed bytes add up exactly.
func TestSweepersShareRedisLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, true)
	streams, all := f.sharedStreams(t, 4, 20*time.Minute)
	usage := newUsage()
	clk := &clock{t: T}
	var g errgroup.Group
	for range 2 {
		sw := NewSweeper(SweeperConfig{Margin: time.Minute, Now: clk.Now}, f.store, f.idx, streams, usage, lease.NewRedis(f.rdb, "lease:"))
		g.Go(func() error {
			for range 3 {
				if _, err := sw.Sweep(ctx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	// One more pass settles streams that were busy under the other's lease.
	sw := NewSweeper(SweeperConfig{Margin: time.Minute, Now: clk.Now}, f.store, f.idx, streams, usage, lease.NewRedis(f.rdb, "lease:"))
	_, err := sw.Sweep(ctx)
	require.NoError(t, err)
	f.checkShared(t, streams, all, usage)
}

// sharedStreams stores n streams of segments every step over 30 hours
// (D1) for sweepers sharing a lease.
func (f *fixture) sharedStreams(t *testing.T, n int, step time.Duration) (*staticStreams, [][]index.Segment) {
	var list []accounts.Stream
	var all [][]index.Segment
	for i := range n {
		s := accounts.Stream{ID: fmt.Sprintf("s%d", i), Camera: "c1", Account: "a1", RetentionDays: 1}
		list = append(list, s)
		all = append(all, f.segs(t, refOf(s), T.Add(-30*time.Hour), T, step))
	}
	return &staticStreams{s: list}, all
}

// checkShared: every expired segment of the shared streams is gone, every
// other kept, and the freed bytes were counted once.
func (f *fixture) checkShared(t *testing.T, streams *staticStreams, all [][]index.Segment, usage *usageRec) {
	pol := Policy{Days: 1, Margin: time.Minute}
	for i, s := range streams.s {
		_, kept, goneBytes := expiredOf(pol, all[i], T)
		require.Equal(t, segKeys(refOf(s), kept), f.keys(t, refOf(s).SegmentPrefix()))
		b, _ := usage.get(s.ID)
		require.Equal(t, goneBytes, b, s.ID)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// countingLease records the keys it is asked for.
type countingLease struct {
	lease.Lease
	mu   sync.Mutex
	keys []string
}

func (c *countingLease) TryAcquire(ctx context.Context, key string, ttl time.Duration) (lease.Held, bool, error) {
	c.mu.Lock()
	c.keys = append(c.keys, key)
	c.mu.Unlock()
	return c.Lease.TryAcquire(ctx, key, ttl)
}
