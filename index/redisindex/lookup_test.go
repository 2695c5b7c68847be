package redisindex_test

import (
	"context"
	"io"
	"io/fs"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/indextest"
	"github.com/vigilcloud/vigil/index/redisindex"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
)

// countingGets counts the storage reads the index makes.
type countingGets struct {
	storage.Backend
	gets atomic.Int64
}

func (c *countingGets) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, storage.ObjectInfo, error) {
	c.gets.Add(1)
	return c.Backend.Get(ctx, key, off, n)
}

// TestLookupOfNewSegmentReadsNoStorage: once Redis holds a stream, looking
// up a segment it has not seen in an hour after the compacted watermark
// (what every new upload does) reads no manifest from storage; an hour at
// or before the watermark is still looked up in its manifest.
func TestLookupOfNewSegmentReadsNoStorage(t *testing.T) {
	ctx := context.Background()
	srv := testutil.StartRedis(t)
	store := &countingGets{Backend: newStore(t)}
	ix := redisindex.New(newClient(t, srv.Addr), store, redisindex.Options{KeyPrefix: "t" + testutil.RandomID() + ":"})
	f := indextest.Fixture{Index: ix, Store: store}
	ref := indextest.Ref(t, "s1")
	old := indextest.Seg(indextest.Base)
	indextest.Ingest(t, f, ref, old)

	before := store.gets.Load()
	_, err := ix.Lookup(ctx, ref, indextest.Base+10_000) // open hour, nothing compacted
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Equal(t, before, store.gets.Load(), "storage reads for a new segment, nothing compacted")
	require.NoError(t, ix.Compact(ctx, indextest.Base+index.HourMS))
	before = store.gets.Load()
	_, err = ix.Lookup(ctx, ref, indextest.Base+index.HourMS+10_000) // after the watermark
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Equal(t, before, store.gets.Load(), "storage reads for a new segment after the watermark")

	got, err := ix.Lookup(ctx, ref, old.Start) // compacted: from its manifest
	require.NoError(t, err)
	require.Equal(t, old.Start, got.Start)
	require.Greater(t, store.gets.Load(), before)
}
