package embedded_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/index/indextest"
	tu "github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/s3"
)

const hour = index.HourMS

// backends runs fn over the fs store and over a real MinIO.
func backends(t *testing.T, fn func(t *testing.T, store storage.Backend)) {
	t.Run("fs", func(t *testing.T) { fn(t, newStore(t)) })
	t.Run("minio", func(t *testing.T) {
		m := tu.StartMinIO(t)
		store, err := s3.New(context.Background(), s3.Config{
			Endpoint: "http://" + m.Addr, Bucket: m.Bucket(t), AccessKey: m.AccessKey, SecretKey: m.SecretKey,
			Prefix: tu.RandomID() + "/", MaxRetries: 1, DialTimeout: time.Second,
		})
		require.NoError(t, err)
		fn(t, store)
	})
}

// recordHours ingests three segments into each of n hours from
// indextest.Base and compacts them, which writes the summary.
func recordHours(t *testing.T, ix index.Index, store storage.Backend, ref storage.StreamRef, n int64) {
	f := indextest.Fixture{Index: ix, Store: store}
	for h := range n {
		for i := range int64(3) {
			indextest.Ingest(t, f, ref, indextest.Seg(indextest.Base+h*hour+i*10_000))
		}
	}
	require.NoError(t, ix.Compact(context.Background(), indextest.Base+n*hour))
}

// view is what a restarted index answers for the whole stream.
type view struct {
	spans []index.Span
	segs  []index.Segment
	last  index.Segment
}

func viewOf(t *testing.T, ix index.Index, ref storage.StreamRef) view {
	ctx := context.Background()
	to := indextest.Base + 1000*hour
	spans, err := ix.Spans(ctx, ref, 0, to)
	require.NoError(t, err)
	segs, err := ix.Segments(ctx, ref, 0, to)
	require.NoError(t, err)
	last, _, err := ix.Latest(ctx, ref)
	require.NoError(t, err)
	return view{spans, segs, last}
}

// After a restart the stream loads from its summary: no manifest is read,
// and the answers are those of the index that wrote it.
func TestSummaryLoadReadsOneObject(t *testing.T) {
	backends(t, func(t *testing.T, store storage.Backend) {
		ref := indextest.Ref(t, "s1")
		ix := embedded.New(store, embedded.Options{})
		recordHours(t, ix, store, ref, 24)
		want := viewOf(t, ix, ref)

		reads := &indextest.ManifestReads{Backend: store}
		restarted := embedded.New(reads, embedded.Options{CacheBytes: -1})
		spans, err := restarted.Spans(context.Background(), ref, 0, indextest.Base+1000*hour)
		require.NoError(t, err)
		require.Equal(t, want.spans, spans)
		require.Zero(t, reads.Count(), "the load reads the summary, no manifest")
		require.Equal(t, want, viewOf(t, restarted, ref))
	})
}

// Data written before summaries existed (or whose summary is corrupt)
// loads from the manifests, and the load writes the summary for the next.
func TestSummaryUpgradeAndCorrupt(t *testing.T) {
	backends(t, func(t *testing.T, store storage.Backend) {
		ctx := context.Background()
		ref := indextest.Ref(t, "s1")
		ix := embedded.New(store, embedded.Options{})
		recordHours(t, ix, store, ref, 5)
		want := viewOf(t, ix, ref)
		for _, damage := range []func(){
			func() { require.NoError(t, store.Delete(ctx, []string{index.SummaryKey(ref)})) },
			func() {
				_, err := store.Put(ctx, index.SummaryKey(ref), strings.NewReader("not zstd"), 8, storage.PutOptions{})
				require.NoError(t, err)
			},
		} {
			damage()
			reads := &indextest.ManifestReads{Backend: store}
			require.Equal(t, want, viewOf(t, embedded.New(reads, embedded.Options{CacheBytes: -1}), ref))
			require.GreaterOrEqual(t, reads.Count(), int64(5), "every manifest is read")

			reads = &indextest.ManifestReads{Backend: store}
			_, err := embedded.New(reads, embedded.Options{CacheBytes: -1}).Spans(ctx, ref, 0, 1)
			require.NoError(t, err)
			require.Zero(t, reads.Count(), "the summary was written back")
		}
	})
}

// A crash between writing a manifest and the summary leaves the summary
// describing the old manifest: the load sees the difference and reads it.
func TestSummaryStaleAfterCrash(t *testing.T) {
	backends(t, func(t *testing.T, store storage.Backend) {
		ctx := context.Background()
		ref := indextest.Ref(t, "s1")
		recordHours(t, embedded.New(store, embedded.Options{}), store, ref, 3)
		// The "crashed" compaction: the manifest of hour 1 gains a
		// segment, the summary is not rewritten.
		h1 := indextest.Base + hour
		m, err := index.ReadManifest(ctx, store, ref, h1)
		require.NoError(t, err)
		late := indextest.Seg(h1 + 30*60_000)
		indextest.Store(t, store, ref, late)
		require.NoError(t, index.WriteManifest(ctx, store, ref, h1, append(m, late)))

		restarted := embedded.New(store, embedded.Options{})
		got, err := restarted.Lookup(ctx, ref, late.Start)
		require.NoError(t, err)
		require.Equal(t, late.Start, got.Start)
		spans, err := restarted.Spans(ctx, ref, h1, h1+hour)
		require.NoError(t, err)
		require.Contains(t, spans, index.Span{Start: late.Start, End: late.End()})
		// A segment object in a summarised hour that no manifest lists
		// (stored, then a crash before compaction) is found too.
		orphan := indextest.Seg(indextest.Base + 2*hour + 40*60_000)
		indextest.Store(t, store, ref, orphan)
		again := embedded.New(store, embedded.Options{})
		n, err := again.OpenCount(ctx, ref)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		_, err = again.Lookup(ctx, ref, orphan.Start)
		require.NoError(t, err)
	})
}

// Retention and purges delete manifests behind the summary: a restarted
// index never lists the deleted hours.
func TestSummaryNeverListsDeletedHours(t *testing.T) {
	backends(t, func(t *testing.T, store storage.Backend) {
		ctx := context.Background()
		ref := indextest.Ref(t, "s1")
		ix := embedded.New(store, embedded.Options{})
		recordHours(t, ix, store, ref, 4)
		// Retention: the first two hours go, objects and manifests.
		var keys []string
		for h := range int64(2) {
			hs := indextest.Base + h*hour
			keys = append(keys, ref.ManifestKey(time.UnixMilli(hs)))
			for i := range int64(3) {
				keys = append(keys, ref.SegmentKey(hs+i*10_000))
			}
		}
		require.NoError(t, store.Delete(ctx, keys))
		require.NoError(t, ix.TrimBefore(ctx, ref, indextest.Base+2*hour))

		restarted := embedded.New(store, embedded.Options{})
		spans, err := restarted.Spans(ctx, ref, 0, indextest.Base+10*hour)
		require.NoError(t, err)
		require.NotEmpty(t, spans)
		require.GreaterOrEqual(t, spans[0].Start, indextest.Base+2*hour)
		segs, err := restarted.Segments(ctx, ref, 0, indextest.Base+10*hour)
		require.NoError(t, err)
		require.Len(t, segs, 6)

		// A purge deletes everything: nothing comes back from the summary.
		indextest.Purge(t, indextest.Fixture{Index: restarted, Store: store}, ref)
		spans, err = embedded.New(store, embedded.Options{}).Spans(ctx, ref, 0, indextest.Base+10*hour)
		require.NoError(t, err)
		require.Empty(t, spans)
	})
}

// A request that gives up while the stream loads does not cancel the load:
// the next request finds the stream loaded.
func TestLoadOutlivesItsRequest(t *testing.T) {
	store := newStore(t)
	ref := indextest.Ref(t, "s1")
	recordHours(t, embedded.New(store, embedded.Options{}), store, ref, 3)
	// Without a summary the load reads the manifests, which shows here.
	require.NoError(t, store.Delete(context.Background(), []string{index.SummaryKey(ref)}))

	reads := &indextest.ManifestReads{Backend: store}
	restarted := embedded.New(reads, embedded.Options{CacheBytes: -1})
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, _ = restarted.Add(gone, ref, indextest.Seg(indextest.Base+5*hour))
	loaded := reads.Count()
	require.Positive(t, loaded, "the load ran")
	spans, err := restarted.Spans(context.Background(), ref, 0, indextest.Base+10*hour)
	require.NoError(t, err)
	require.NotEmpty(t, spans)
	require.Equal(t, loaded, reads.Count(), "the stream stayed loaded")
}

// A summary that passes every check yet lies (written by a bug, say) is
// what a load believes; an operator's rebuild reads the manifests alone
// and writes the summary anew.
func TestRebuildIgnoresSummary(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	ref := indextest.Ref(t, "s1")
	ix := embedded.New(store, embedded.Options{})
	recordHours(t, ix, store, ref, 3)
	want := viewOf(t, ix, ref)

	rc, _, err := store.Get(ctx, index.SummaryKey(ref), 0, -1)
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	rc.Close()
	tol, digests, err := index.DecodeSummary(b)
	require.NoError(t, err)
	d := digests[indextest.Base]
	d.Spans = d.Spans[:0]
	digests[indextest.Base] = d
	require.NoError(t, index.WriteSummary(ctx, store, ref, tol, digests))

	restarted := embedded.New(store, embedded.Options{})
	require.NotEqual(t, want.spans, viewOf(t, restarted, ref).spans, "the lie is believed")
	require.NoError(t, restarted.Rebuild(ctx, ref))
	require.Equal(t, want, viewOf(t, restarted, ref))
	require.Equal(t, want, viewOf(t, embedded.New(store, embedded.Options{}), ref), "the summary was rewritten")
}

// Compaction after a restart adds to the summary the load read, and drops
// the hours retention deleted.
func TestSummaryAcrossRestarts(t *testing.T) {
	backends(t, func(t *testing.T, store storage.Backend) {
		ctx := context.Background()
		ref := indextest.Ref(t, "s1")
		recordHours(t, embedded.New(store, embedded.Options{}), store, ref, 3)
		second := embedded.New(store, embedded.Options{})
		f := indextest.Fixture{Index: second, Store: store}
		for h := int64(3); h < 5; h++ {
			indextest.Ingest(t, f, ref, indextest.Seg(indextest.Base+h*hour))
		}
		require.NoError(t, second.Compact(ctx, indextest.Base+5*hour))
		want := viewOf(t, second, ref)

		reads := &indextest.ManifestReads{Backend: store}
		third := embedded.New(reads, embedded.Options{CacheBytes: -1})
		spans, err := third.Spans(ctx, ref, 0, indextest.Base+10*hour)
		require.NoError(t, err)
		require.Equal(t, want.spans, spans)
		require.Zero(t, reads.Count(), "the summary covers all five hours")

		// Retention deletes hour 0; the next compaction drops its digest.
		var keys []string
		for i := range int64(3) {
			keys = append(keys, ref.SegmentKey(indextest.Base+i*10_000))
		}
		require.NoError(t, store.Delete(ctx, append(keys, ref.ManifestKey(time.UnixMilli(indextest.Base)))))
		require.NoError(t, third.TrimBefore(ctx, ref, indextest.Base+hour))
		indextest.Ingest(t, indextest.Fixture{Index: third, Store: store}, ref, indextest.Seg(indextest.Base+5*hour))
		require.NoError(t, third.Compact(ctx, indextest.Base+6*hour))
		digests, err := index.ReadSummary(ctx, store, ref, index.DefaultGapTolerance.Milliseconds(), nil)
		require.NoError(t, err)
		require.Len(t, digests, 5)
		require.NotContains(t, digests, indextest.Base)
		require.Contains(t, digests, indextest.Base+5*hour)
	})
}
