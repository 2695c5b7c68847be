package lease

import (
	"context"
	"fmt"
	"time"
)

// Replicated is a lease table in replicated state (the meter, through an
// adapter that reduces its result to whether the caller holds the key).
type Replicated interface {
	// AcquireLease takes or (renew) extends key for holder; held is
	// false when another holder has it, or, renewing, when it was lost.
	AcquireLease(ctx context.Context, key, holder string, ttl time.Duration, renew bool) (held bool, err error)
	ReleaseLease(ctx context.Context, key, holder string) error
}

// Meter is a lease held in the meter's replicated state: shared by every
// node of the meter cluster without Redis. Expiry is decided by the
// proposer's clock, so nodes' clocks must agree to well within the TTL.
// Each acquire, extend and release is one raft apply.
type Meter struct{ M Replicated }

// TryAcquire implements Lease.
func (l Meter) TryAcquire(ctx context.Context, key string, ttl time.Duration) (Held, bool, error) {
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
