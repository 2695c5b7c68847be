package retention

import (
	"context"
	"fmt"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/lifecycle"
)

// LifecycleRuleID names the safety-net rule vigil sets on its bucket.
const LifecycleRuleID = "vigil-retention-safety-net"

// SetLifecycle puts a bucket lifecycle rule that expires every object under
// prefix once it is days old: a safety net under the sweeper (objects it
// missed, a stream whose sweeps failed for long) set to the longest plan
// plus a margin. Object age counts from upload, so a backlog uploaded late
// is kept a little longer than its plan, never shorter. Other rules of the
// bucket are kept.
func SetLifecycle(ctx context.Context, c *minio.Client, bucket, prefix string, days int) error {
	if days < 1 {
		return fmt.Errorf("retention: lifecycle: days must be positive, not %d", days)
	}
	cfg, err := c.GetBucketLifecycle(ctx, bucket)
	if err != nil {
		if minio.ToErrorResponse(err).Code != "NoSuchLifecycleConfiguration" {
			return fmt.Errorf("retention: get lifecycle of %s: %w", bucket, err)
		}
		cfg = lifecycle.NewConfiguration()
	}
	rules := cfg.Rules[:0]
	for _, r := range cfg.Rules {
		if r.ID != LifecycleRuleID {
			rules = append(rules, r)
		}
	}
	cfg.Rules = append(rules, lifecycle.Rule{
		ID:         LifecycleRuleID,
		Status:     "Enabled",
		RuleFilter: lifecycle.Filter{Prefix: prefix},
		Expiration: lifecycle.Expiration{Days: lifecycle.ExpirationDays(days)},
	})
	if err := c.SetBucketLifecycle(ctx, bucket, cfg); err != nil {
		return fmt.Errorf("retention: set lifecycle of %s: %w", bucket, err)
	}
	return nil
}
