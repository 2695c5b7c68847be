package meter

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/entitlement"
	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/purge"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testNode is a single-voter member with the domains the meter needs.
type testNode struct {
	*cluster.Peer
	Accounts *accounts.Registry
	Meter    *Meter
}

// ReportUsage lets a testNode stand in for the meter (UsageReporter).
func (n *testNode) ReportUsage(ctx context.Context, b UsageBatch) (UsageResult, error) {
	return n.Meter.ReportUsage(ctx, b)
}

func newMachine() (*cluster.Machine, *accounts.State, *State) {
	m := cluster.NewMachine(slog.New(slog.DiscardHandler))
	accts := accounts.Register(m, purge.Register(m))
	lease.Register(m) // every command type has its apply function
	access.Register(m, accts)
	entitlement.Register(m, accts)
	return m, accts, Register(m, accts)
}

func openMeter(t *testing.T, dir, addr string) *testNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, accts, st := newMachine()
	p, err := cluster.OpenPeer(ctx, cluster.PeerConfig{Dir: dir, NodeID: "m1", RaftAddr: addr,
		HeartbeatTimeout: 50 * time.Millisecond, Now: func() time.Time { return t0 }}, m)
	require.NoError(t, err)
	return &testNode{Peer: p, Accounts: accounts.New(accts, p, nil), Meter: New(st, p, nil)}
}

// serve and provision give a node reseller r1, sub-account s1, bridge b1
// and camera c1 with streams c1-main and c1-sub.
func serve(t *testing.T, n *testNode) *testNode { return n }

func provision(t *testing.T, n *testNode) {
	t.Helper()
	ctx := context.Background()
	ip := func(v int) *int { return &v }
	_, err := n.Accounts.CreateAccount(ctx, "", accounts.NewAccount{ID: "r1", Name: "Reseller", Defaults: accounts.Defaults{RetentionDays: 60}})
	require.NoError(t, err)
	_, err = n.Accounts.CreateAccount(ctx, "", accounts.NewAccount{ID: "s1", Name: "Sub", Parent: "r1", BillingCycle: accounts.CycleAnnual})
	require.NoError(t, err)
	_, err = n.Accounts.CreateBridge(ctx, "", "s1", accounts.NewBridge{ID: "b1", Name: "Bridge"})
	require.NoError(t, err)
	_, err = n.Accounts.CreateCamera(ctx, "", "b1", accounts.NewCamera{ID: "c1", Name: "Door", Streams: []accounts.NewStream{
		{ID: "c1-main", Width: ip(1920), Height: ip(1080)},
		{ID: "c1-sub", Width: ip(640), Height: ip(480), RetentionDays: ip(7), Analytics: []string{"people"}},
	}})
	require.NoError(t, err)
}

// harness applies commands to a bare machine, as raft would.
type harness struct {
	t     *testing.T
	m     *cluster.Machine
	st    *State
	index uint64
	clock time.Time
}

func newHarness(t *testing.T) *harness {
	m, _, st := newMachine()
	return &harness{t: t, m: m, st: st, clock: t0}
}

func (h *harness) must(typ, rid, nonce string, payload any) json.RawMessage {
	h.t.Helper()
	h.clock = h.clock.Add(time.Minute)
	b, err := cluster.EncodeCommand(typ, rid, h.clock, nonce, payload)
	require.NoError(h.t, err)
	h.index++
	r := h.m.Apply(&raft.Log{Index: h.index, Data: b}).(*cluster.Result)
	require.NoError(h.t, r.Error())
	return r.Data
}
