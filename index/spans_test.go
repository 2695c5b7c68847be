package index_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
)

func seg(start, dur int64) index.Segment { return index.Segment{Start: start, DurationMS: dur} }

func TestSpansOf(t *testing.T) {
	const tol = 1000
	cases := []struct {
		name string
		segs []index.Segment
		want []index.Span
	}{
		{"none", nil, nil},
		{"one", []index.Segment{seg(0, 10)}, []index.Span{{0, 10}}},
		{"back to back", []index.Segment{seg(0, 10_000), seg(10_000, 10_000)}, []index.Span{{0, 20_000}}},
		{"gap within tolerance", []index.Segment{seg(0, 10_000), seg(11_000, 10_000)}, []index.Span{{0, 21_000}}},
		{"gap beyond tolerance", []index.Segment{seg(0, 10_000), seg(11_001, 10_000)}, []index.Span{{0, 10_000}, {11_001, 21_001}}},
		{"unsorted and overlapping", []index.Segment{seg(5_000, 10_000), seg(0, 10_000), seg(40_000, 1)}, []index.Span{{0, 15_000}, {40_000, 40_001}}},
		{"contained", []index.Segment{seg(0, 60_000), seg(10_000, 5_000)}, []index.Span{{0, 60_000}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, index.SpansOf(c.segs, tol))
		})
	}
}

func TestInsertSpanMatchesMerge(t *testing.T) {
	const tol = 1000
	cases := []struct {
		name   string
		spans  []index.Span
		insert index.Span
		want   []index.Span
	}{
		{"into empty", nil, index.Span{5, 10}, []index.Span{{5, 10}}},
		{"before all", []index.Span{{10_000, 20_000}}, index.Span{0, 5_000}, []index.Span{{0, 5_000}, {10_000, 20_000}}},
		{"after all", []index.Span{{0, 5_000}}, index.Span{10_000, 20_000}, []index.Span{{0, 5_000}, {10_000, 20_000}}},
		{"extends end", []index.Span{{0, 5_000}}, index.Span{6_000, 8_000}, []index.Span{{0, 8_000}}},
		{"extends start", []index.Span{{5_000, 8_000}}, index.Span{3_000, 4_000}, []index.Span{{3_000, 8_000}}},
		{"bridges two", []index.Span{{0, 5_000}, {10_000, 15_000}, {30_000, 31_000}}, index.Span{5_500, 9_500}, []index.Span{{0, 15_000}, {30_000, 31_000}}},
		{"swallows many", []index.Span{{0, 1}, {5_000, 6_000}, {10_000, 11_000}}, index.Span{0, 20_000}, []index.Span{{0, 20_000}}},
		{"inside", []index.Span{{0, 20_000}}, index.Span{5_000, 6_000}, []index.Span{{0, 20_000}}},
		{"between, apart", []index.Span{{0, 1_000}, {10_000, 11_000}}, index.Span{4_000, 5_000}, []index.Span{{0, 1_000}, {4_000, 5_000}, {10_000, 11_000}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			merged := index.MergeSpans(append(append([]index.Span(nil), c.spans...), c.insert), tol)
			require.Equal(t, c.want, merged)
			require.Equal(t, c.want, index.InsertSpan(append([]index.Span(nil), c.spans...), c.insert, tol))
		})
	}
}

func TestOverlappingSpans(t *testing.T) {
	spans := []index.Span{{0, 10}, {20, 30}, {40, 50}}
	require.Equal(t, []index.Span{{20, 30}}, index.OverlappingSpans(spans, 10, 40))
	require.Equal(t, []index.Span{{0, 10}, {20, 30}}, index.OverlappingSpans(spans, 9, 21))
	require.Nil(t, index.OverlappingSpans(spans, 10, 20))
	require.Equal(t, spans, index.OverlappingSpans(spans, -100, 100))
}

func TestMergeHour(t *testing.T) {
	manifest := []index.Segment{{Start: 10, Size: 1}, {Start: 30, Size: 1}}
	cases := []struct {
		name        string
		manifest    []index.Segment
		open        []index.Segment
		wantStarts  []int64
		wantSizes   []int64
		wantChanged bool
	}{
		{"no manifest", nil, []index.Segment{{Start: 20, Size: 2}, {Start: 5, Size: 2}}, []int64{5, 20}, []int64{2, 2}, true},
		{"new entries", manifest, []index.Segment{{Start: 20, Size: 2}}, []int64{10, 20, 30}, []int64{1, 2, 1}, true},
		{"manifest wins", manifest, []index.Segment{{Start: 10, Size: 2}}, []int64{10, 30}, []int64{1, 1}, false},
		{"nothing open", manifest, nil, []int64{10, 30}, []int64{1, 1}, false},
		{"open duplicates", nil, []index.Segment{{Start: 7, Size: 2}, {Start: 7, Size: 3}}, []int64{7}, []int64{2}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			merged, changed := index.MergeHour(c.manifest, c.open)
			require.Equal(t, c.wantChanged, changed)
			var starts, sizes []int64
			for _, s := range merged {
				starts = append(starts, s.Start)
				sizes = append(sizes, s.Size)
			}
			require.Equal(t, c.wantStarts, starts)
			require.Equal(t, c.wantSizes, sizes)
		})
	}
}

func TestOverlapping(t *testing.T) {
	segs := []index.Segment{seg(20, 10), seg(0, 10), seg(10, 10), seg(35, 0), seg(10, 99)}
	got := index.Overlapping(segs, 10, 36)
	require.Equal(t, []index.Segment{seg(10, 10), seg(20, 10), seg(35, 0)}, got)
	require.Empty(t, index.Overlapping(segs, 40, 50))
	require.Equal(t, seg(20, 10), segs[0], "the input is left as it was")

	// Sorted input (the common case) dedupes the same way; the first of
	// two entries with one start decides, also when it lies outside.
	sorted := []index.Segment{seg(0, 10), seg(10, 10), seg(10, 99), seg(20, 10), seg(40, 5), seg(40, 20)}
	require.Equal(t, []index.Segment{seg(10, 10), seg(20, 10)}, index.Overlapping(sorted, 10, 30))
	require.Empty(t, index.Overlapping([]index.Segment{seg(0, 5), seg(0, 50)}, 10, 20), "the first of a start wins")
}

func TestTrimSpans(t *testing.T) {
	spans := []index.Span{{0, 10}, {20, 30}, {40, 50}}
	require.Equal(t, []index.Span{{25, 30}, {40, 50}}, index.TrimSpans(spans, 25))
	require.Equal(t, []index.Span{{40, 50}}, index.TrimSpans(spans, 30))
	require.Equal(t, spans, index.TrimSpans(spans, 0))
	require.Empty(t, index.TrimSpans(spans, 50))
}
