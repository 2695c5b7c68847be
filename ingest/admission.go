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
// Backlog waits in a bounded queue for a short time and is shed beyond it;
// its pool is fair across bridges (backlogPool) and shrinks while live
// uploads slow down (liveYield), because both share the node's CPU, disks
// and storage. Within each pool one bridge holds at most its share of the
// slots, so that a bridge whose uploads stall (or a misbehaving one) cannot
// fill a pool and delay every other bridge's video.
type admission struct {
	live      chan struct{}
	liveWait  time.Duration
	backWait  time.Duration
	liveQueue atomic.Int64
	livePer   int
	backlog   *backlogPool
	m         *metrics

	mu    sync.Mutex
	held  map[shareKey]int // live slots held or waited for, per bridge
	yield *liveYield       // nil: the backlog pool keeps its size
}

type shareKey struct{ class, bridge string }

// yieldInterval is how often the backlog limit follows live latency.
const yieldInterval = 500 * time.Millisecond

func newAdmission(cfg Config, m *metrics) *admission {
	a := &admission{
		live:     make(chan struct{}, cfg.LiveConcurrency),
		liveWait: cfg.LiveWait,
		backWait: cfg.BacklogWait,
		livePer:  share(cfg.LiveConcurrency, cfg.BridgeShare),
		backlog: newBacklogPool(cfg.BacklogConcurrency, cfg.BacklogQueue, share(cfg.BacklogConcurrency, cfg.BridgeShare),
			func(d int) { m.queued.WithLabelValues(classBacklog).Add(float64(d)) }),
		m:    m,
		held: map[shareKey]int{},
	}
	if cfg.BacklogYield > 0 {
		a.yield = newLiveYield(cfg.BacklogConcurrency, cfg.BacklogYield, yieldInterval)
	}
	m.backlogLimit.Set(float64(cfg.BacklogConcurrency))
	return a
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

// take counts one more live slot for bridge ("" is not limited), or
// refuses it.
func (a *admission) take(bridge string) (untake func(), err error) {
	if bridge == "" || a.livePer == 0 {
		return func() {}, nil
	}
	k := shareKey{classLive, bridge}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.held[k] >= a.livePer {
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
	if class == classBacklog {
		return a.acquireBacklog(ctx, bridge)
	}
	untake, err := a.take(bridge)
	if err != nil {
		a.m.shed.WithLabelValues(class).Inc()
		return nil, err
	}
	release, err := a.slot(ctx)
	if err != nil {
		untake()
		return nil, err
	}
	began := time.Now()
	return func() {
		release()
		untake()
		a.observeLive(time.Since(began))
	}, nil
}

func (a *admission) acquireBacklog(ctx context.Context, bridge string) (func(), error) {
	a.tick()
	release, err := a.backlog.acquire(ctx, bridge, a.backWait)
	if err != nil {
		if errors.Is(err, errShed) || errors.Is(err, errBridgeShare) {
			a.m.shed.WithLabelValues(classBacklog).Inc()
		}
		return nil, err
	}
	a.m.inflight.WithLabelValues(classBacklog).Inc()
	return func() {
		release()
		a.m.inflight.WithLabelValues(classBacklog).Dec()
	}, nil
}

// observeLive feeds one live upload's time in its slot to the backlog's
// limit.
func (a *admission) observeLive(d time.Duration) {
	if a.yield == nil {
		return
	}
	a.mu.Lock()
	limit, changed := a.yield.observe(time.Now(), d)
	a.mu.Unlock()
	a.setBacklogLimit(limit, changed)
}

// tick lets the backlog limit grow when no live upload came for a while.
func (a *admission) tick() {
	if a.yield == nil {
		return
	}
	a.mu.Lock()
	limit, changed := a.yield.tick(time.Now())
	a.mu.Unlock()
	a.setBacklogLimit(limit, changed)
}

func (a *admission) setBacklogLimit(limit int, changed bool) {
	if changed {
		a.backlog.setLimit(limit)
		a.m.backlogLimit.Set(float64(limit))
	}
}

// slot takes a slot of the live pool. Live has no queue bound: its pool is
// sized for every camera's live stream, and a wait beyond liveWait sheds it.
func (a *admission) slot(ctx context.Context) (func(), error) {
	const class = classLive
	release := func() {
		<-a.live
		a.m.inflight.WithLabelValues(class).Dec()
	}
	select {
	case a.live <- struct{}{}:
		a.m.inflight.WithLabelValues(class).Inc()
		return release, nil
	default:
	}
	a.liveQueue.Add(1)
	a.m.queued.WithLabelValues(class).Inc()
	defer func() {
		a.liveQueue.Add(-1)
		a.m.queued.WithLabelValues(class).Dec()
	}()
	t := time.NewTimer(a.liveWait)
	defer t.Stop()
	select {
	case a.live <- struct{}{}:
		a.m.inflight.WithLabelValues(class).Inc()
		return release, nil
	case <-t.C:
		a.m.shed.WithLabelValues(class).Inc()
		return nil, errShed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
