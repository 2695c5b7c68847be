package index_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/storage"
)

func sampleDigests() map[int64]index.HourDigest {
	info := storage.ObjectInfo{Size: 321, ModTime: time.Unix(1_700_000_000, 123_456_789)}
	return map[int64]index.HourDigest{
		hour:     index.DigestOf(hour, info, sampleSegs(), 2000),
		2 * hour: index.DigestOf(2*hour, info, nil, 2000),
	}
}

func TestSummaryRoundTrip(t *testing.T) {
	b, err := index.EncodeSummary(2000, sampleDigests())
	require.NoError(t, err)
	tol, got, err := index.DecodeSummary(b)
	require.NoError(t, err)
	require.EqualValues(t, 2000, tol)
	require.Equal(t, sampleDigests(), got)
	require.Equal(t, index.SpansOf(sampleSegs(), 2000), got[hour].Spans)
}

func TestDecodeSummaryRejects(t *testing.T) {
	good, err := index.EncodeSummary(2000, sampleDigests())
	require.NoError(t, err)
	for name, b := range map[string][]byte{
		"empty":         {},
		"truncated":     good[:len(good)/2],
		"oversized":     make([]byte, index.MaxSummarySize+1),
		"not zstd":      []byte("{}"),
		"version":       zstdOf(t, []byte(`{"v":2,"tol":0,"hours":[]}`)),
		"unknown field": zstdOf(t, []byte(`{"v":1,"tol":0,"hours":[],"x":1}`)),
		"trailing":      zstdOf(t, []byte(`{"v":1,"tol":0,"hours":[]} {}`)),
		"duplicated": zstdOf(t, []byte(`{"v":1,"tol":0,"hours":[{"hour":0,"size":1,"mtime":1,"starts":"","spans":[],"last":{}},`+
			`{"hour":0,"size":1,"mtime":1,"starts":"","spans":[],"last":{}}]}`)),
		"out of order": zstdOf(t, []byte(`{"v":1,"tol":0,"hours":[{"hour":0,"size":1,"mtime":1,"starts":"","spans":[{"start":50,"end":60},{"start":10,"end":20}],"last":{"start":50,"duration_ms":10,"size":1,"sha256":"","content_type":"video/mp4"}}]}`)),
		"outside hour": zstdOf(t, []byte(`{"v":1,"tol":0,"hours":[{"hour":0,"size":1,"mtime":1,"starts":"","spans":[{"start":3600000,"end":3600010}],"last":{"start":3600000,"duration_ms":10,"size":1,"sha256":"","content_type":"video/mp4"}}]}`)),
		"not an hour":  zstdOf(t, []byte(`{"v":1,"tol":0,"hours":[{"hour":5,"size":1,"mtime":1,"starts":"","spans":[],"last":{}}]}`)),
	} {
		_, _, err := index.DecodeSummary(b)
		require.ErrorIs(t, err, index.ErrCorruptSummary, name)
	}
}

func TestStartsHashIgnoresOrder(t *testing.T) {
	require.Equal(t, index.StartsHash([]int64{3, 1, 2}), index.StartsHash([]int64{1, 2, 3}))
	require.NotEqual(t, index.StartsHash([]int64{1, 2}), index.StartsHash([]int64{1, 2, 3}))
	require.NotEqual(t, index.StartsHash(nil), index.StartsHash([]int64{0}))
}

func FuzzDecodeSummary(f *testing.F) {
	good, _ := index.EncodeSummary(2000, sampleDigests())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add(zstdOf(f, []byte(`{"v":1,"tol":0,"hours":[{"hour":0,"spans":[{"start":5,"end":1}]}]}`)))
	f.Fuzz(func(t *testing.T, b []byte) {
		tol, digests, err := index.DecodeSummary(b)
		if err != nil {
			if !errors.Is(err, index.ErrCorruptSummary) {
				t.Fatalf("error %v does not match ErrCorruptSummary", err)
			}
			return
		}
		again, err := index.EncodeSummary(tol, digests)
		if err != nil {
			t.Fatalf("decoded summary does not re-encode: %v", err)
		}
		if _, d2, err := index.DecodeSummary(again); err != nil || len(d2) != len(digests) {
			t.Fatalf("round trip changed the summary: %v", err)
		}
	})
}
