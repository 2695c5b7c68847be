package lease_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/lease"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

func TestFSMLease(t *testing.T) {
	h := machinetest.New(t) // every apply is a minute after the last
	acq := func(key, holder string, ttl time.Duration, renew bool) lease.LeaseResult {
		t.Helper()
		var r lease.LeaseResult
		require.NoError(t, json.Unmarshal(h.Must(cluster.CmdLeaseAcquire, "", "", lease.Cmd{Key: key, Holder: holder, TTLMS: ttl.Milliseconds(), Renew: renew}), &r))
		return r
	}
	long := 10 * time.Minute
	require.True(t, acq("k", "a", long, false).Held)
	r := acq("k", "b", long, false)
	require.False(t, r.Held, "held by a")
	require.Equal(t, "a", r.Holder)
	require.True(t, acq("other", "b", long, false).Held, "keys are independent")
	require.True(t, acq("k", "a", long, true).Held, "the holder renews")
	require.True(t, acq("k", "a", long, false).Held, "a repeated acquire by the holder holds")
	h.Must(cluster.CmdLeaseRelease, "", "", lease.Cmd{Key: "k", Holder: "b"})
	require.False(t, acq("k", "b", long, false).Held, "a non-holder's release frees nothing")
	h.Must(cluster.CmdLeaseRelease, "", "", lease.Cmd{Key: "k", Holder: "a"})
	require.False(t, acq("k", "a", long, true).Held, "a released lease cannot be renewed")
	require.True(t, acq("k", "b", long, false).Held, "released")

	// Expiry at the proposer's time: a one-minute lease is gone at the next
	// apply, and then the old holder cannot renew it.
	require.True(t, acq("e", "a", time.Minute, false).Held)
	require.True(t, acq("e", "b", long, false).Held, "expired")
	require.False(t, acq("e", "a", long, true).Held, "lost")
	require.True(t, acq("gone", "c", time.Minute, false).Held)
	acq("x", "c", long, false)
	require.NotContains(t, h.M.Leases.Leases, "gone", "expired leases are dropped")

	// Snapshots keep the leases.
	st, err := decodeState(bytes.NewReader(machinetest.Persist(t, h.M)))
	require.NoError(t, err)
	require.Equal(t, "b", st.Leases["e"].Holder)

	// Malformed commands change nothing.
	_, err = h.Apply(cluster.CmdLeaseAcquire, "", "", lease.Cmd{Key: "", Holder: "a", TTLMS: 1})
	require.ErrorIs(t, err, accounts.ErrInvalid)
	_, err = h.Apply(cluster.CmdLeaseAcquire, "", "", lease.Cmd{Key: "x", Holder: "a"})
	require.ErrorIs(t, err, accounts.ErrInvalid)
	require.Len(t, h.f.st.Requests, 0, "lease commands are not recorded for dedupe")
}

// TestLeaseOnThreeNodeCluster: workers on three real raft nodes (followers
// forward to the leader) contend for the same keys; at no time do two of
// them hold one key.
func TestLeaseOnThreeNodeCluster(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu      sync.Mutex
		holders = map[string]string{}
		grants  atomic.Int64
		g       errgroup.Group
	)
	keys := []string{"sweep/a", "sweep/b"}
	for i, n := range nodes {
		g.Go(func() error {
			for round := range 15 {
				key := keys[round%len(keys)]
				holder := fmt.Sprintf("n%d-%d", i, round)
				r, err := n.m.Leases.AcquireLease(ctx, key, holder, 30*time.Second, false)
				if err != nil {
					return err
				}
				if !r.Held {
					continue
				}
				grants.Add(1)
				mu.Lock()
				if other := holders[key]; other != "" {
					mu.Unlock()
					return fmt.Errorf("%s granted to %s while %s holds it", key, holder, other)
				}
				holders[key] = holder
				mu.Unlock()
				if r, err := n.m.Leases.AcquireLease(ctx, key, holder, 30*time.Second, true); err != nil || !r.Held {
					return fmt.Errorf("renew %s by %s: %v %+v", key, holder, err, r)
				}
				mu.Lock()
				delete(holders, key)
				mu.Unlock()
				if err := n.m.Leases.ReleaseLease(ctx, key, holder); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	require.Greater(t, grants.Load(), int64(len(keys)), "leases were taken and given back")
}
