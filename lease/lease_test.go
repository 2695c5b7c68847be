package lease

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	tu "github.com/vigilcloud/vigil/internal/testutil"
)

// T is "now" in these tests.
var T = time.Date(2026, 3, 10, 12, 30, 0, 0, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// table is a Replicated lease table in memory, with the meter's rules:
// a key is free once expired, and only its holder renews or releases it.
type table struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]localEntry
}

func (t *table) AcquireLease(ctx context.Context, key, holder string, ttl time.Duration, renew bool) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[key]
	live := ok && t.now().Before(e.expires)
	if renew && (!live || e.token != holder) || !renew && live {
		return false, nil
	}
	t.m[key] = localEntry{token: holder, expires: t.now().Add(ttl)}
	return true, nil
}

func (t *table) ReleaseLease(ctx context.Context, key, holder string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[key]; ok && e.token == holder {
		delete(t.m, key)
	}
	return nil
}

func TestLeases(t *testing.T) {
	ctx := context.Background()
	rs := tu.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	clk := &clock{t: T}
	for name, l := range map[string]Lease{
		"local": NewLocal(clk.Now), "redis": NewRedis(rdb, "t:"+tu.RandomID()+":"),
		"meter": Shared{M: &table{now: clk.Now, m: map[string]localEntry{}}},
	} {
		t.Run(name, func(t *testing.T) {
			h, ok, err := l.TryAcquire(ctx, "k", time.Minute)
			require.NoError(t, err)
			require.True(t, ok)
			_, ok, err = l.TryAcquire(ctx, "k", time.Minute)
			require.NoError(t, err)
			require.False(t, ok, "held")
			_, ok, err = l.TryAcquire(ctx, "other", time.Minute)
			require.NoError(t, err)
			require.True(t, ok)
			require.NoError(t, h.Extend(ctx, time.Minute))
			require.NoError(t, h.Release(ctx))
			h2, ok, err := l.TryAcquire(ctx, "k", time.Minute)
			require.NoError(t, err)
			require.True(t, ok, "released")
			require.NoError(t, h.Release(ctx), "a stale holder's release is harmless")
			_, ok, _ = l.TryAcquire(ctx, "k", time.Minute)
			require.False(t, ok, "the stale release did not free the new holder's lease")
			require.Error(t, h.Extend(ctx, time.Minute), "a stale holder cannot extend")
			require.NoError(t, h2.Release(ctx))
		})
	}
	// Expiry.
	l := NewLocal(clk.Now)
	_, ok, _ := l.TryAcquire(ctx, "k", time.Minute)
	require.True(t, ok)
	clk.Set(T.Add(time.Minute))
	_, ok, _ = l.TryAcquire(ctx, "k", time.Minute)
	require.True(t, ok, "expired lease is free")
	rl := NewRedis(rdb, "t:"+tu.RandomID()+":")
	_, ok, _ = rl.TryAcquire(ctx, "k", 50*time.Millisecond)
	require.True(t, ok)
	require.Eventually(t, func() bool {
		_, ok, _ := rl.TryAcquire(ctx, "k", time.Minute)
		return ok
	}, 10*time.Second, 20*time.Millisecond)
}

type fakeHeld struct {
	extends atomic.Int64
	fail    atomic.Bool
}

func (f *fakeHeld) Extend(ctx context.Context, ttl time.Duration) error {
	f.extends.Add(1)
	if f.fail.Load() {
		return errors.New("lease lost")
	}
	return nil
}

func (f *fakeHeld) Release(ctx context.Context) error { return nil }

// TestKeep: the lease is renewed in the background while work runs,
// and the work's context ends, with the renewal's error as its cause, once
// a renewal fails.
func TestKeep(t *testing.T) {
	h := &fakeHeld{}
	ctx, stop := Keep(context.Background(), h, 30*time.Millisecond)
	defer stop()
	require.Eventually(t, func() bool { return h.extends.Load() >= 3 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, ctx.Err())
	h.fail.Store(true)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("context not cancelled after the lease was lost")
	}
	require.EqualError(t, context.Cause(ctx), "lease lost")
}
