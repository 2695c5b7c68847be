package testutil

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestServers checks that the real servers start, answer, stop and restart.
func TestServers(t *testing.T) {
	ctx := context.Background()
	r := StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	if err := rc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	if err := rc.Ping(ctx).Err(); err == nil {
		t.Fatal("redis answers after Stop")
	}
	r.Start()
	if v, err := rc.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after restart: %q, %v (appendfsync always should keep it)", v, err)
	}

	m := StartMinIO(t)
	b := m.Bucket(t)
	if ok, err := m.Client().BucketExists(ctx, b); err != nil || !ok {
		t.Fatalf("bucket %s: %v %v", b, ok, err)
	}
	m.Stop()
	m.Start()
	if ok, err := m.Client().BucketExists(ctx, b); err != nil || !ok {
		t.Fatalf("bucket %s after restart: %v %v", b, ok, err)
	}
}
