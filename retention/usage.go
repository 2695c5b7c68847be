package retention

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/vigilcloud/vigil/meter"
)

// UsageMeter is the meter's usage API that MeterUsage reports through.
type UsageMeter interface {
	ReportUsage(ctx context.Context, b meter.UsageBatch) (meter.UsageResult, error)
	StreamUsage(ctx context.Context, id string) (meter.StreamUsage, error)
}

// MeterUsage reports freed storage to the meter as usage batches with
// negative stored deltas (accepted also for deleted streams).
type MeterUsage struct {
	M   UsageMeter
	Now func() time.Time
}

var _ UsageZeroer = MeterUsage{}

// Freed implements Usage.
func (u MeterUsage) Freed(ctx context.Context, stream string, bytes, objects int64) error {
	return u.adjust(ctx, stream, -bytes, -objects)
}

// Adjust applies a signed stored-bytes correction (reconcile).
func (u MeterUsage) Adjust(ctx context.Context, stream string, bytes, objects int64) error {
	return u.adjust(ctx, stream, bytes, objects)
}

func (u MeterUsage) adjust(ctx context.Context, stream string, bytes, objects int64) error {
	now := time.Now
	if u.Now != nil {
		now = u.Now
	}
	t := now().UTC()
	res, err := u.M.ReportUsage(ctx, meter.UsageBatch{
		ID: "retention-" + newToken(), From: t, To: t,
		Entries: []meter.UsageEntry{{Stream: stream, StoredBytes: bytes, StoredObjects: objects}},
	})
	if err != nil {
		return err
	}
	if len(res.Rejected) > 0 {
		return fmt.Errorf("retention: meter refused usage of %s: %s", stream, res.Rejected[0].Reason)
	}
	return nil
}

// ZeroStored implements UsageZeroer: whatever the meter still counts as
// stored for a purged stream is given back.
func (u MeterUsage) ZeroStored(ctx context.Context, stream string) error {
	su, err := u.M.StreamUsage(ctx, stream)
	if err != nil {
		return err
	}
	if su.StorageBytes == 0 && su.StoredObjects == 0 {
		return nil
	}
	return u.adjust(ctx, stream, -su.StorageBytes, -su.StoredObjects)
}

// newToken names one usage batch, so that a retried report counts once.
func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
