package ingest

import (
	"context"
	"slices"
	"sync"
	"time"
)

// backlogPool admits backlog uploads: at most limit at a time, and at most
// maxQueue waiting. It is fair across bridges in three ways:
//   - a bridge holds and waits for at most perBridge uploads together;
//   - a freed slot goes to the waiting bridges in turn (round robin), so a
//     bridge that arrives behind another's long queue is served next;
//   - a full queue pushes out the newest waiter of the bridge that waits
//     with the most uploads, when the newcomer's bridge waits with fewer
//     (longest queue drop); else the newcomer is shed.
//
// limit moves with live latency (liveYield); lowering it takes no slot
// back. It is safe for concurrent use.
type backlogPool struct {
	mu        sync.Mutex
	limit     int
	maxQueue  int
	perBridge int // 0: no share
	inUse     int
	queued    int
	held      map[string]int
	waiters   map[string][]*waiter
	turn      []string // bridges with waiters, in turn order
	onQueue   func(delta int)
}

type waiter struct {
	bridge  string
	ready   chan struct{} // closed when granted or pushed out
	granted bool
}

func newBacklogPool(limit, maxQueue, perBridge int, onQueue func(int)) *backlogPool {
	if onQueue == nil {
		onQueue = func(int) {}
	}
	return &backlogPool{limit: max(limit, 1), maxQueue: maxQueue, perBridge: perBridge,
		held: map[string]int{}, waiters: map[string][]*waiter{}, onQueue: onQueue}
}

// acquire takes a slot for bridge ("" is the operator: no share), waiting
// at most wait. It returns errBridgeShare, errShed or ctx's error.
func (p *backlogPool) acquire(ctx context.Context, bridge string, wait time.Duration) (func(), error) {
	p.mu.Lock()
	if bridge != "" && p.perBridge > 0 && p.held[bridge]+len(p.waiters[bridge]) >= p.perBridge {
		p.mu.Unlock()
		return nil, errBridgeShare
	}
	if p.inUse < p.limit && p.queued == 0 {
		p.grantLocked(bridge)
		p.mu.Unlock()
		return p.releaser(bridge), nil
	}
	if p.queued >= p.maxQueue && !p.pushOutLocked(bridge) {
		p.mu.Unlock()
		return nil, errShed
	}
	w := &waiter{bridge: bridge, ready: make(chan struct{})}
	if len(p.waiters[bridge]) == 0 {
		p.turn = append(p.turn, bridge)
	}
	p.waiters[bridge] = append(p.waiters[bridge], w)
	p.queued++
	p.onQueue(1)
	p.mu.Unlock()

	t := time.NewTimer(wait)
	defer t.Stop()
	var err error
	select {
	case <-w.ready:
	case <-t.C:
		err = errShed
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.granted {
		return p.releaser(bridge), nil
	}
	select {
	case <-w.ready: // pushed out: already off the queue
		return nil, errShed
	default:
	}
	p.removeLocked(w)
	return nil, err
}

func (p *backlogPool) releaser(bridge string) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.inUse--
			if p.held[bridge]--; p.held[bridge] <= 0 {
				delete(p.held, bridge)
			}
			p.dispatchLocked()
		})
	}
}

func (p *backlogPool) grantLocked(bridge string) {
	p.inUse++
	p.held[bridge]++
}

// dispatchLocked hands free slots to waiting bridges in turn.
func (p *backlogPool) dispatchLocked() {
	for p.inUse < p.limit && len(p.turn) > 0 {
		b := p.turn[0]
		p.turn = p.turn[1:]
		ws := p.waiters[b]
		w := ws[0]
		p.popLocked(b, 0)
		if len(p.waiters[b]) > 0 {
			p.turn = append(p.turn, b)
		}
		w.granted = true
		p.grantLocked(b)
		close(w.ready)
	}
}

// pushOutLocked makes room in a full queue for a waiter of bridge: it
// drops the newest waiter of the bridge with the most waiters when that is
// more than bridge's own plus one.
func (p *backlogPool) pushOutLocked(bridge string) bool {
	longest, n := "", 0
	for b, ws := range p.waiters {
		if len(ws) > n {
			longest, n = b, len(ws)
		}
	}
	if n <= len(p.waiters[bridge])+1 {
		return false
	}
	w := p.waiters[longest][n-1]
	p.removeLocked(w)
	close(w.ready)
	return true
}

// removeLocked takes a waiter that was not granted off the queue.
func (p *backlogPool) removeLocked(w *waiter) {
	for i, x := range p.waiters[w.bridge] {
		if x == w {
			p.popLocked(w.bridge, i)
			break
		}
	}
	if len(p.waiters[w.bridge]) == 0 {
		for i, b := range p.turn {
			if b == w.bridge {
				p.turn = append(p.turn[:i], p.turn[i+1:]...)
				break
			}
		}
	}
}

func (p *backlogPool) popLocked(bridge string, i int) {
	ws := append(p.waiters[bridge][:i], p.waiters[bridge][i+1:]...)
	if len(ws) == 0 {
		delete(p.waiters, bridge)
	} else {
		p.waiters[bridge] = ws
	}
	p.queued--
	p.onQueue(-1)
}

// setLimit sets how many backlog uploads may run at once.
func (p *backlogPool) setLimit(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limit = max(n, 1)
	p.dispatchLocked()
}

// stats returns the uploads running and waiting.
func (p *backlogPool) stats() (inUse, queued int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse, p.queued
}

// waiting returns how many of bridge's uploads wait.
func (p *backlogPool) waiting(bridge string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiters[bridge])
}

// liveYield sets the backlog pool's limit from live upload latency, the way
// a scavenger congestion controller (LEDBAT) yields to other traffic: each
// interval the 90th percentile of live latency is compared with the best
// interval's of the last few minutes; above target times that, the limit
// halves; at or below it, the limit grows by one. The percentile, not the
// mean, because a backlog shows first in live's slow tail (fsyncs and CPU
// queued behind it). Not safe for concurrent use.
type liveYield struct {
	max      int
	target   float64
	interval time.Duration
	limit    int
	start    time.Time
	samples  []time.Duration // this interval's, up to maxLiveSamples
	n        int
	best     [baseBuckets]bucketMin
}

// bucketMin is the best interval percentile within one bucket of baseBucket.
type bucketMin struct {
	idx int64
	v   time.Duration
}

const (
	baseBuckets    = 10
	baseBucket     = 30 * time.Second // the best is taken over the last 5 minutes
	minLiveSamples = 8
	maxLiveSamples = 4096
)

func newLiveYield(maxLimit int, target float64, interval time.Duration) *liveYield {
	return &liveYield{max: maxLimit, target: target, interval: interval, limit: maxLimit}
}

// observe records one live upload's latency, and may decide.
func (c *liveYield) observe(now time.Time, d time.Duration) (limit int, changed bool) {
	if len(c.samples) < maxLiveSamples {
		c.samples = append(c.samples, d)
	}
	c.n++
	return c.tick(now)
}

// tick decides once an interval has passed with enough samples; without
// any live upload in an interval, the backlog grows.
func (c *liveYield) tick(now time.Time) (limit int, changed bool) {
	if c.start.IsZero() {
		c.start = now
	}
	el := now.Sub(c.start)
	if el < c.interval || (c.n > 0 && c.n < minLiveSamples && el < 4*c.interval) {
		return c.limit, false
	}
	old := c.limit
	if c.n == 0 {
		c.limit = min(c.max, c.limit+1)
	} else {
		slices.Sort(c.samples)
		p90 := c.samples[len(c.samples)*9/10]
		base := c.record(now, p90)
		if float64(p90) > c.target*float64(base) {
			c.limit = max(1, c.limit/2)
		} else {
			c.limit = min(c.max, c.limit+1)
		}
	}
	c.start, c.samples, c.n = now, c.samples[:0], 0
	return c.limit, c.limit != old
}

// record keeps v among the bucket minima and returns the best of the last
// baseBuckets buckets.
func (c *liveYield) record(now time.Time, v time.Duration) time.Duration {
	idx := now.UnixNano() / int64(baseBucket)
	b := &c.best[idx%baseBuckets]
	if b.idx != idx || v < b.v {
		b.idx, b.v = idx, v
	}
	best := v
	for _, x := range c.best {
		if x.idx > idx-baseBuckets && x.v > 0 && x.v < best {
			best = x.v
		}
	}
	return best
}
