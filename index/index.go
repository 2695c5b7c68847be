// Package index is the recording index: which segments a stream has, and
// the coverage spans they form. Open stream-hours live in the index itself
// (Redis, or the embedded one); closed hours are compacted into one
// zstd-compressed manifest object per stream-hour in storage, so the index
// stays small and can be rebuilt from storage alone.
package index

import (
	"context"
	"errors"

	"github.com/vigilcloud/vigil/storage"
)

// Segment is one stored media segment.
type Segment struct {
	Start       int64  `json:"start"` // Unix ms
	DurationMS  int64  `json:"duration_ms"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"` // hex; empty when unknown
	ContentType string `json:"content_type"`
	Width       int    `json:"width,omitempty"`
	Height      int    `json:"height,omitempty"`
}

// End is the Unix-ms instant the segment ends.
func (s Segment) End() int64 { return s.Start + s.DurationMS }

// Span is a stretch of contiguous coverage [Start, End) in Unix ms.
type Span struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// Index records segments per stream. Implementations are safe for
// concurrent use, also across processes where the backing store is shared.
//
// An unavailable backing store is reported as an error wrapping
// ErrUnavailable, so callers can answer 503.
type Index interface {
	// Add records seg. When a segment with the same start is already
	// recorded, Add changes nothing and returns that segment with
	// added == false. Add is durable when it returns nil.
	Add(ctx context.Context, ref storage.StreamRef, seg Segment) (existing Segment, added bool, err error)
	// Lookup returns the segment that starts at start, or an error matching
	// fs.ErrNotExist.
	Lookup(ctx context.Context, ref storage.StreamRef, start int64) (Segment, error)
	// Segments returns the segments that overlap [from, to), by start.
	Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]Segment, error)
	// Spans returns the coverage spans that overlap [from, to), by start.
	Spans(ctx context.Context, ref storage.StreamRef, from, to int64) ([]Span, error)
	// Latest returns the segment that ends last (of those, the one that
	// starts last) and the wall-clock time, Unix ms, at which an Add
	// recorded it: 0 when unknown (it came from storage in a rebuild). It
	// answers from per-stream state without reading storage, except for
	// indexes written before it existed. A stream without segments is an
	// error matching fs.ErrNotExist.
	Latest(ctx context.Context, ref storage.StreamRef) (seg Segment, receivedMS int64, err error)
	// Compact closes every hour of every stream that ends before the
	// cutoff (Unix ms): its open entries are merged into the hour's
	// manifest in storage and dropped from the index.
	Compact(ctx context.Context, cutoff int64) error
	// Rebuild replaces what the index holds for ref with what storage
	// holds: hour manifests and segment objects.
	Rebuild(ctx context.Context, ref storage.StreamRef) error
	// DropStream forgets everything recorded for ref (the objects are the
	// caller's to delete).
	DropStream(ctx context.Context, ref storage.StreamRef) error
	// Ping checks that the backing store answers.
	Ping(ctx context.Context) error
}

// ErrUnavailable marks errors of an index whose backing store does not answer.
var ErrUnavailable = errors.New("index: unavailable")
