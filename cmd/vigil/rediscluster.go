package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisOptions turns --redis-addr into client options: one address is a
// single Redis (as before), several comma-separated ones are the seeds of
// a Redis Cluster, as is one address with --redis-cluster. Every key the
// index and the lease write carries a per-stream hash tag, so the same
// keys work on both.
func redisOptions(addrs string, cluster bool, timeout time.Duration) (*redis.UniversalOptions, error) {
	var list []string
	for a := range strings.SplitSeq(addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return nil, fmt.Errorf("--redis-addr: %q is not HOST:PORT", a)
		}
		list = append(list, a)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("--redis-addr: no address in %q", addrs)
	}
	return &redis.UniversalOptions{Addrs: list, IsClusterMode: cluster, ContextTimeoutEnabled: true,
		ReadTimeout: timeout, WriteTimeout: timeout}, nil
}
