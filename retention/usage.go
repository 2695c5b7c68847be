package retention

import (
	"context"
	"fmt"

	"github.com/vigilcloud/vigil/meter"
)

// Aggregator is the node's usage aggregator (*meter.Aggregator): it
// journals each delta locally and submits them to the meter in batches, so
// a killed process neither loses nor double-counts one.
type Aggregator interface {
	Adjust(stream string, bytes, objects int64)
	Flush(ctx context.Context) error
}

// StreamUsages reads a stream's usage as the meter counts it.
type StreamUsages interface {
	StreamUsage(ctx context.Context, id string) (meter.StreamUsage, error)
}

// MeterUsage is the one way freed and corrected stored bytes reach the
// meter, for the sweeper, the purge worker and reconcile alike: through the
// node's Aggregator, read back from the meter where a count must be exact.
type MeterUsage struct {
	Agg Aggregator
	M   StreamUsages
}

var _ UsageZeroer = MeterUsage{}

// Freed implements Usage: the free goes out with the Aggregator's next
// batch (about a second).
func (u MeterUsage) Freed(ctx context.Context, stream string, bytes, objects int64) error {
	u.Agg.Adjust(stream, -bytes, -objects)
	return nil
}

// Adjust applies a signed stored-bytes correction (reconcile) and returns
// once the meter committed it. What this node still holds goes first, so a
// correction is never queued behind an earlier one it was measured without;
// if that fails, nothing is adjusted.
func (u MeterUsage) Adjust(ctx context.Context, stream string, bytes, objects int64) error {
	if err := u.Flush(ctx); err != nil {
		return err
	}
	u.Agg.Adjust(stream, bytes, objects)
	if err := u.Flush(ctx); err != nil {
		return fmt.Errorf("retention: usage adjustment of %s journaled, not yet committed: %w", stream, err)
	}
	return nil
}

// Flush submits what the Aggregator holds, so that the meter's counts are
// current for this node.
func (u MeterUsage) Flush(ctx context.Context) error {
	if err := u.Agg.Flush(ctx); err != nil {
		return fmt.Errorf("retention: flush usage: %w", err)
	}
	return nil
}

// StreamUsage reads the meter's count for stream.
func (u MeterUsage) StreamUsage(ctx context.Context, stream string) (meter.StreamUsage, error) {
	return u.M.StreamUsage(ctx, stream)
}

// ZeroStored implements UsageZeroer: whatever the meter still counts as
// stored for a purged stream is given back. The frees this node holds are
// flushed before the count is read (else they would be given back twice),
// and the give-back is committed before ZeroStored returns (the purge is
// marked done only after it).
func (u MeterUsage) ZeroStored(ctx context.Context, stream string) error {
	if err := u.Flush(ctx); err != nil {
		return err
	}
	su, err := u.M.StreamUsage(ctx, stream)
	if err != nil {
		return err
	}
	if su.StorageBytes == 0 && su.StoredObjects == 0 {
		return nil
	}
	u.Agg.Adjust(stream, -su.StorageBytes, -su.StoredObjects)
	return u.Flush(ctx)
}
