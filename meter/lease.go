package meter

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Lease commands: a lease held in the replicated state, for work that one
// node at a time must do (retention's sweeps and purges) when no Redis is
// configured. The proposer's time decides expiry, like every command.
const (
	cmdLeaseAcquire = "lease_acquire"
	cmdLeaseRelease = "lease_release"
)

// leaseRec is a held lease (state.Leases, by key).
type leaseRec struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

type leaseCmd struct {
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

// applyLease applies the lease commands; ok is false for other types.
func (st *state) applyLease(c *Command, dec func(any) error) (res any, ok bool, err error) {
	if c.Type != cmdLeaseAcquire && c.Type != cmdLeaseRelease {
		return nil, false, nil
	}
	var p leaseCmd
	if err := dec(&p); err != nil {
		return nil, true, err
	}
	if p.Key == "" || p.Holder == "" {
		return nil, true, invalid("malformed_command", "%s needs a key and a holder", c.Type)
	}
	if st.Leases == nil {
		st.Leases = map[string]*leaseRec{}
	}
	cur := st.Leases[p.Key]
	if c.Type == cmdLeaseRelease {
		if cur != nil && cur.Holder == p.Holder {
			delete(st.Leases, p.Key)
		}
		return LeaseResult{}, true, nil
	}
	if p.TTLMS <= 0 {
		return nil, true, invalid("malformed_command", "lease_acquire needs a positive ttl_ms")
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
		return LeaseResult{Holder: cur.Holder, Expires: cur.Expires}, true, nil
	case cur == nil && p.Renew:
		return LeaseResult{}, true, nil // lost: expired (someone may have had it since)
	}
	l := &leaseRec{Holder: p.Holder, Expires: c.Time.Add(time.Duration(p.TTLMS) * time.Millisecond)}
	st.Leases[p.Key] = l
	return LeaseResult{Held: true, Holder: l.Holder, Expires: l.Expires}, true, nil
}

// AcquireLease takes key for holder (a random token of the caller) for
// ttl, or renews it when holder already holds it. With renew, a lease that
// is not held by holder any more is not taken again.
func (m *Meter) AcquireLease(ctx context.Context, key, holder string, ttl time.Duration, renew bool) (LeaseResult, error) {
	var r LeaseResult
	if ttl < time.Millisecond {
		return r, fmt.Errorf("meter: lease %s: ttl %v too short", key, ttl)
	}
	return r, m.proposeLease(ctx, cmdLeaseAcquire, leaseCmd{Key: key, Holder: holder, TTLMS: ttl.Milliseconds(), Renew: renew}, &r)
}

// ReleaseLease gives key up if holder holds it.
func (m *Meter) ReleaseLease(ctx context.Context, key, holder string) error {
	var r LeaseResult
	return m.proposeLease(ctx, cmdLeaseRelease, leaseCmd{Key: key, Holder: holder}, &r)
}

// proposeLease is propose without a request id: lease commands are many
// and safe to repeat (the holder decides), so they are not recorded for
// deduplication, where they would crowd out the records of API requests.
func (m *Meter) proposeLease(ctx context.Context, typ string, p leaseCmd, out *LeaseResult) error {
	payload, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	cmd, err := json.Marshal(Command{Type: typ, Time: m.now().UTC(), Payload: payload})
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	r, err := m.applyCmd(ctx, cmd)
	if err != nil {
		return fmt.Errorf("meter: %s %s: %w", typ, p.Key, err)
	}
	if r.Err != nil {
		return r.Err.err()
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return fmt.Errorf("meter: %s: decode result: %w", typ, err)
	}
	return nil
}
