package lease_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/lease"

	"github.com/stretchr/testify/require"
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
	st, err := machinetest.Restored(t, machinetest.Persist(t, h.M))
	require.NoError(t, err)
	require.Equal(t, "b", st.Leases.Leases["e"].Holder)

	// Malformed commands change nothing.
	_, err = h.Apply(cluster.CmdLeaseAcquire, "", "", lease.Cmd{Key: "", Holder: "a", TTLMS: 1})
	require.ErrorIs(t, err, accounts.ErrInvalid)
	_, err = h.Apply(cluster.CmdLeaseAcquire, "", "", lease.Cmd{Key: "x", Holder: "a"})
	require.ErrorIs(t, err, accounts.ErrInvalid)
	ids, _ := h.M.RecentRequests()
	require.Len(t, ids, 0, "lease commands are not recorded for dedupe")
}
