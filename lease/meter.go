package lease

import (
	"context"
	"fmt"
	"time"
)

// Replicated is a lease table in replicated state (Table).
type Replicated interface {
	// AcquireLease takes or (renew) extends key for holder; held is
	// false when another holder has it, or, renewing, when it was lost.
	AcquireLease(ctx context.Context, key, holder string, ttl time.Duration, renew bool) (held bool, err error)
	ReleaseLease(ctx context.Context, key, holder string) error
}

// Shared is a lease held in the replicated state (a Table): shared by
// every node of the cluster without Redis. Expiry is decided by the
// proposer's clock, so nodes' clocks must agree to well within the TTL.
// Each acquire, extend and release is one raft apply.
type Shared struct{ M Replicated }

// TryAcquire implements Lease.
func (l Shared) TryAcquire(ctx context.Context, key string, ttl time.Duration) (Held, bool, error) {
	tok := newToken()
	held, err := l.M.AcquireLease(ctx, key, tok, ttl, false)
	if err != nil {
		return nil, false, fmt.Errorf("lease: %s: %w", key, err)
	}
	if !held {
		return nil, false, nil
	}
	return &meterHeld{m: l.M, key: key, token: tok}, true, nil
}

type meterHeld struct {
	m     Replicated
	key   string
	token string
}

func (h *meterHeld) Extend(ctx context.Context, ttl time.Duration) error {
	held, err := h.m.AcquireLease(ctx, h.key, h.token, ttl, true)
	if err != nil {
		return fmt.Errorf("lease: extend %s: %w", h.key, err)
	}
	if !held {
		return fmt.Errorf("lease: %s lost", h.key)
	}
	return nil
}

func (h *meterHeld) Release(ctx context.Context) error {
	if err := h.m.ReleaseLease(ctx, h.key, h.token); err != nil {
		return fmt.Errorf("lease: release %s: %w", h.key, err)
	}
	return nil
}
