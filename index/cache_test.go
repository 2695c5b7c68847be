package index_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/indextest"
	"github.com/vigilcloud/vigil/storage"
)

func hourOf(n int) []index.Segment {
	segs := make([]index.Segment, n)
	for i := range segs {
		segs[i] = index.Segment{Start: int64(i) * 6000, DurationMS: 6000, Size: 1, SHA256: fmt.Sprintf("%064x", i), ContentType: "video/mp4"}
	}
	return segs
}

func TestManifestCacheVersionsAndEpochs(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := index.NewManifestCache(1<<20, reg)
	ref := storage.StreamRef{Account: "a", Camera: "c", Stream: "s"}
	segs := hourOf(3)

	c.Put(ref, 0, "v1", c.Epoch(), segs)
	got, ok := c.Get(ref, 0, "v1")
	require.True(t, ok)
	require.Equal(t, segs, got)
	_, ok = c.Get(ref, 0, "v2")
	require.False(t, ok, "another version is a miss")
	_, ok = c.Get(storage.StreamRef{Account: "a", Camera: "c", Stream: "t"}, 0, "v1")
	require.False(t, ok, "another stream is a miss")

	// A read that began before a Forget may not store what it read.
	epoch := c.Epoch()
	c.Forget(ref, 0, 0)
	_, ok = c.Get(ref, 0, "v1")
	require.False(t, ok)
	c.Put(ref, 0, "v1", epoch, segs)
	_, ok = c.Get(ref, 0, "v1")
	require.False(t, ok, "a copy read before the Forget stays out")
	c.Put(ref, 0, "v1", c.Epoch(), segs)
	_, ok = c.Get(ref, 0, "v1")
	require.True(t, ok)
	c.ForgetStream(ref)
	_, ok = c.Get(ref, 0, "v1")
	require.False(t, ok)

	require.Equal(t, 2.0, counter(t, reg, "vigil_index_manifest_cache_hits_total"))
	require.Equal(t, 5.0, counter(t, reg, "vigil_index_manifest_cache_misses_total"))
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// The cache stays within its size, evicting the least recently used hour.
func TestManifestCacheBounded(t *testing.T) {
	c := index.NewManifestCache(64<<10, nil) // some 270 segments
	ref := storage.StreamRef{Account: "a", Camera: "c", Stream: "s"}
	for h := range int64(10) {
		c.Put(ref, h*index.HourMS, "", c.Epoch(), hourOf(60))
		_, ok := c.Get(ref, 0, "") // keep hour 0 in use
		require.True(t, ok)
	}
	_, ok := c.Get(ref, 9*index.HourMS, "")
	require.True(t, ok, "the newest hour is kept")
	_, ok = c.Get(ref, 1*index.HourMS, "")
	require.False(t, ok, "an old unused hour is evicted")
	held := 0
	for h := range int64(10) {
		if _, ok := c.Get(ref, h*index.HourMS, ""); ok {
			held++
		}
	}
	require.Less(t, held, 10)

	// A nil cache (size 0) holds nothing and does not fail.
	var none *index.ManifestCache = index.NewManifestCache(0, nil)
	none.Put(ref, 0, "", none.Epoch(), hourOf(1))
	_, ok = none.Get(ref, 0, "")
	require.False(t, ok)
	none.ForgetStream(ref)
}

// A cached manifest is served without storage; a missing one is not cached.
func TestReadManifestCached(t *testing.T) {
	ctx := context.Background()
	store := indextest.NewMemStore()
	c := index.NewManifestCache(1<<20, nil)
	ref := storage.StreamRef{Account: "a", Camera: "c", Stream: "s"}
	segs := hourOf(5)
	require.NoError(t, index.WriteManifest(ctx, store, ref, 0, segs))
	got, err := index.ReadManifestCached(ctx, store, c, ref, 0, "")
	require.NoError(t, err)
	require.Equal(t, segs, got)
	missing, err := index.ReadManifestCached(ctx, store, c, ref, index.HourMS, "")
	require.NoError(t, err)
	require.Empty(t, missing)

	store.SetFailure(errors.New("storage down"))
	got, err = index.ReadManifestCached(ctx, store, c, ref, 0, "")
	require.NoError(t, err, "served from the cache")
	require.Equal(t, segs, got)
	all, err := index.ManifestSegments(ctx, store, c, nil, ref, 0, index.HourMS)
	require.Error(t, err, "listing which hours have manifests still asks storage")
	require.Nil(t, all)
	_, err = index.ReadManifestCached(ctx, store, c, ref, index.HourMS, "")
	require.Error(t, err, "absence was not cached")
}
