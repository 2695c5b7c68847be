package index

import (
	"slices"
	"sort"
)

// Coverage spans. Two stretches are contiguous when the later one starts no
// more than tol ms after the earlier one ends (overlap counts too). A span
// list is kept sorted by start with every gap wider than tol, so it has one
// canonical form for a set of segments.

// SpansOf returns the coverage spans of segs (in any order).
func SpansOf(segs []Segment, tol int64) []Span {
	spans := make([]Span, 0, len(segs))
	for _, s := range segs {
		spans = append(spans, Span{Start: s.Start, End: s.End()})
	}
	return MergeSpans(spans, tol)
}

// MergeSpans sorts spans and merges the contiguous ones. It reuses the
// slice's backing array.
func MergeSpans(spans []Span, tol int64) []Span {
	if len(spans) == 0 {
		return nil
	}
	slices.SortFunc(spans, func(a, b Span) int { return cmpInt(a.Start, b.Start) })
	out := spans[:1]
	for _, s := range spans[1:] {
		last := &out[len(out)-1]
		if s.Start <= last.End+tol {
			last.End = max(last.End, s.End)
			continue
		}
		out = append(out, s)
	}
	return out
}

// InsertSpan adds s to a canonical span list and returns the new canonical
// list; spans may be modified in place.
func InsertSpan(spans []Span, s Span, tol int64) []Span {
	// lo is the first span that may touch s, hi the first one after it.
	lo := sort.Search(len(spans), func(i int) bool { return spans[i].End+tol >= s.Start })
	hi := sort.Search(len(spans), func(i int) bool { return spans[i].Start > s.End+tol })
	if lo < hi {
		s.Start = min(s.Start, spans[lo].Start)
		s.End = max(s.End, spans[hi-1].End)
	}
	return slices.Replace(spans, lo, hi, s)
}

// OverlappingSpans returns the spans of a canonical list that overlap
// [from, to), as a new slice.
func OverlappingSpans(spans []Span, from, to int64) []Span {
	lo := sort.Search(len(spans), func(i int) bool { return spans[i].End > from })
	hi := sort.Search(len(spans), func(i int) bool { return spans[i].Start >= to })
	if lo >= hi {
		return nil
	}
	return slices.Clone(spans[lo:hi])
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TrimSpans drops the coverage before before from a canonical span list: a
// span that ends by then goes, one that straddles it starts at before.
func TrimSpans(spans []Span, before int64) []Span {
	i := sort.Search(len(spans), func(i int) bool { return spans[i].End > before })
	out := slices.Clone(spans[i:])
	if len(out) > 0 && out[0].Start < before {
		out[0].Start = before
	}
	return out
}
