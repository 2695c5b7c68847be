package index

import (
	"context"
	"math"

	"github.com/vigilcloud/vigil/storage"
)

// Paging a segment list. A long window (a month is some 430,000 segments in
// 720 manifests) is read a page at a time: the stream's span summary says
// where coverage is, so empty stretches cost nothing, and only the hours a
// page needs are read.

// Lister is the part of an Index that PageSegments reads.
type Lister interface {
	Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]Segment, error)
	Spans(ctx context.Context, ref storage.StreamRef, from, to int64) ([]Span, error)
}

// PageSegments returns up to limit segments that overlap [from, to) and
// start at or after cursor (cursor <= from for the first page), by start,
// and the cursor of the next page: the start of the first segment left
// out, or -1 when none is.
func PageSegments(ctx context.Context, ix Lister, ref storage.StreamRef, from, to, cursor int64, limit int) ([]Segment, int64, error) {
	if limit <= 0 || to <= from || cursor >= to {
		return nil, -1, nil
	}
	lo := max(from, cursor)
	spans, err := ix.Spans(ctx, ref, lo, to)
	if err != nil {
		return nil, -1, err
	}
	out := make([]Segment, 0, min(limit+1, 4096))
	// Read the covered stretches in chunks: one hour first, so a small page
	// reads one or two manifests, then sized by the density seen.
	chunk := HourMS
	// Segments that start before next are taken already (or belong to an
	// earlier page); the first page also takes the one overlapping from.
	next := cursor
	if cursor <= from {
		next = math.MinInt64
	}
	for _, sp := range spans {
		a := max(sp.Start, lo)
		end := min(sp.End, to)
		for a < end {
			b := min(hourStart(a)+chunk, end)
			segs, err := ix.Segments(ctx, ref, a, b)
			if err != nil {
				return nil, -1, err
			}
			for _, s := range segs {
				if s.Start < next {
					continue // one that spans two chunks is taken once
				}
				if len(out) == limit {
					return out, s.Start, nil
				}
				out = append(out, s)
				next = s.Start + 1
			}
			// Size the next chunk to what the page still needs at the density
			// seen so far, so a day's page takes one or two rounds.
			if len(out) > 0 && b > lo {
				need := int64(limit + 1 - len(out))
				chunk = min(max(need*(b-lo)/int64(len(out))+HourMS, HourMS), 24*HourMS)
			} else {
				chunk = min(2*chunk, 24*HourMS)
			}
			a = b
		}
	}
	return out, -1, nil
}
