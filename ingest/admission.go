package ingest

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// errShed means the class is saturated: answer 503 with Retry-After.
var errShed = errors.New("ingest: overloaded, shedding load")

// admission keeps live and backlog uploads in separate pools, so that a
// backlog drain after an outage can never occupy the slots live video needs.
// Backlog waits in a bounded queue for a short time and is shed beyond it.
type admission struct {
	live, backlog        chan struct{}
	liveWait, backWait   time.Duration
	maxQueue             int64
	liveQueue, backQueue atomic.Int64
	m                    *metrics
}

func newAdmission(cfg Config, m *metrics) *admission {
	return &admission{
		live:     make(chan struct{}, cfg.LiveConcurrency),
		backlog:  make(chan struct{}, cfg.BacklogConcurrency),
		liveWait: cfg.LiveWait,
		backWait: cfg.BacklogWait,
		maxQueue: int64(cfg.BacklogQueue),
		m:        m,
	}
}

// acquire takes a slot of class and returns its release func.
func (a *admission) acquire(ctx context.Context, class string) (func(), error) {
	sem, wait, queue := a.live, a.liveWait, &a.liveQueue
	if class == classBacklog {
		sem, wait, queue = a.backlog, a.backWait, &a.backQueue
	}
	release := func() {
		<-sem
		a.m.inflight.WithLabelValues(class).Dec()
	}
	select {
	case sem <- struct{}{}:
		a.m.inflight.WithLabelValues(class).Inc()
		return release, nil
	default:
	}
	// Live has no queue bound: its pool is sized for every camera's live
	// stream, and a wait beyond liveWait sheds it too.
	for {
		q := queue.Load()
		if class == classBacklog && q >= a.maxQueue {
			a.m.shed.WithLabelValues(class).Inc()
			return nil, errShed
		}
		if queue.CompareAndSwap(q, q+1) {
			break
		}
	}
	a.m.queued.WithLabelValues(class).Inc()
	defer func() {
		queue.Add(-1)
		a.m.queued.WithLabelValues(class).Dec()
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case sem <- struct{}{}:
		a.m.inflight.WithLabelValues(class).Inc()
		return release, nil
	case <-t.C:
		a.m.shed.WithLabelValues(class).Inc()
		return nil, errShed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
