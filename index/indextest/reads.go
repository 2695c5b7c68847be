package indextest

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/storage"
)

// ManifestReads wraps a store and counts the reads of hour manifests.
type ManifestReads struct {
	storage.Backend
	n atomic.Int64
}

// Get implements storage.Backend.
func (m *ManifestReads) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, storage.ObjectInfo, error) {
	if strings.Contains(key, "/idx/") {
		m.n.Add(1)
	}
	return m.Backend.Get(ctx, key, offset, length)
}

// Count is how many manifest reads there were so far.
func (m *ManifestReads) Count() int64 { return m.n.Load() }

// CheckReadsNoManifestTwice records 48 closed hours in ix (over store,
// counted by reads), then checks that the timeline over them reads no
// manifest and that a day's segments, listed twice, read each of its
// manifests at most once: the span summary and the manifest cache at work.
func CheckReadsNoManifestTwice(t *testing.T, ix index.Index, reads *ManifestReads) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	f := Fixture{Index: ix, Store: reads}
	for h := int64(0); h < 48; h++ {
		for i := int64(0); i < 3; i++ {
			Ingest(t, f, ref, Seg(Base+h*hour+i*10_000))
		}
	}
	require.NoError(t, ix.Compact(ctx, Base+48*hour))
	_, err := ix.Spans(ctx, ref, Base, Base+48*hour) // an embedded index loads here
	require.NoError(t, err)

	before := reads.Count()
	spans, err := ix.Spans(ctx, ref, Base, Base+48*hour)
	require.NoError(t, err)
	require.Len(t, spans, 48)
	require.Equal(t, before, reads.Count(), "the timeline reads no manifest")

	for range 2 {
		segs, err := ix.Segments(ctx, ref, Base+24*hour, Base+48*hour)
		require.NoError(t, err)
		require.Len(t, segs, 72)
	}
	require.LessOrEqual(t, reads.Count()-before, int64(25), "a day's list read twice reads its 24 manifests (and the one before) once")
	got, err := ix.Lookup(ctx, ref, Base+30*hour+10_000)
	require.NoError(t, err)
	require.Equal(t, Base+30*hour+10_000, got.Start)
	require.LessOrEqual(t, reads.Count()-before, int64(25), "a lookup in a cached hour reads nothing")
}
