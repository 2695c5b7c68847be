package index_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/indextest"
	"github.com/vigilcloud/vigil/storage"
)

func TestSegmentMetadataRoundTrip(t *testing.T) {
	ref := storage.StreamRef{Account: "a", Camera: "c", Stream: "s"}
	s := index.Segment{Start: hour + 5, DurationMS: 6000, Size: 3, SHA256: "beef", ContentType: "video/mp4", Width: 1280, Height: 720}
	got, err := index.SegmentFromObject(storage.ObjectInfo{Key: ref.SegmentKey(s.Start), Size: 3, ContentType: "video/mp4", Metadata: index.SegmentMetadata(s)})
	require.NoError(t, err)
	require.Equal(t, s, got)

	_, err = index.SegmentFromObject(storage.ObjectInfo{Key: ref.SegmentKey(s.Start), Metadata: map[string]string{}})
	require.Error(t, err, "a segment object without a duration cannot be indexed")
}

func TestScanStorage(t *testing.T) {
	ctx := context.Background()
	store := indextest.NewMemStore()
	ref := storage.StreamRef{Account: "a", Camera: "c", Stream: "s"}
	put := func(s index.Segment) {
		body := bytes.Repeat([]byte{1}, int(s.Size))
		_, err := store.Put(ctx, ref.SegmentKey(s.Start), bytes.NewReader(body), s.Size, storage.PutOptions{ContentType: s.ContentType, Metadata: index.SegmentMetadata(s)})
		require.NoError(t, err)
	}
	inManifest := index.Segment{Start: hour, DurationMS: 1000, Size: 4, ContentType: "video/mp4"}
	loose := index.Segment{Start: hour + index.HourMS + 7, DurationMS: 2000, Size: 5, ContentType: "video/mp4", SHA256: "aa"}
	put(inManifest)
	put(loose)
	// The manifest is authoritative for the objects it lists.
	listed := inManifest
	listed.SHA256 = "from-manifest"
	require.NoError(t, index.WriteManifest(ctx, store, ref, hour, []index.Segment{listed}))
	// A foreign object under seg/ is skipped.
	_, err := store.Put(ctx, ref.SegmentPrefix()+"junk", bytes.NewReader(nil), 0, storage.PutOptions{})
	require.NoError(t, err)

	st, err := index.ScanStorage(ctx, store, ref, nil)
	require.NoError(t, err)
	require.Equal(t, map[int64][]index.Segment{hour: {listed}}, st.Manifests)
	require.Equal(t, []index.Segment{loose}, st.Unindexed)
	require.Equal(t, []index.Segment{listed, loose}, st.All())
	require.Equal(t, hour, st.LastManifestHour())
}
