package testutil

import (
	"context"
	"testing"

	"github.com/vigilcloud/vigil/internal/servers"
)

// RedisCluster is a Redis Cluster started for a test.
type RedisCluster struct {
	*servers.RedisCluster
}

// StartRedisCluster starts a Redis Cluster of 3 masters, each with one
// replica (for failover), on free loopback ports.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	RequireBinary(t, "redis-server")
	RequireBinary(t, "redis-cli")
	rc, err := servers.StartRedisCluster(context.Background(), t.TempDir(), 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.Close)
	return &RedisCluster{rc}
}

// ErasureMinIO is an erasure-coded MinIO started for a test.
type ErasureMinIO struct {
	*MinIO
	Drives []string // the drive directories
	e      *servers.ErasureMinIO
}

// StartErasureMinIO starts one MinIO server on four drive directories
// (erasure-coded: 2 data and 2 parity shards) on a free loopback port.
func StartErasureMinIO(t testing.TB) *ErasureMinIO {
	t.Helper()
	RequireBinary(t, "minio")
	e, err := servers.StartErasureMinIO(context.Background(), "", t.TempDir(), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	m := &MinIO{Process: Process{e.Process, t}, AccessKey: e.AccessKey, SecretKey: e.SecretKey, m: e.MinIO}
	return &ErasureMinIO{MinIO: m, Drives: e.Drives, e: e}
}

// RemoveDrive takes drive i (0-based) away as if the disk was pulled.
func (e *ErasureMinIO) RemoveDrive(i int) {
	e.t.Helper()
	if _, err := e.e.RemoveDrive(i); err != nil {
		e.t.Fatal(err)
	}
}
