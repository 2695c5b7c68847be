package index

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/vigilcloud/vigil/storage"
)

// Metadata keys the ingest handler writes on every segment object, so that
// the index can be rebuilt from storage alone. The content type is the
// object's own (ObjectInfo.ContentType).
const (
	MetaDuration = "duration-ms"
	MetaSHA256   = "sha256"
	MetaWidth    = "width"
	MetaHeight   = "height"
	MetaHead     = "head"
)

// DefaultGapTolerance is how far apart two segments may be and still count
// as contiguous coverage.
const DefaultGapTolerance = time.Second

// MaxSegmentDuration bounds a segment's duration. Range reads look back this
// far for segments that started before the range, so ingest must reject
// longer segments.
const MaxSegmentDuration = time.Hour

const hourMS = int64(time.Hour / time.Millisecond)

// HourMS is the length of an index hour in milliseconds.
const HourMS = hourMS

// SegmentMetadata returns the object metadata that describes seg.
func SegmentMetadata(seg Segment) map[string]string {
	m := map[string]string{MetaDuration: strconv.FormatInt(seg.DurationMS, 10)}
	if seg.SHA256 != "" {
		m[MetaSHA256] = seg.SHA256
	}
	if seg.Width > 0 {
		m[MetaWidth] = strconv.Itoa(seg.Width)
	}
	if seg.Height > 0 {
		m[MetaHeight] = strconv.Itoa(seg.Height)
	}
	if seg.Head.Known() {
		m[MetaHead] = seg.Head.String()
	}
	return m
}

// SegmentFromObject reconstructs a segment from a segment object's Stat
// result (key, size, content type and metadata).
func SegmentFromObject(info storage.ObjectInfo) (Segment, error) {
	_, start, err := storage.ParseSegmentKey(info.Key)
	if err != nil {
		return Segment{}, err
	}
	seg := Segment{Start: start, Size: info.Size, ContentType: info.ContentType, SHA256: info.Metadata[MetaSHA256]}
	d, err := strconv.ParseInt(info.Metadata[MetaDuration], 10, 64)
	if err != nil || d < 0 || d > int64(MaxSegmentDuration/time.Millisecond) {
		return Segment{}, fmt.Errorf("index: segment %s: bad %s metadata %q", info.Key, MetaDuration, info.Metadata[MetaDuration])
	}
	seg.DurationMS = d
	// Resolution is optional: a bad value is dropped, not fatal.
	if w, err := strconv.Atoi(info.Metadata[MetaWidth]); err == nil && w > 0 {
		seg.Width = w
	}
	if h, err := strconv.Atoi(info.Metadata[MetaHeight]); err == nil && h > 0 {
		seg.Height = h
	}
	if hd, err := ParseHead(info.Metadata[MetaHead]); err == nil {
		seg.Head = hd
	}
	return seg, nil
}

// ErrInvalidSegment is a segment no index can hold (ValidateSegment): a
// permanent error, unlike ErrUnavailable.
var ErrInvalidSegment = errors.New("index: invalid segment")

// ValidateSegment checks what every implementation requires of Add's input.
func ValidateSegment(seg Segment) error {
	switch {
	case seg.Start < 0:
		return fmt.Errorf("%w: negative start %d", ErrInvalidSegment, seg.Start)
	case seg.DurationMS < 0 || seg.DurationMS > int64(MaxSegmentDuration/time.Millisecond):
		return fmt.Errorf("%w: duration %d ms out of range", ErrInvalidSegment, seg.DurationMS)
	case seg.Size < 0:
		return fmt.Errorf("%w: negative size %d", ErrInvalidSegment, seg.Size)
	}
	return nil
}
