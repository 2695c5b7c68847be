package embedded_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/index/indextest"
	"github.com/vigilcloud/vigil/storage"
	fsstore "github.com/vigilcloud/vigil/storage/fs"
)

// newStore returns the embedded default backend in a fresh directory.
func newStore(t *testing.T) storage.Backend {
	st, err := fsstore.New(t.TempDir())
	require.NoError(t, err)
	return st
}

func TestSuite(t *testing.T) {
	indextest.Run(t, func(t *testing.T) indextest.Fixture {
		store := newStore(t)
		return indextest.Fixture{
			Index:  embedded.New(store, embedded.Options{}),
			Store:  store,
			Reopen: func(t *testing.T) index.Index { return embedded.New(store, embedded.Options{}) },
		}
	})
}

// A restarted process finds what it recorded before, without an explicit
// Rebuild: open entries come back from the segment objects.
func TestRestartRebuildsLazily(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := indextest.Fixture{Index: embedded.New(store, embedded.Options{}), Store: store}
	ref := indextest.Ref(t, "s1")
	base := indextest.Base
	for _, start := range []int64{base, base + 10_000, base + index.HourMS} {
		indextest.Ingest(t, f, ref, indextest.Seg(start))
	}
	require.NoError(t, f.Index.Compact(ctx, base+index.HourMS))
	wantSegs, err := f.Index.Segments(ctx, ref, base, base+2*index.HourMS)
	require.NoError(t, err)
	wantSpans, err := f.Index.Spans(ctx, ref, base, base+2*index.HourMS)
	require.NoError(t, err)

	restarted := embedded.New(store, embedded.Options{})
	gotSpans, err := restarted.Spans(ctx, ref, base, base+2*index.HourMS)
	require.NoError(t, err)
	require.Equal(t, wantSpans, gotSpans)
	gotSegs, err := restarted.Segments(ctx, ref, base, base+2*index.HourMS)
	require.NoError(t, err)
	require.Equal(t, wantSegs, gotSegs)
	_, added, err := restarted.Add(ctx, ref, indextest.Seg(base+10_000))
	require.NoError(t, err)
	require.False(t, added, "a compacted segment is a duplicate after a restart")
	_, added, err = restarted.Add(ctx, ref, indextest.Seg(base+index.HourMS))
	require.NoError(t, err)
	require.False(t, added, "an open segment is a duplicate after a restart")

	// Load makes Compact see streams nobody touched since the restart.
	again := embedded.New(store, embedded.Options{})
	require.NoError(t, again.Load(ctx, []storage.StreamRef{ref}))
	require.NoError(t, again.Compact(ctx, base+2*index.HourMS))
	m, err := index.ReadManifest(ctx, store, ref, base+index.HourMS)
	require.NoError(t, err)
	require.Len(t, m, 1)
}

func TestStorageOutageIsUnavailable(t *testing.T) {
	ctx := context.Background()
	store := indextest.NewMemStore()
	ix := embedded.New(store, embedded.Options{})
	store.SetFailure(context.DeadlineExceeded)
	_, _, err := ix.Add(ctx, indextest.Ref(t, "s1"), indextest.Seg(indextest.Base))
	require.ErrorIs(t, err, index.ErrUnavailable)
	require.ErrorIs(t, ix.Ping(ctx), index.ErrUnavailable)
	store.SetFailure(nil)
	_, added, err := ix.Add(ctx, indextest.Ref(t, "s1"), indextest.Seg(indextest.Base))
	require.NoError(t, err)
	require.True(t, added)
}

func TestTimelineAndCachedReads(t *testing.T) {
	reads := &indextest.ManifestReads{Backend: newStore(t)}
	indextest.CheckReadsNoManifestTwice(t, embedded.New(reads, embedded.Options{}), reads)
}
