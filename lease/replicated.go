package lease

import (
	"context"
	"fmt"
	"time"

	"github.com/vigilcloud/vigil/cluster"
)

// The replicated lease: leases held in the replicated state, for work that
// one node at a time must do (retention's sweeps and purges, the recorder
// of an RTSP publish) when no Redis is configured. The proposer's time
// decides expiry, like every command.

// State is the lease section of the replicated state.
type State struct {
	Leases map[string]*leaseRec `json:"leases,omitempty"`
}

// Register adds the lease section and commands to m.
func Register(m *cluster.Machine) *State {
	st := &State{}
	m.Register(cluster.Section{Name: "lease", State: st, Reset: func() { st.Leases = nil }})
	m.Handle(cluster.CmdLeaseAcquire, st.apply)
	m.Handle(cluster.CmdLeaseRelease, st.apply)
	return st
}

// leaseRec is a held lease (state.Leases, by key).
type leaseRec struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// Cmd is the payload of cluster.CmdLeaseAcquire and cluster.CmdLeaseRelease.
type Cmd struct {
	Key    string `json:"key"`
	Holder string `json:"holder"`
	TTLMS  int64  `json:"ttl_ms,omitempty"`
	// Renew extends the lease only if Holder still holds it.
	Renew bool `json:"renew,omitempty"`
}

// LeaseResult is the outcome of AcquireLease: Held says the caller holds
// key until Expires; otherwise Holder holds it.
type LeaseResult struct {
	Held    bool      `json:"held"`
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// apply applies lease_acquire and lease_release.
func (st *State) apply(c *cluster.Command) (any, error) {
	var p Cmd
	if err := c.Decode(&p); err != nil {
		return nil, err
	}
	if p.Key == "" || p.Holder == "" {
		return nil, cluster.Invalid("malformed_command", "%s needs a key and a holder", c.Type)
	}
	if st.Leases == nil {
		st.Leases = map[string]*leaseRec{}
	}
	cur := st.Leases[p.Key]
	if c.Type == cluster.CmdLeaseRelease {
		if cur != nil && cur.Holder == p.Holder {
			delete(st.Leases, p.Key)
		}
		return LeaseResult{}, nil
	}
	if p.TTLMS <= 0 {
		return nil, cluster.Invalid("malformed_command", "lease_acquire needs a positive ttl_ms")
	}
	// Forget leases whose holder crashed (every replica drops the same).
	for k, l := range st.Leases {
		if !c.Time.Before(l.Expires) {
			delete(st.Leases, k)
		}
	}
	cur = st.Leases[p.Key]
	switch {
	case cur != nil && cur.Holder != p.Holder:
		return LeaseResult{Holder: cur.Holder, Expires: cur.Expires}, nil
	case cur == nil && p.Renew:
		return LeaseResult{}, nil // lost: expired (someone may have had it since)
	}
	l := &leaseRec{Holder: p.Holder, Expires: c.Time.Add(time.Duration(p.TTLMS) * time.Millisecond)}
	st.Leases[p.Key] = l
	return LeaseResult{Held: true, Holder: l.Holder, Expires: l.Expires}, nil
}

// Proposer commits commands (a *cluster.Peer).
type Proposer interface {
	ProposeUnrecorded(ctx context.Context, typ string, payload, out any) error
}

// Table takes leases in the replicated state, through raft; Shared makes
// a Lease of it.
type Table struct{ p Proposer }

// NewTable returns the lease table committed through p.
func NewTable(p Proposer) *Table { return &Table{p: p} }

var _ Replicated = (*Table)(nil)

// AcquireLease takes key for holder (a random token of the caller) for
// ttl, or renews it when holder already holds it. With renew, a lease that
// is not held by holder any more is not taken again. Lease commands are
// many and safe to repeat (the holder decides), so they are not recorded
// for deduplication, where they would crowd out the records of API
// requests.
func (r *Table) AcquireLease(ctx context.Context, key, holder string, ttl time.Duration, renew bool) (held bool, err error) {
	var out LeaseResult
	if ttl < time.Millisecond {
		return false, fmt.Errorf("meter: lease %s: ttl %v too short", key, ttl)
	}
	err = r.p.ProposeUnrecorded(ctx, cluster.CmdLeaseAcquire, Cmd{Key: key, Holder: holder, TTLMS: ttl.Milliseconds(), Renew: renew}, &out)
	return out.Held, err
}

// ReleaseLease gives key up if holder holds it.
func (r *Table) ReleaseLease(ctx context.Context, key, holder string) error {
	var out LeaseResult
	return r.p.ProposeUnrecorded(ctx, cluster.CmdLeaseRelease, Cmd{Key: key, Holder: holder}, &out)
}
