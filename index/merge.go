package index

import (
	"slices"
	"sort"
)

// MergeHour merges the open entries of a stream-hour into its manifest
// entries. Entries are deduplicated by start; a manifest entry wins over an
// open one (it was recorded first). The result is sorted by start. changed
// reports whether the result differs from manifest, i.e. whether the
// manifest needs writing.
func MergeHour(manifest, open []Segment) (merged []Segment, changed bool) {
	byStart := make(map[int64]bool, len(manifest))
	merged = make([]Segment, 0, len(manifest)+len(open))
	for _, s := range manifest {
		byStart[s.Start] = true
		merged = append(merged, s)
	}
	for _, s := range open {
		if byStart[s.Start] {
			continue
		}
		byStart[s.Start] = true
		merged = append(merged, s)
		changed = true
	}
	SortSegments(merged)
	return merged, changed
}

// SortSegments sorts segments by start.
func SortSegments(segs []Segment) {
	slices.SortFunc(segs, func(a, b Segment) int { return cmpInt(a.Start, b.Start) })
}

// Overlapping returns the segments of segs that overlap [from, to), sorted by
// start and deduplicated by start (the first occurrence wins). segs is not
// modified.
func Overlapping(segs []Segment, from, to int64) []Segment {
	return overlappingOwned(slices.Clone(segs), from, to)
}

// overlappingOwned is Overlapping on a slice the caller gives up: it is
// sorted and cut in place.
func overlappingOwned(out []Segment, from, to int64) []Segment {
	// A day is some 15,000 segments, nearly always sorted already (hours
	// of manifests in order, then a few open ones): a stable sort keeps
	// the first of equal starts, and a sorted list dedupes in one pass.
	byStart := func(a, b Segment) int { return cmpInt(a.Start, b.Start) }
	if !slices.IsSortedFunc(out, byStart) {
		slices.SortStableFunc(out, byStart)
	}
	out = slices.CompactFunc(out, func(a, b Segment) bool { return a.Start == b.Start })
	return slices.DeleteFunc(out, func(s Segment) bool {
		// A zero-length segment inside the range counts as overlapping.
		return !(s.Start < to && (s.End() > from || s.Start >= from))
	})
}

// FindSegment returns the segment of sorted segs that starts at start.
func FindSegment(segs []Segment, start int64) (Segment, bool) {
	i := sort.Search(len(segs), func(i int) bool { return segs[i].Start >= start })
	if i < len(segs) && segs[i].Start == start {
		return segs[i], true
	}
	return Segment{}, false
}

// HoursIn returns the hour starts (Unix ms) whose segments may overlap
// [from, to): from the hour MaxSegmentDuration before from up to the hour
// containing to-1, and no later than the last hour of year 9999: storage
// keys name the year in four digits, so a later hour would sort before
// every stored one (a caller asking for all of time listed nothing).
func HoursIn(from, to int64) (first, last int64) {
	lookback := int64(MaxSegmentDuration.Milliseconds())
	first = max(0, hourStart(from-lookback))
	last = min(hourStart(max(to-1, 0)), lastHour)
	first = min(first, last)
	return first, last
}

// lastHour is the start of the last hour of year 9999 (Unix ms),
// 9999-12-31T23:00:00Z.
const lastHour = 253402297200000

func hourStart(ms int64) int64 {
	if ms < 0 {
		return 0
	}
	return ms - ms%hourMS
}

// Later reports whether a ends after b, or ends with it and starts after
// it: the order in which Latest picks a stream's last segment.
func Later(a, b Segment) bool {
	return a.End() > b.End() || a.End() == b.End() && a.Start > b.Start
}

// LatestOf returns the segment of segs that Later puts last.
func LatestOf(segs []Segment) (Segment, bool) {
	if len(segs) == 0 {
		return Segment{}, false
	}
	best := segs[0]
	for _, s := range segs[1:] {
		if Later(s, best) {
			best = s
		}
	}
	return best, true
}
