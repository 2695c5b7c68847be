// Package index is the recording index: which segments a stream has, and
// the coverage spans they form. Open stream-hours live in the index itself
// (Redis, or the embedded one); closed hours are compacted into one
// zstd-compressed manifest object per stream-hour in storage, so the index
// stays small and can be rebuilt from storage alone.
package index

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

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
	// Head names an fMP4 segment's init section and first decode time, so
	// that HLS can split a playlist into runs without reading storage.
	// Zero (absent in entries written before it existed) is unknown.
	Head Head `json:"head,omitzero"`
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

// HeadInitBytes is how much of the init section's SHA-256 a Head keeps:
// runs only compare neighbouring segments of one stream, and 64 bits keep
// the entry small.
const HeadInitBytes = 8

// Head identifies an fMP4 segment's head: a prefix of the SHA-256 of its
// init section (the bytes before the first moof), and the first traf's
// track, timescale and decode time (tfdt), Scale 0 when those are unknown.
// It is encoded as text, "<init hex>" or "<init hex>/track/scale/tfdt".
type Head struct {
	Init         [HeadInitBytes]byte
	Track, Scale uint32
	TFDT         uint64
}

// Known reports whether h names an init section.
func (h Head) Known() bool { return h.Init != [HeadInitBytes]byte{} }

// MarshalText encodes h; the zero Head is empty.
func (h Head) MarshalText() ([]byte, error) {
	if !h.Known() {
		return nil, nil
	}
	b := hex.AppendEncode(nil, h.Init[:])
	if h.Scale != 0 {
		b = fmt.Appendf(b, "/%d/%d/%d", h.Track, h.Scale, h.TFDT)
	}
	return b, nil
}

// String is the text encoding of h.
func (h Head) String() string {
	b, _ := h.MarshalText()
	return string(b)
}

// UnmarshalText decodes what MarshalText encodes; empty is the zero Head.
func (h *Head) UnmarshalText(b []byte) error {
	p, err := ParseHead(string(b))
	if err != nil {
		return err
	}
	*h = p
	return nil
}

// ParseHead decodes a Head's text encoding.
func ParseHead(s string) (Head, error) {
	var h Head
	if s == "" {
		return h, nil
	}
	init, rest, timed := strings.Cut(s, "/")
	if len(init) != 2*HeadInitBytes {
		return Head{}, fmt.Errorf("index: head %q: bad init hash", s)
	}
	if _, err := hex.Decode(h.Init[:], []byte(init)); err != nil || !h.Known() {
		return Head{}, fmt.Errorf("index: head %q: bad init hash", s)
	}
	if !timed {
		return h, nil
	}
	f := strings.Split(rest, "/")
	if len(f) != 3 {
		return Head{}, fmt.Errorf("index: head %q: want init/track/scale/tfdt", s)
	}
	track, err1 := strconv.ParseUint(f[0], 10, 32)
	scale, err2 := strconv.ParseUint(f[1], 10, 32)
	tfdt, err3 := strconv.ParseUint(f[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || scale == 0 {
		return Head{}, fmt.Errorf("index: head %q: bad decode time", s)
	}
	h.Track, h.Scale, h.TFDT = uint32(track), uint32(scale), tfdt
	return h, nil
}
