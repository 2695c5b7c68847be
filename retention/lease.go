package retention

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vigilcloud/vigil/lease"
)

// Lease makes sure one worker at a time works on a key (a stream's sweep, a
// purge job), also across ingest nodes when the lease is shared.
type Lease interface {
	// TryAcquire takes key for ttl. ok is false (and err nil) when someone
	// else holds it.
	TryAcquire(ctx context.Context, key string, ttl time.Duration) (h Held, ok bool, err error)
}

// Held is an acquired lease.
type Held interface {
	// Extend renews the lease for another ttl; it fails when the lease
	// was lost (expired and taken by someone else).
	Extend(ctx context.Context, ttl time.Duration) error
	// Release gives the lease up if still held.
	Release(ctx context.Context) error
}

// LocalLease is an in-process lease for a single node (no Redis).
type LocalLease struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]localEntry
}

type localEntry struct {
	token   string
	expires time.Time
}

// NewLocalLease returns an in-process lease; now is its clock (nil: time.Now).
func NewLocalLease(now func() time.Time) *LocalLease {
	if now == nil {
		now = time.Now
	}
	return &LocalLease{now: now, m: map[string]localEntry{}}
}

// TryAcquire implements Lease.
func (l *LocalLease) TryAcquire(ctx context.Context, key string, ttl time.Duration) (Held, bool, error) {
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
	l     *LocalLease
	key   string
	token string
}

func (h *localHeld) Extend(ctx context.Context, ttl time.Duration) error {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	e, ok := h.l.m[h.key]
	if !ok || e.token != h.token {
		return fmt.Errorf("retention: lease %s lost", h.key)
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

// RedisLease is a lease shared by every node using the same Redis: SET NX
// PX with a random token, renewed and released only by its holder.
type RedisLease struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewRedisLease returns a lease in rdb under keys prefix+key.
func NewRedisLease(rdb redis.UniversalClient, prefix string) *RedisLease {
	return &RedisLease{rdb: rdb, prefix: prefix}
}

// The holder's token must match, so an expired holder cannot extend or
// release a lease someone else took since.
var (
	extendScript  = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end`)
	releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`)
)

// TryAcquire implements Lease.
func (l *RedisLease) TryAcquire(ctx context.Context, key string, ttl time.Duration) (Held, bool, error) {
	tok := newToken()
	ok, err := l.rdb.SetNX(ctx, l.prefix+key, tok, ttl).Result()
	if err != nil {
		return nil, false, fmt.Errorf("retention: lease %s: %w", key, err)
	}
	if !ok {
		return nil, false, nil
	}
	return &redisHeld{l: l, key: l.prefix + key, token: tok}, true, nil
}

type redisHeld struct {
	l     *RedisLease
	key   string
	token string
}

func (h *redisHeld) Extend(ctx context.Context, ttl time.Duration) error {
	n, err := extendScript.Run(ctx, h.l.rdb, []string{h.key}, h.token, ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("retention: extend lease %s: %w", h.key, err)
	}
	if n == 0 {
		return fmt.Errorf("retention: lease %s lost", h.key)
	}
	return nil
}

func (h *redisHeld) Release(ctx context.Context) error {
	if err := releaseScript.Run(ctx, h.l.rdb, []string{h.key}, h.token).Err(); err != nil {
		return fmt.Errorf("retention: release lease %s: %w", h.key, err)
	}
	return nil
}

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// LeaseMeter is the meter's lease API (meter.Meter).
type LeaseMeter interface {
	AcquireLease(ctx context.Context, key, holder string, ttl time.Duration, renew bool) (lease.LeaseResult, error)
	ReleaseLease(ctx context.Context, key, holder string) error
}

// MeterLease is a lease held in the meter's replicated state: shared by
// every node of the meter cluster without Redis. Expiry is decided by the
// proposer's clock, so nodes' clocks must agree to well within the TTL.
// Each acquire, extend and release is one raft apply.
type MeterLease struct{ M LeaseMeter }

// TryAcquire implements Lease.
func (l MeterLease) TryAcquire(ctx context.Context, key string, ttl time.Duration) (Held, bool, error) {
	tok := newToken()
	r, err := l.M.AcquireLease(ctx, key, tok, ttl, false)
	if err != nil {
		return nil, false, fmt.Errorf("retention: lease %s: %w", key, err)
	}
	if !r.Held {
		return nil, false, nil
	}
	return &meterHeld{m: l.M, key: key, token: tok}, true, nil
}

type meterHeld struct {
	m     LeaseMeter
	key   string
	token string
}

func (h *meterHeld) Extend(ctx context.Context, ttl time.Duration) error {
	r, err := h.m.AcquireLease(ctx, h.key, h.token, ttl, true)
	if err != nil {
		return fmt.Errorf("retention: extend lease %s: %w", h.key, err)
	}
	if !r.Held {
		return fmt.Errorf("retention: lease %s lost", h.key)
	}
	return nil
}

func (h *meterHeld) Release(ctx context.Context) error {
	if err := h.m.ReleaseLease(ctx, h.key, h.token); err != nil {
		return fmt.Errorf("retention: release lease %s: %w", h.key, err)
	}
	return nil
}

// KeepLease renews held every ttl/3 until stop is called; stop returns
// once no renewal is in flight, so a Release after it is the last word.
// The returned context ends when a renewal fails (the lease may be someone
// else's by then), so that the work under it stops; its cause says why.
func KeepLease(ctx context.Context, held Held, ttl time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := held.Extend(ctx, ttl); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(nil); <-exited }
}
