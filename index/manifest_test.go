package index_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/indextest"
	"github.com/vigilcloud/vigil/storage"
)

const hour = int64(1_700_000_000_000 / 3_600_000 * 3_600_000)

func sampleSegs() []index.Segment {
	return []index.Segment{
		{Start: hour + 10_000, DurationMS: 10_000, Size: 1234, SHA256: "ab", ContentType: "video/mp4", Width: 1920, Height: 1080},
		{Start: hour, DurationMS: 10_000, Size: 1000, ContentType: "video/mp2t"},
	}
}

func zstdOf(t testing.TB, b []byte) []byte {
	e, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	defer e.Close()
	return e.EncodeAll(b, nil)
}

func TestManifestRoundTrip(t *testing.T) {
	b, err := index.EncodeManifest(hour, sampleSegs())
	require.NoError(t, err)
	h, segs, err := index.DecodeManifest(b)
	require.NoError(t, err)
	require.Equal(t, hour, h)
	want := sampleSegs()
	index.SortSegments(want)
	require.Equal(t, want, segs)

	// An empty hour is a valid manifest with no segments.
	b, err = index.EncodeManifest(hour, nil)
	require.NoError(t, err)
	_, segs, err = index.DecodeManifest(b)
	require.NoError(t, err)
	require.Empty(t, segs)
}

func TestEncodeManifestRejectsBadInput(t *testing.T) {
	_, err := index.EncodeManifest(hour+1, nil)
	require.Error(t, err)
	_, err = index.EncodeManifest(hour, []index.Segment{{Start: hour - 1}})
	require.Error(t, err)
	_, err = index.EncodeManifest(hour, []index.Segment{{Start: hour}, {Start: hour}})
	require.Error(t, err)
}

func TestDecodeManifestDefects(t *testing.T) {
	good, err := index.EncodeManifest(hour, sampleSegs())
	require.NoError(t, err)
	jsonOf := func(v any) []byte { b, _ := json.Marshal(v); return b }
	cases := map[string][]byte{
		"empty":              nil,
		"truncated":          good[:len(good)-3],
		"half":               good[:len(good)/2],
		"not zstd":           []byte(`{"v":1,"hour":0,"segments":[]}`),
		"flipped byte":       append(append([]byte(nil), good[:len(good)-1]...), good[len(good)-1]^0xff),
		"oversized":          bytes.Repeat([]byte{0}, index.MaxManifestSize+1),
		"truncated json":     zstdOf(t, []byte(`{"v":1,"hour":0,"segme`)),
		"no segments":        zstdOf(t, []byte(`{"v":1,"hour":0}`)),
		"null segments":      zstdOf(t, []byte(`{"v":1,"hour":0,"segments":null}`)),
		"version 2":          zstdOf(t, jsonOf(map[string]any{"v": 2, "hour": 0, "segments": []any{}})),
		"unknown field":      zstdOf(t, []byte(`{"v":1,"hour":0,"segments":[],"x":1}`)),
		"trailing":           zstdOf(t, []byte(`{"v":1,"hour":0,"segments":[]}{}`)),
		"outside hour":       zstdOf(t, []byte(`{"v":1,"hour":0,"segments":[{"start":3600000}]}`)),
		"unsorted":           zstdOf(t, []byte(`{"v":1,"hour":0,"segments":[{"start":2},{"start":1}]}`)),
		"decompression bomb": zstdOf(t, bytes.Repeat([]byte(" "), index.MaxManifestSize+10)),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			_, segs, err := index.DecodeManifest(b)
			require.ErrorIs(t, err, index.ErrCorruptManifest)
			require.Nil(t, segs)
		})
	}
}

func TestReadWriteManifest(t *testing.T) {
	ctx := context.Background()
	store := indextest.NewMemStore()
	ref := storage.StreamRef{Account: "a", Camera: "c", Stream: "s"}
	_, err := index.ReadManifest(ctx, store, ref, hour)
	require.ErrorIs(t, err, fs.ErrNotExist)

	require.NoError(t, index.WriteManifest(ctx, store, ref, hour, sampleSegs()))
	require.NoError(t, index.WriteManifest(ctx, store, ref, hour+2*index.HourMS, nil))
	segs, err := index.ReadManifest(ctx, store, ref, hour)
	require.NoError(t, err)
	require.Len(t, segs, 2)

	hours, err := index.ManifestHours(ctx, store, ref, hour, hour+5*index.HourMS)
	require.NoError(t, err)
	require.Equal(t, []int64{hour, hour + 2*index.HourMS}, hours)
	hours, err = index.ManifestHours(ctx, store, ref, hour+index.HourMS, hour+index.HourMS)
	require.NoError(t, err)
	require.Empty(t, hours)

	// A manifest stored under another hour's key is corrupt, not silently used.
	b, _ := index.EncodeManifest(hour, sampleSegs())
	_, err = store.Put(ctx, ref.ManifestKey(time.UnixMilli(hour+index.HourMS)), bytes.NewReader(b), int64(len(b)), storage.PutOptions{})
	require.NoError(t, err)
	_, err = index.ReadManifest(ctx, store, ref, hour+index.HourMS)
	require.ErrorIs(t, err, index.ErrCorruptManifest)
}
