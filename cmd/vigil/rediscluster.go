package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterReload is how old a Redis Cluster client's slot map may grow
// before the next command reloads it. go-redis reloads on a MOVED answer,
// but a master that died answers nothing: with its default (60 s) the
// slots of a dead master stay unwritable for up to a minute after its
// replica took over; with this, for the failover plus a couple of seconds.
const clusterReload = 2 * time.Second

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

// newRedisClient returns a Redis Cluster client when opts name a cluster,
// else a single-Redis client.
func newRedisClient(opts *redis.UniversalOptions) redis.UniversalClient {
	if len(opts.Addrs) > 1 || opts.IsClusterMode {
		co := opts.Cluster()
		co.ClusterStateReloadInterval = clusterReload
		return redis.NewClusterClient(co)
	}
	return redis.NewClient(opts.Simple())
}
