package index

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vigilcloud/vigil/storage"
)

// WithDeadline bounds the point calls of ix (Add, Lookup, Latest,
// DropStream, Ping) by d each, so that an index whose store stops
// answering fails them with ErrUnavailable (an upload answers 503) instead
// of holding the request. Range scans (Segments, Spans) and background
// work over many streams (Compact, Rebuild) pass through; their single
// store calls carry their own bounds (storage.WithDeadline, the Redis
// client's socket timeouts).
func WithDeadline(ix Index, d time.Duration) Index {
	if d <= 0 {
		return ix
	}
	return &deadlined{ix: ix, d: d}
}

type deadlined struct {
	ix Index
	d  time.Duration
}

var _ Index = (*deadlined)(nil)

var errTimedOut = errors.New("index did not answer in time")

func (x *deadlined) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, x.d, errTimedOut)
}

func (x *deadlined) wrap(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errTimedOut) && !errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("%w: no answer within %s: %w", ErrUnavailable, x.d, err)
	}
	return err
}

func (x *deadlined) Add(ctx context.Context, ref storage.StreamRef, seg Segment) (Segment, bool, error) {
	ctx, cancel := x.ctx(ctx)
	defer cancel()
	s, added, err := x.ix.Add(ctx, ref, seg)
	return s, added, x.wrap(ctx, err)
}

func (x *deadlined) Lookup(ctx context.Context, ref storage.StreamRef, start int64) (Segment, error) {
	ctx, cancel := x.ctx(ctx)
	defer cancel()
	s, err := x.ix.Lookup(ctx, ref, start)
	return s, x.wrap(ctx, err)
}

// Segments and Spans scan a range (a 30-day list reads hundreds of hour
// manifests), so they are bounded per store call, not as a whole.
func (x *deadlined) Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]Segment, error) {
	return x.ix.Segments(ctx, ref, from, to)
}

func (x *deadlined) Spans(ctx context.Context, ref storage.StreamRef, from, to int64) ([]Span, error) {
	return x.ix.Spans(ctx, ref, from, to)
}

// Latest is a point read: bounded like Lookup.
func (x *deadlined) Latest(ctx context.Context, ref storage.StreamRef) (Segment, int64, error) {
	ctx, cancel := x.ctx(ctx)
	defer cancel()
	s, recv, err := x.ix.Latest(ctx, ref)
	return s, recv, x.wrap(ctx, err)
}

func (x *deadlined) Compact(ctx context.Context, cutoff int64) error {
	return x.ix.Compact(ctx, cutoff)
}

func (x *deadlined) Rebuild(ctx context.Context, ref storage.StreamRef) error {
	return x.ix.Rebuild(ctx, ref)
}

func (x *deadlined) DropStream(ctx context.Context, ref storage.StreamRef) error {
	ctx, cancel := x.ctx(ctx)
	defer cancel()
	return x.wrap(ctx, x.ix.DropStream(ctx, ref))
}

func (x *deadlined) Ping(ctx context.Context) error {
	ctx, cancel := x.ctx(ctx)
	defer cancel()
	return x.wrap(ctx, x.ix.Ping(ctx))
}
