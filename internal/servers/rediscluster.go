package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster on loopback: masters each with their
// replicas, every node a redis-server with an fsync-always append-only file.
type RedisCluster struct {
	// Nodes are every node in creation order: the masters first, then
	// the replicas (redis-cli --cluster create assigns them so).
	Nodes []*Process
}

// StartRedisCluster starts masters×(1+replicas) cluster-enabled
// redis-servers under dir and joins them with redis-cli --cluster create.
// It returns once every node reports cluster_state:ok and every replica
// is in sync with its master.
func StartRedisCluster(ctx context.Context, dir string, masters, replicas int) (_ *RedisCluster, err error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, err
	}
	if masters < 3 {
		return nil, errors.New("redis cluster: needs at least 3 masters")
	}
	rc := &RedisCluster{}
	defer func() {
		if err != nil {
			rc.Close()
		}
	}()
	for i := range masters * (1 + replicas) {
		ndir := filepath.Join(dir, fmt.Sprintf("redis%d", i))
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			return nil, err
		}
		// A short node timeout: a killed master is failed over within
		// seconds rather than the default 15.
		p, err := startRedisServer(bin, ndir,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		if err != nil {
			return nil, err
		}
		rc.Nodes = append(rc.Nodes, p)
	}
	for _, p := range rc.Nodes {
		if err := WaitTCP(ctx, p.Addr, 10*time.Second); err != nil {
			return nil, err
		}
	}
	args := append([]string{"--cluster", "create"}, rc.Addrs()...)
	args = append(args, "--cluster-replicas", fmt.Sprint(replicas), "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := rc.WaitHealthy(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return rc, nil
}

// Addrs returns every node's address.
func (rc *RedisCluster) Addrs() []string {
	addrs := make([]string, len(rc.Nodes))
	for i, p := range rc.Nodes {
		addrs[i] = p.Addr
	}
	return addrs
}

// Close stops every node.
func (rc *RedisCluster) Close() {
	for _, p := range rc.Nodes {
		p.Close()
	}
}

// node returns a client to one node (not cluster-aware).
func nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
}

// WaitHealthy waits until every running node reports cluster_state:ok
// and every running replica's link to its master is up.
func (rc *RedisCluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := rc.healthy(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis cluster not healthy within %v: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (rc *RedisCluster) healthy(ctx context.Context) error {
	for _, p := range rc.Nodes {
		if p.Pid() == 0 {
			continue
		}
		c := nodeClient(p.Addr)
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = errors.New("cluster_state is not ok")
		}
		var repl string
		if err == nil {
			repl, err = c.Info(ctx, "replication").Result()
		}
		c.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p.Addr, err)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica not in sync with its master", p.Addr)
		}
	}
	return nil
}

// MasterOf returns the node that is now the master of key's slot.
func (rc *RedisCluster) MasterOf(ctx context.Context, key string) (*Process, error) {
	for _, p := range rc.Nodes {
		if p.Pid() == 0 {
			continue
		}
		c := nodeClient(p.Addr)
		slot, err := c.ClusterKeySlot(ctx, key).Result()
		var shards []redis.ClusterShard
		if err == nil {
			shards, err = c.ClusterShards(ctx).Result()
		}
		c.Close()
		if err != nil {
			continue
		}
		for _, sh := range shards {
			for _, r := range sh.Slots {
				if r.Start > slot || slot > r.End {
					continue
				}
				for _, nd := range sh.Nodes {
					if nd.Role == "master" && nd.Health == "online" {
						return rc.byAddr(net.JoinHostPort(nd.IP, fmt.Sprint(nd.Port)))
					}
				}
			}
		}
	}
	return nil, fmt.Errorf("redis cluster: no master known for %q", key)
}

// ReplicaOf returns a running replica of master.
func (rc *RedisCluster) ReplicaOf(ctx context.Context, master *Process) (*Process, error) {
	for _, p := range rc.Nodes {
		if p == master || p.Pid() == 0 {
			continue
		}
		c := nodeClient(p.Addr)
		repl, err := c.Info(ctx, "replication").Result()
		c.Close()
		_, port, _ := net.SplitHostPort(master.Addr)
		if err == nil && strings.Contains(repl, "role:slave") && strings.Contains(repl, "master_port:"+port+"\r\n") {
			return p, nil
		}
	}
	return nil, fmt.Errorf("redis cluster: no replica of %s", master.Addr)
}

// Failover makes the replica of the master of key's slot its master with
// CLUSTER FAILOVER (the replica first catches up, so no acknowledged
// write is lost) and waits until the cluster is healthy again. It returns
// the old master.
func (rc *RedisCluster) Failover(ctx context.Context, key string) (*Process, error) {
	master, err := rc.MasterOf(ctx, key)
	if err != nil {
		return nil, err
	}
	replica, err := rc.ReplicaOf(ctx, master)
	if err != nil {
		return nil, err
	}
	c := nodeClient(replica.Addr)
	defer c.Close()
	if err := c.ClusterFailover(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis cluster: failover on %s: %w", replica.Addr, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		now, err := rc.MasterOf(ctx, key)
		if err == nil && now == replica {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("redis cluster: %s did not take over from %s", replica.Addr, master.Addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return master, rc.WaitHealthy(ctx, 30*time.Second)
}

func (rc *RedisCluster) byAddr(addr string) (*Process, error) {
	for _, p := range rc.Nodes {
		if p.Addr == addr {
			return p, nil
		}
	}
	return nil, fmt.Errorf("redis cluster: unknown node %s", addr)
}
