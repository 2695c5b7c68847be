package lease

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a lease shared by every node using the same Redis: SET NX PX
// with a random token, renewed and released only by its holder.
type Redis struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewRedis returns a lease in rdb under keys prefix+key.
func NewRedis(rdb redis.UniversalClient, prefix string) *Redis {
	return &Redis{rdb: rdb, prefix: prefix}
}

// The holder's token must match, so an expired holder cannot extend or
// release a lease someone else took since.
var (
	extendScript  = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end`)
	releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`)
)

// TryAcquire implements Lease.
func (l *Redis) TryAcquire(ctx context.Context, key string, ttl time.Duration) (Held, bool, error) {
	tok := newToken()
	ok, err := l.rdb.SetNX(ctx, l.prefix+key, tok, ttl).Result()
	if err != nil {
		return nil, false, fmt.Errorf("lease: %s: %w", key, err)
	}
	if !ok {
		return nil, false, nil
	}
	return &redisHeld{l: l, key: l.prefix + key, token: tok}, true, nil
}

type redisHeld struct {
	l     *Redis
	key   string
	token string
}

func (h *redisHeld) Extend(ctx context.Context, ttl time.Duration) error {
	n, err := extendScript.Run(ctx, h.l.rdb, []string{h.key}, h.token, ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("lease: extend %s: %w", h.key, err)
	}
	if n == 0 {
		return fmt.Errorf("lease: %s lost", h.key)
	}
	return nil
}

func (h *redisHeld) Release(ctx context.Context) error {
	if err := releaseScript.Run(ctx, h.l.rdb, []string{h.key}, h.token).Err(); err != nil {
		return fmt.Errorf("lease: release %s: %w", h.key, err)
	}
	return nil
}
