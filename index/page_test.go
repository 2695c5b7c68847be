package index_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/storage"
)

// sliceLister serves a sorted segment list and counts what Segments reads.
type sliceLister struct {
	segs  []index.Segment
	read  int64 // ms of window read
	calls int
}

func (l *sliceLister) Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Segment, error) {
	l.calls++
	l.read += to - from
	return index.Overlapping(l.segs, from, to), nil
}

func (l *sliceLister) Spans(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Span, error) {
	return index.OverlappingSpans(index.SpansOf(l.segs, 1000), from, to), nil
}

// A page reads only the hours it needs, however long the window, and a
// gap in coverage costs no reads.
func TestPageSegmentsReadsWhatThePageNeeds(t *testing.T) {
	ctx := context.Background()
	const day = 24 * index.HourMS
	base := int64(1_717_200_000_000) / index.HourMS * index.HourMS
	l := &sliceLister{}
	// 6-s segments over days 0-1 and 20-29: a 18-day gap between.
	for _, d := range [][2]int64{{0, 2}, {20, 30}} {
		for s := base + d[0]*day; s < base+d[1]*day; s += 6000 {
			l.segs = append(l.segs, index.Segment{Start: s, DurationMS: 6000, Size: 1})
		}
	}
	ref := storage.StreamRef{Account: "a", Camera: "c", Stream: "s"}

	page, next, err := index.PageSegments(ctx, l, ref, base, base+30*day, base, 10)
	require.NoError(t, err)
	require.Len(t, page, 10)
	require.Equal(t, base+60_000, next)
	require.Equal(t, 1, l.calls)
	require.LessOrEqual(t, l.read, index.HourMS, "ten segments read one hour")

	// The page across the gap reads nothing of it.
	*l = sliceLister{segs: l.segs}
	last := base + 2*day - 6000
	page, next, err = index.PageSegments(ctx, l, ref, base, base+30*day, last, 3)
	require.NoError(t, err)
	require.Equal(t, []int64{last, base + 20*day, base + 20*day + 6000}, []int64{page[0].Start, page[1].Start, page[2].Start})
	require.Equal(t, base+20*day+12_000, next)
	require.LessOrEqual(t, l.read, 3*index.HourMS)

	// A day's page (14,400 segments) takes a few rounds, not one per hour.
	*l = sliceLister{segs: l.segs}
	page, next, err = index.PageSegments(ctx, l, ref, base+20*day, base+21*day, base+20*day, 20_000)
	require.NoError(t, err)
	require.Len(t, page, 14_400)
	require.Equal(t, int64(-1), next)
	require.LessOrEqual(t, l.calls, 3)
}
