package ingest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// errShed means the class is saturated: answer 503 with Retry-After.
var errShed = errors.New("ingest: overloaded, shedding load")

// errBridgeShare means the bridge already holds its share of the class's
// slots: answer 503 with Retry-After at once.
var errBridgeShare = errors.New("ingest: bridge holds its share of upload slots")

// admission keeps live and backlog uploads in separate pools, so that a
// backlog drain after an outage can never occupy the slots live video needs.
// Backlog waits in a bounded queue for a short time and is shed beyond it.
// Within each pool one bridge holds at most its share of the slots, so that
// a bridge whose uploads stall (or a misbehaving one) cannot fill a pool
// and delay every other bridge's video.
type admission struct {
	live, backlog        chan struct{}
	liveWait, backWait   time.Duration
	maxQueue             int64
	liveQueue, backQueue atomic.Int64
	livePer, backPer     int
	m                    *metrics

	mu   sync.Mutex
	held map[shareKey]int // slots held or waited for, per class and bridge
}

type shareKey struct{ class, bridge string }

func newAdmission(cfg Config, m *metrics) *admission {
	return &admission{
		live:     make(chan struct{}, cfg.LiveConcurrency),
		backlog:  make(chan struct{}, cfg.BacklogConcurrency),
		liveWait: cfg.LiveWait,
		backWait: cfg.BacklogWait,
		maxQueue: int64(cfg.BacklogQueue),
		livePer:  share(cfg.LiveConcurrency, cfg.BridgeShare),
		backPer:  share(cfg.BacklogConcurrency, cfg.BridgeShare),
		m:        m,
		held:     map[shareKey]int{},
	}
}

// share is a bridge's slot count of a pool of n: at least one; 0 (no
// limit) when frac is 1 or more.
func share(n int, frac float64) int {
	if frac >= 1 {
		return 0
	}
	s := int(float64(n) * frac)
	return max(1, min(n, s))
}

// take counts one more slot for bridge ("" is not limited), or refuses it.
func (a *admission) take(class, bridge string) (untake func(), err error) {
	if bridge == "" {
		return func() {}, nil
	}
	limit := a.livePer
	if class == classBacklog {
		limit = a.backPer
	}
	if limit == 0 {
		return func() {}, nil
	}
	k := shareKey{class, bridge}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.held[k] >= limit {
		return nil, errBridgeShare
	}
	a.held[k]++
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.held[k]--; a.held[k] <= 0 {
			delete(a.held, k)
		}
	}, nil
}

// acquire takes a slot of class for bridge and returns its release func.
func (a *admission) acquire(ctx context.Context, class, bridge string) (func(), error) {
	untake, err := a.take(class, bridge)
	if err != nil {
		a.m.shed.WithLabelValues(class).Inc()
		return nil, err
	}
	release, err := a.slot(ctx, class)
	if err != nil {
		untake()
		return nil, err
	}
	return func() { release(); untake() }, nil
}

// slot takes a slot of class's pool.
func (a *admission) slot(ctx context.Context, class string) (func(), error) {
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
