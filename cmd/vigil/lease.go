package main

import (
	"github.com/redis/go-redis/v9"

	"github.com/vigilcloud/vigil/lease"
)

// nodeLease is the one lease of a node, shared by the retention sweeper,
// the purge worker and the RTSP recorder: in Redis when the node has one,
// else in the replicated state, so that the nodes of one cluster share it
// (one raft apply per acquire, renewal and release).
func nodeLease(rdb redis.UniversalClient, t *lease.Table) lease.Lease {
	if rdb != nil {
		return lease.NewRedis(rdb, "vigil:lease:")
	}
	return lease.Shared{M: t}
}
