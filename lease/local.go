package lease

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Local is an in-process lease for a single node (no Redis, no meter).
type Local struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]localEntry
}

type localEntry struct {
	token   string
	expires time.Time
}

// NewLocal returns an in-process lease; now is its clock (nil: time.Now).
func NewLocal(now func() time.Time) *Local {
	if now == nil {
		now = time.Now
	}
	return &Local{now: now, m: map[string]localEntry{}}
}

// TryAcquire implements Lease.
func (l *Local) TryAcquire(ctx context.Context, key string, ttl time.Duration) (Held, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if e, ok := l.m[key]; ok && now.Before(e.expires) {
		return nil, false, nil
	}
	tok := newToken()
	l.m[key] = localEntry{token: tok, expires: now.Add(ttl)}
	return &localHeld{l: l, key: key, token: tok}, true, nil
}

type localHeld struct {
	l     *Local
	key   string
	token string
}

func (h *localHeld) Extend(ctx context.Context, ttl time.Duration) error {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	e, ok := h.l.m[h.key]
	if !ok || e.token != h.token {
		return fmt.Errorf("lease: %s lost", h.key)
	}
	e.expires = h.l.now().Add(ttl)
	h.l.m[h.key] = e
	return nil
}

func (h *localHeld) Release(ctx context.Context) error {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if e, ok := h.l.m[h.key]; ok && e.token == h.token {
		delete(h.l.m, h.key)
	}
	return nil
}
