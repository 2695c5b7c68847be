package storage

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSegmentKeyRoundTrip(t *testing.T) {
	ref := StreamRef{Account: "acme", Camera: "cam-1", Stream: "main_hd"}
	for _, ms := range []int64{
		0,
		1714979000000,
		time.Date(2024, 12, 31, 23, 59, 59, 999e6, time.UTC).UnixMilli(),
		time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
		time.Date(2024, 2, 29, 13, 0, 0, 0, time.UTC).UnixMilli() - 1,
	} {
		key := ref.SegmentKey(ms)
		got, start, err := ParseSegmentKey(key)
		require.NoError(t, err, key)
		require.Equal(t, ref, got)
		require.Equal(t, ms, start)
		require.True(t, strings.HasPrefix(key, ref.HourPrefix(time.UnixMilli(ms))))
		require.True(t, strings.HasPrefix(key, ref.DayPrefix(time.UnixMilli(ms))))
		require.True(t, strings.HasPrefix(key, ref.SegmentPrefix()))
		require.True(t, strings.HasPrefix(key, CameraPrefix("acme", "cam-1")))
	}
	require.Equal(t, "acme/cam-1/main_hd/seg/2024/05/06/07/1714979000000", ref.SegmentKey(1714979000000))
}

func TestManifestKeyRoundTrip(t *testing.T) {
	ref := StreamRef{Account: "a", Camera: "c", Stream: "s"}
	for _, tm := range []time.Time{
		time.Date(2024, 5, 6, 7, 0, 0, 0, time.UTC),
		time.Date(2024, 5, 6, 7, 59, 59, 0, time.UTC),
		time.Date(1999, 12, 31, 23, 30, 0, 0, time.UTC),
	} {
		key := ref.ManifestKey(tm)
		got, hour, err := ParseManifestKey(key)
		require.NoError(t, err, key)
		require.Equal(t, ref, got)
		require.Equal(t, HourStart(tm.UnixMilli()), hour)
		require.True(t, strings.HasPrefix(key, ref.ManifestPrefix()))
	}
	require.Equal(t, "a/c/s/idx/2024/05/06/07.zst", ref.ManifestKey(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)))
}

func TestParseSegmentKeyInvalid(t *testing.T) {
	for _, key := range []string{
		"",
		"a/c/s/seg/2024/05/06/07",                 // no start
		"a/c/s/idx/2024/05/06/07/1714979000000",   // not seg
		"a/c/s/seg/2024/05/06/08/1714979000000",   // wrong hour
		"a/c/s/seg/2024/05/06/07/01714979000000",  // leading zero
		"a/c/s/seg/2024/05/06/07/+1714979000000",  // sign
		"a/c/s/seg/1970/01/01/00/-1",              // negative
		"a/c/s/seg/2024/05/06/07/abc",             // not a number
		"a/c/s/seg/2024/05/06/07/1714979000000/x", // too deep
		"a.b/c/s/seg/2024/05/06/07/1714979000000", // bad account
		"a/c d/s/seg/2024/05/06/07/1714979000000", // bad camera
		"a/c//seg/2024/05/06/07/1714979000000",    // empty stream
		"/c/s/seg/2024/05/06/07/1714979000000",    // empty account
		"a/c/s/seg/2024/5/06/07/1714979000000",    // non-canonical month
		strings.Repeat("x", 65) + "/c/s/seg/2024/05/06/07/1714979000000",
	} {
		_, _, err := ParseSegmentKey(key)
		require.Error(t, err, key)
	}
}

func TestParseManifestKeyInvalid(t *testing.T) {
	for _, key := range []string{
		"",
		"a/c/s/idx/2024/05/06/07",       // no .zst
		"a/c/s/seg/2024/05/06/07.zst",   // not idx
		"a/c/s/idx/2024/05/06/7.zst",    // non-canonical hour
		"a/c/s/idx/2024/5/06/07.zst",    // non-canonical month
		"a/c/s/idx/2024/05/6/07.zst",    // non-canonical day
		"a/c/s/idx/2024/13/06/07.zst",   // month 13
		"a/c/s/idx/2024/05/06/24.zst",   // hour 24
		"a/c/s/idx/2024/02/30/00.zst",   // no such day
		"a/c/s/idx/2024/05/06/07.zst/x", // too deep
		"a!/c/s/idx/2024/05/06/07.zst",  // bad account
	} {
		_, _, err := ParseManifestKey(key)
		require.Error(t, err, key)
	}
}

func TestValidID(t *testing.T) {
	require.True(t, ValidID("a"))
	require.True(t, ValidID("A-z_09"))
	require.True(t, ValidID(strings.Repeat("x", 64)))
	for _, id := range []string{"", strings.Repeat("x", 65), "a/b", "a.b", "a b", "é", "a\x00"} {
		require.False(t, ValidID(id), id)
	}
	require.Error(t, StreamRef{Account: "a", Camera: "", Stream: "s"}.Validate())
	require.NoError(t, StreamRef{Account: "a", Camera: "c", Stream: "s"}.Validate())
}

func TestHourStart(t *testing.T) {
	tm := time.Date(2024, 5, 6, 7, 8, 9, 10e6, time.UTC)
	require.Equal(t, time.Date(2024, 5, 6, 7, 0, 0, 0, time.UTC).UnixMilli(), HourStart(tm.UnixMilli()))
}
