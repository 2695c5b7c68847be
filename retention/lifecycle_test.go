package retention

import (
	"context"
	"testing"

	"github.com/minio/minio-go/v7/pkg/lifecycle"
	"github.com/stretchr/testify/require"

	tu "github.com/vigilcloud/vigil/internal/testutil"
)

func TestLifecycleSafetyNetOnMinIO(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := tu.StartMinIO(t)
	bucket := m.Bucket(t)
	mc := m.Client()
	// An operator's own rule is kept.
	own := lifecycle.NewConfiguration()
	own.Rules = []lifecycle.Rule{{ID: "tmp", Status: "Enabled", RuleFilter: lifecycle.Filter{Prefix: "tmp/"},
		Expiration: lifecycle.Expiration{Days: 1}}}
	require.NoError(t, mc.SetBucketLifecycle(ctx, bucket, own))

	require.Error(t, SetLifecycle(ctx, mc, bucket, "", 0))
	require.NoError(t, SetLifecycle(ctx, mc, bucket, "", 3660))
	require.NoError(t, SetLifecycle(ctx, mc, bucket, "", 3700)) // changed: replaced, not added
	cfg, err := mc.GetBucketLifecycle(ctx, bucket)
	require.NoError(t, err)
	ids := map[string]lifecycle.Rule{}
	for _, r := range cfg.Rules {
		ids[r.ID] = r
	}
	require.Len(t, ids, 2)
	require.Contains(t, ids, "tmp")
	require.Equal(t, lifecycle.ExpirationDays(3700), ids[LifecycleRuleID].Expiration.Days)
	require.Equal(t, "Enabled", ids[LifecycleRuleID].Status)
}
