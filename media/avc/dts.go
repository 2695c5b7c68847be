package avc

import (
	"slices"
)

// DTSExtractor derives decode timestamps for access units that arrive in
// decode order carrying only a presentation timestamp (RTP), as MP4 needs
// both. It is a bounded reorder buffer: the n-th DTS is the n-th smallest
// PTS of the stream, which it knows once Depth more frames arrived,
// shifted back by the largest reordering seen in the first window so that
// DTS <= PTS. Streams without B-frames get DTS = PTS. It works on
// timestamps only, so H.265 uses it too. Not safe for concurrent use.
type DTSExtractor[T any] struct {
	depth   int
	pending []Frame[T] // decode order, DTS not yet known
	out     []Frame[T] // emit's result, reused
	ptss    []int64    // PTS not yet used as a DTS, sorted
	shift   int64
	shifted bool  // shift is known
	last    int64 // last DTS handed out
	started bool
}

// Frame is an access unit with its timestamps (any unit, e.g. 90 kHz).
type Frame[T any] struct {
	PTS, DTS int64
	V        T
}

// DefaultReorderDepth covers x264's and x265's B-pyramids (reorder depth
// up to 4 frames).
const DefaultReorderDepth = 4

// NewDTSExtractor returns an extractor buffering depth frames (<= 0:
// DefaultReorderDepth).
func NewDTSExtractor[T any](depth int) *DTSExtractor[T] {
	if depth <= 0 {
		depth = DefaultReorderDepth
	}
	return &DTSExtractor[T]{depth: depth}
}

// Push adds the next access unit in decode order and returns the frames
// whose DTS became known, in decode order, with strictly increasing DTS.
// The result is valid until the next Push or Flush.
func (e *DTSExtractor[T]) Push(pts int64, v T) []Frame[T] {
	e.pending = append(e.pending, Frame[T]{PTS: pts, V: v})
	i, _ := slices.BinarySearch(e.ptss, pts)
	e.ptss = slices.Insert(e.ptss, i, pts)
	if len(e.pending) <= e.depth {
		return nil
	}
	return e.emit(len(e.pending) - e.depth)
}

// Flush returns every buffered frame (end of stream), valid until the
// next Push or Flush. The extractor keeps
// its timeline: later pushes continue after the last DTS.
func (e *DTSExtractor[T]) Flush() []Frame[T] {
	return e.emit(len(e.pending))
}

func (e *DTSExtractor[T]) emit(n int) []Frame[T] {
	if n <= 0 {
		return nil
	}
	if !e.shifted {
		// The largest distance between a frame's decode position and its
		// presentation position in the first window.
		for i, f := range e.pending {
			if d := e.ptss[i] - f.PTS; d > e.shift {
				e.shift = d
			}
		}
		e.shifted = true
	}
	out := slices.Grow(e.out[:0], n)[:n]
	for i := range n {
		f := e.pending[i]
		dts := e.ptss[i] - e.shift
		if e.started && dts <= e.last {
			dts = e.last + 1 // duplicate PTS or deeper reordering than Depth
		}
		e.last, e.started = dts, true
		f.DTS = dts
		out[i] = f
	}
	e.pending = slices.Delete(e.pending, 0, n)
	e.ptss = slices.Delete(e.ptss, 0, n)
	e.out = out
	return out
}
