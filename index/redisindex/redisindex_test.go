package redisindex_test

import (
	"context"
	"io/fs"
	"math"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/indextest"
	"github.com/vigilcloud/vigil/index/redisindex"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
	fsstore "github.com/vigilcloud/vigil/storage/fs"
)

// newStore returns the embedded default backend in a fresh directory.
func newStore(t *testing.T) storage.Backend {
	st, err := fsstore.New(t.TempDir())
	require.NoError(t, err)
	return st
}

func newClient(t *testing.T, addr string) *redis.Client {
	// Short timeouts and no retries: a stopped server must fail fast.
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// deleteKeys removes every key under prefix: what a Redis that lost its data
// looks like to the index.
func deleteKeys(t *testing.T, c *redis.Client, prefix string) {
	ctx := context.Background()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	require.NoError(t, iter.Err())
	if len(keys) > 0 {
		require.NoError(t, c.Del(ctx, keys...).Err())
	}
}

func TestSuite(t *testing.T) {
	srv := testutil.StartRedis(t)
	client := newClient(t, srv.Addr)
	runSuite(t, client, func(t *testing.T, prefix string) { deleteKeys(t, client, prefix) })
}

// runSuite runs the behaviour suite on client; forget deletes every key
// under a prefix.
func runSuite(t *testing.T, client redis.UniversalClient, forget func(t *testing.T, prefix string)) {
	indextest.Run(t, func(t *testing.T) indextest.Fixture {
		store := newStore(t)
		opts := redisindex.Options{KeyPrefix: "t" + testutil.RandomID() + ":"}
		return indextest.Fixture{
			Index: redisindex.New(client, store, opts),
			Store: store,
			Reopen: func(t *testing.T) index.Index {
				forget(t, opts.KeyPrefix)
				return redisindex.New(client, store, opts)
			},
		}
	})
}

// Redis holds per-segment state only for open hours.
func TestCompactLeavesOnlyPerStreamKeys(t *testing.T) {
	ctx := context.Background()
	srv := testutil.StartRedis(t)
	client := newClient(t, srv.Addr)
	store := newStore(t)
	prefix := "t" + testutil.RandomID() + ":"
	ix := redisindex.New(client, store, redisindex.Options{KeyPrefix: prefix})
	f := indextest.Fixture{Index: ix, Store: store}
	ref := indextest.Ref(t, "s1")
	for i := int64(0); i < 30; i++ {
		indextest.Ingest(t, f, ref, indextest.Seg(indextest.Base+i*10*60_000))
	}
	require.NoError(t, ix.Compact(ctx, indextest.Base+10*index.HourMS))
	keys, err := client.Keys(ctx, prefix+"*").Result()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{prefix + "{acct/cam/s1}:spans", prefix + "{acct/cam/s1}:meta", prefix + "{acct/cam/s1}:mgen"}, keys)
	// Manifest generations are per day, not per hour or segment.
	n, err := client.HLen(ctx, prefix+"{acct/cam/s1}:mgen").Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

func TestRedisDownIsUnavailable(t *testing.T) {
	ctx := context.Background()
	srv := testutil.StartRedis(t)
	client := newClient(t, srv.Addr)
	store := newStore(t)
	ix := redisindex.New(client, store, redisindex.Options{})
	ref := indextest.Ref(t, "s1")
	first := indextest.Seg(indextest.Base)
	_, added, err := ix.Add(ctx, ref, first)
	require.NoError(t, err)
	require.True(t, added)

	srv.Stop()
	_, added, err = ix.Add(ctx, ref, indextest.Seg(indextest.Base+10_000))
	require.ErrorIs(t, err, index.ErrUnavailable)
	require.False(t, added)
	_, err = ix.Lookup(ctx, ref, first.Start)
	require.ErrorIs(t, err, index.ErrUnavailable)
	_, err = ix.Segments(ctx, ref, indextest.Base, indextest.Base+index.HourMS)
	require.ErrorIs(t, err, index.ErrUnavailable)
	require.ErrorIs(t, ix.Compact(ctx, indextest.Base+index.HourMS), index.ErrUnavailable)
	require.ErrorIs(t, ix.Ping(ctx), index.ErrUnavailable)

	srv.Start()
	_, added, err = ix.Add(ctx, ref, indextest.Seg(indextest.Base+10_000))
	require.NoError(t, err)
	require.True(t, added)
	// appendfsync always: what was added before the outage survived it.
	got, err := ix.Lookup(ctx, ref, first.Start)
	require.NoError(t, err)
	require.Equal(t, first, got)
	spans, err := ix.Spans(ctx, ref, indextest.Base, indextest.Base+index.HourMS)
	require.NoError(t, err)
	require.Equal(t, []index.Span{{Start: indextest.Base, End: indextest.Base + 20_000}}, spans)
}

// twoNodes returns two indexes on one Redis and one store, as two vigil
// nodes have them.
func twoNodes(t *testing.T) (a, b *redisindex.Index, store storage.Backend) {
	srv := testutil.StartRedis(t)
	store = newStore(t)
	opts := redisindex.Options{KeyPrefix: "t" + testutil.RandomID() + ":"}
	a = redisindex.New(newClient(t, srv.Addr), store, opts)
	b = redisindex.New(newClient(t, srv.Addr), store, opts)
	return a, b, store
}

// Two nodes compacting at once, while Adds go on, lose nothing.
func TestConcurrentCompactors(t *testing.T) {
	ctx := context.Background()
	a, b, store := twoNodes(t)
	ref := indextest.Ref(t, "s1")
	var want []int64
	for i := int64(0); i < 120; i++ {
		want = append(want, indextest.Base+i*60_000)
	}
	errc := make(chan error, 3)
	go func() {
		for i, start := range want {
			ix := a
			if i%2 == 1 {
				ix = b
			}
			if _, _, err := ix.Add(ctx, ref, indextest.Seg(start)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for _, ix := range []*redisindex.Index{a, b} {
		go func() {
			for range 20 {
				if err := ix.Compact(ctx, indextest.Base+index.HourMS); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range 3 {
		require.NoError(t, <-errc)
	}
	require.NoError(t, a.Compact(ctx, indextest.Base+2*index.HourMS))
	n, err := a.OpenCount(ctx, ref)
	require.NoError(t, err)
	require.Zero(t, n)
	var got []int64
	for h := int64(0); h < 2; h++ {
		m, err := index.ReadManifest(ctx, store, ref, indextest.Base+h*index.HourMS)
		require.NoError(t, err)
		for _, s := range m {
			got = append(got, s.Start)
		}
	}
	require.Equal(t, want, got)
}

// Each node caches decoded manifests; what another node changes (a late
// segment compacted in, retention trimming) shows on this one at once.
func TestCacheAcrossNodes(t *testing.T) {
	ctx := context.Background()
	a, b, store := twoNodes(t)
	fa := indextest.Fixture{Index: a, Store: store}
	ref := indextest.Ref(t, "s1")
	base, hour := indextest.Base, index.HourMS
	// Hours 0 and 25 (the next day) closed.
	for _, s := range []int64{base, base + 20_000, base + 25*hour} {
		indextest.Ingest(t, fa, ref, indextest.Seg(s))
	}
	require.NoError(t, a.Compact(ctx, base+26*hour))
	list := func(ix *redisindex.Index) []int64 {
		t.Helper()
		var out []int64
		// The day range, and all of time (generations read whole, not day
		// by day: the range once allocated a slot per hour and ran out of
		// memory): the same list, equally fresh.
		for i, to := range []int64{base + 26*hour, math.MaxInt64 / 2} {
			from := base
			if i == 1 {
				from = 0
			}
			segs, err := ix.Segments(ctx, ref, from, to)
			require.NoError(t, err)
			var got []int64
			for _, s := range segs {
				got = append(got, s.Start)
			}
			if i == 0 {
				out = got
			} else {
				require.Equal(t, out, got, "all of time")
			}
		}
		return out
	}
	require.Equal(t, []int64{base, base + 20_000, base + 25*hour}, list(b))
	require.Equal(t, []int64{base, base + 20_000, base + 25*hour}, list(b)) // from b's cache

	// A late segment into hour 0, added and compacted on a.
	indextest.Ingest(t, fa, ref, indextest.Seg(base+10_000))
	require.NoError(t, a.Compact(ctx, base+26*hour))
	require.Equal(t, []int64{base, base + 10_000, base + 20_000, base + 25*hour}, list(b))
	got, err := b.Lookup(ctx, ref, base+10_000)
	require.NoError(t, err)
	require.Equal(t, base+10_000, got.Start)

	// Retention on a deletes day 0's hour and trims.
	require.NoError(t, store.Delete(ctx, []string{ref.ManifestKey(time.UnixMilli(base)), ref.SegmentKey(base), ref.SegmentKey(base + 10_000), ref.SegmentKey(base + 20_000)}))
	require.NoError(t, a.TrimBefore(ctx, ref, base+25*hour))
	require.Equal(t, []int64{base + 25*hour}, list(b))
	_, err = b.Lookup(ctx, ref, base+10_000)
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestTimelineAndCachedReads(t *testing.T) {
	srv := testutil.StartRedis(t)
	reads := &indextest.ManifestReads{Backend: newStore(t)}
	ix := redisindex.New(newClient(t, srv.Addr), reads, redisindex.Options{KeyPrefix: "t" + testutil.RandomID() + ":"})
	indextest.CheckReadsNoManifestTwice(t, ix, reads)
}
