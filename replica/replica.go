// Package replica assembles vigil's replicated state machine from its
// domains (accounts, purge, lease, meter, access) on one cluster member, and gives
// each domain's service over it (and billing's, which reads them all).
package replica

import (
	"context"
	"log/slog"
	"time"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/entitlement"
	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/purge"
)

// Machine is the state machine with every domain registered.
type Machine struct {
	*cluster.Machine
	Accounts *accounts.State
	Purges   *purge.State
	Leases   *lease.State
	Usage    *meter.State
	Access   *access.State
	// Entitlements: licences down the sales chain (issue 16).
	Entitlements *entitlement.State
}

// NewMachine returns an empty state machine with every domain registered:
// what a node runs, and what harnesses that run raft themselves use.
func NewMachine(log *slog.Logger) *Machine {
	m := &Machine{Machine: cluster.NewMachine(log)}
	m.Purges = purge.Register(m.Machine)
	m.Accounts = accounts.Register(m.Machine, m.Purges)
	m.Leases = lease.Register(m.Machine)
	m.Usage = meter.Register(m.Machine, m.Accounts)
	m.Access = access.Register(m.Machine, m.Accounts)
	m.Entitlements = entitlement.Register(m.Machine, m.Accounts)
	return m
}

// Billing returns billing over m's state that only evaluates (no sealing).
func (m *Machine) Billing() *billing.Billing {
	b := billing.New(m.Machine, m.Accounts, m.Usage, nil, nil, nil)
	b.SetCoverage(m.Entitlements)
	return b
}

// Replica is a running member with every domain's service.
type Replica struct {
	*cluster.Peer
	Machine  *Machine
	Accounts *accounts.Registry
	Purges   *purge.Jobs
	Leases   *lease.Table
	Meter    *meter.Meter
	Billing  *billing.Billing
	// Access has the default configuration (no mailer, no login limiter);
	// a node replaces it with access.New(Machine.Access, Peer, its config).
	Access *access.Registry
	// Entitlements has no mailer; a node replaces it with
	// entitlement.New(Machine.Entitlements, Peer, its config).
	Entitlements *entitlement.Registry
}

// Open starts the member (cluster.OpenPeer) on a new machine.
func Open(ctx context.Context, cfg cluster.PeerConfig) (*Replica, error) {
	m := NewMachine(cfg.Logger)
	p, err := cluster.OpenPeer(ctx, cfg, m.Machine)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	r := &Replica{Peer: p, Machine: m,
		Accounts: accounts.New(m.Accounts, p, log),
		Purges:   purge.New(m.Purges, p, log),
		Leases:   lease.NewTable(p),
		Meter:    meter.New(m.Usage, p, log),
	}
	r.Access = access.New(m.Access, p, access.Config{Log: log, Now: cfg.Now, Accounts: r.Accounts})
	r.Accounts.SetAuditor(r.Access)
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(purge.NewMetrics(m.Purges, now))
	}
	r.Billing = billing.New(m.Machine, m.Accounts, m.Usage, r.Meter, now, log)
	r.Billing.SetCoverage(m.Entitlements)
	r.Entitlements = entitlement.New(m.Entitlements, p, entitlement.Config{Scope: r.Accounts, Users: r.Access, Log: log,
		Follower: func() bool { return !p.Node().IsLeader() }})
	return r, nil
}
