package index

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/storage"
)

// frozenIndex blocks every call until its context ends, as an index on a
// SIGSTOPped Redis does.
type frozenIndex struct{ Index }

func (frozenIndex) Lookup(ctx context.Context, ref storage.StreamRef, start int64) (Segment, error) {
	<-ctx.Done()
	return Segment{}, ctx.Err()
}

func (frozenIndex) Add(ctx context.Context, ref storage.StreamRef, seg Segment) (Segment, bool, error) {
	<-ctx.Done()
	return Segment{}, false, ctx.Err()
}

func TestWithDeadlineFailsFrozenCallsAsUnavailable(t *testing.T) {
	ix := WithDeadline(frozenIndex{}, 50*time.Millisecond)
	ref := storage.StreamRef{Account: "a", Camera: "c", Stream: "s"}
	if _, err := ix.Lookup(context.Background(), ref, 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Lookup: %v, want ErrUnavailable", err)
	}
	if _, _, err := ix.Add(context.Background(), ref, Segment{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Add: %v, want ErrUnavailable", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ix.Lookup(ctx, ref, 0); errors.Is(err, ErrUnavailable) || err == nil {
		t.Fatalf("Lookup with a cancelled caller: %v, want the caller's cancellation", err)
	}
}
