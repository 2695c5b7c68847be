package main

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/meter"
)

// nodeLease is the one lease of a node, shared by the retention sweeper,
// the purge worker and the RTSP recorder: in Redis when the node has one,
// else in the meter, so that the nodes of one meter cluster share it (one
// raft apply per acquire, renewal and release).
func nodeLease(rdb redis.UniversalClient, m *meter.Meter) lease.Lease {
	if rdb != nil {
		return lease.NewRedis(rdb, "vigil:lease:")
	}
	return lease.Meter{M: meterLeases{m}}
}

// meterLeases is the meter's lease API as lease.Meter wants it.
type meterLeases struct{ m *meter.Meter }

func (l meterLeases) AcquireLease(ctx context.Context, key, holder string, ttl time.Duration, renew bool) (bool, error) {
	r, err := l.m.AcquireLease(ctx, key, holder, ttl, renew)
	return r.Held, err
}

func (l meterLeases) ReleaseLease(ctx context.Context, key, holder string) error {
	return l.m.ReleaseLease(ctx, key, holder)
}
