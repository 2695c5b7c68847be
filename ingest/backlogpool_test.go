package ingest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// grantLog records the order in which queued backlog uploads got a slot.
type grantLog struct {
	mu    sync.Mutex
	order []string
	rel   []func()
}

// queue starts a waiter of bridge on p that logs its grant and keeps the
// slot until released; errs receives a refusal.
func (g *grantLog) queue(p *backlogPool, bridge string, errs chan<- error) {
	go func() {
		release, err := p.acquire(context.Background(), bridge, time.Minute)
		if err != nil {
			errs <- err
			return
		}
		g.mu.Lock()
		g.order = append(g.order, bridge)
		g.rel = append(g.rel, release)
		g.mu.Unlock()
	}()
}

// releaseNext releases the n-th grant once it has happened.
func (g *grantLog) releaseNext(t *testing.T, n int) {
	t.Helper()
	waitFor(t, "grant", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.order) > n })
	g.mu.Lock()
	rel := g.rel[n]
	g.mu.Unlock()
	rel()
}

// poolHeldByA is a one-slot pool with a queue of maxQueue: A holds the
// slot and queues n more.
func poolHeldByA(t *testing.T, maxQueue, n int) (*backlogPool, func(), *grantLog, chan error) {
	p := newBacklogPool(1, maxQueue, 8, nil)
	hold, err := p.acquire(context.Background(), "A", time.Minute)
	require.NoError(t, err)
	g := &grantLog{}
	errs := make(chan error, 8)
	for i := range n {
		g.queue(p, "A", errs)
		waitQueued(t, p, i+1)
	}
	return p, hold, g, errs
}

func waitQueued(t *testing.T, p *backlogPool, n int) {
	t.Helper()
	waitFor(t, "queue depth", func() bool { _, q := p.stats(); return q == n })
}

// TestBacklogPoolRoundRobinAcrossBridges: a bridge that queues after
// another bridge's long queue is served next, not behind the whole queue.
func TestBacklogPoolRoundRobinAcrossBridges(t *testing.T) {
	p, hold, g, errs := poolHeldByA(t, 8, 3)
	g.queue(p, "B", errs)
	waitQueued(t, p, 4)

	hold()
	for i := range 4 {
		g.releaseNext(t, i)
	}
	waitQueued(t, p, 0)
	assert.Equal(t, []string{"A", "B", "A", "A"}, g.order)
	assert.Empty(t, errs)
}

// TestBacklogPoolFullQueuePushesOutLongest: when the queue is full, a
// bridge with fewer waiters takes the place of the newest waiter of the
// bridge with the most; when every bridge waits equally, the newcomer is
// shed.
func TestBacklogPoolFullQueuePushesOutLongest(t *testing.T) {
	p, hold, g, errs := poolHeldByA(t, 4, 4)
	for _, b := range []string{"B", "C", "D"} {
		g.queue(p, b, errs)
		select {
		case err := <-errs:
			assert.ErrorIs(t, err, errShed, "an A waiter is pushed out for %s", b)
		case <-time.After(10 * time.Second):
			t.Fatalf("no A waiter pushed out for %s", b)
		}
		waitFor(t, b+" queued", func() bool { return p.waiting(b) == 1 })
	}
	assert.Equal(t, 1, p.waiting("A"))
	// A, B, C and D wait one each: E is shed itself.
	_, err := p.acquire(context.Background(), "E", time.Minute)
	assert.ErrorIs(t, err, errShed)

	hold()
	for i := range 4 {
		g.releaseNext(t, i)
	}
	assert.ElementsMatch(t, []string{"A", "B", "C", "D"}, g.order)
}

// TestBacklogPoolBridgeShare: one bridge holds and waits for at most its
// share; beyond it, it is refused at once and others still get in.
func TestBacklogPoolBridgeShare(t *testing.T) {
	p := newBacklogPool(2, 8, 2, nil)
	r1, err := p.acquire(context.Background(), "A", time.Minute)
	require.NoError(t, err)
	var g grantLog
	errs := make(chan error, 4)
	g.queue(p, "A", errs) // granted: the second slot
	g.releaseNext(t, 0)
	r2, err := p.acquire(context.Background(), "A", time.Minute)
	require.NoError(t, err)
	_, err = p.acquire(context.Background(), "A", time.Minute)
	assert.ErrorIs(t, err, errBridgeShare)
	g.queue(p, "B", errs)
	waitQueued(t, p, 1)
	r1()
	r2()
	g.releaseNext(t, 1)
	assert.Equal(t, []string{"A", "B"}, g.order)
	// The operator ("") has no share: it is only shed when the pool is full.
	for range 2 {
		r, err := p.acquire(context.Background(), "", time.Minute)
		require.NoError(t, err)
		defer r()
	}
	_, err = p.acquire(context.Background(), "", time.Millisecond)
	assert.ErrorIs(t, err, errShed)
}

// TestBacklogPoolLimitChanges: lowering the limit takes no slot back but
// grants none until uploads finish below it; raising it grants waiters at
// once.
func TestBacklogPoolLimitChanges(t *testing.T) {
	p := newBacklogPool(2, 8, 8, nil)
	a, err := p.acquire(context.Background(), "A", time.Minute)
	require.NoError(t, err)
	b, err := p.acquire(context.Background(), "B", time.Minute)
	require.NoError(t, err)
	p.setLimit(1)
	var g grantLog
	errs := make(chan error, 4)
	g.queue(p, "C", errs)
	waitQueued(t, p, 1)
	a()
	inUse, q := p.stats()
	assert.Equal(t, 1, inUse)
	assert.Equal(t, 1, q, "still at the lowered limit: C waits")
	p.setLimit(3)
	g.releaseNext(t, 0)
	b()
	inUse, _ = p.stats()
	assert.Equal(t, 0, inUse)
}

// TestBacklogPoolWaitAndCancel: a waiter is shed after its wait and leaves
// the queue; a cancelled one returns its context's error.
func TestBacklogPoolWaitAndCancel(t *testing.T) {
	p := newBacklogPool(1, 8, 8, nil)
	hold, err := p.acquire(context.Background(), "A", time.Minute)
	require.NoError(t, err)
	defer hold()
	_, err = p.acquire(context.Background(), "B", time.Millisecond)
	assert.ErrorIs(t, err, errShed)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := p.acquire(ctx, "B", time.Minute); done <- err }()
	waitQueued(t, p, 1)
	cancel()
	assert.True(t, errors.Is(<-done, context.Canceled))
	waitQueued(t, p, 0)
	assert.Equal(t, 0, p.waiting("B"))
}

// TestLiveYieldHalvesAndRegrows: the backlog limit halves while live
// uploads are slower than the target multiple of their recent best, down
// to one slot, and grows back one slot an interval once they are not.
func TestLiveYieldHalvesAndRegrows(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := newLiveYield(16, 1.2, time.Second)
	at := t0
	interval := func(d time.Duration) int {
		for range 20 {
			c.observe(at, d)
		}
		at = at.Add(time.Second)
		limit, _ := c.tick(at)
		return limit
	}
	assert.Equal(t, 16, interval(10*time.Millisecond), "calm: full pool")
	var got []int
	for range 6 {
		got = append(got, interval(30*time.Millisecond))
	}
	assert.Equal(t, []int{8, 4, 2, 1, 1, 1}, got)
	got = got[:0]
	for range 3 {
		got = append(got, interval(11*time.Millisecond))
	}
	assert.Equal(t, []int{2, 3, 4}, got, "within 1.2x of the best: one more slot an interval")
	// No live uploads at all: the backlog may use the whole pool.
	for range 20 {
		at = at.Add(time.Second)
		c.tick(at)
	}
	limit, _ := c.tick(at.Add(time.Second))
	assert.Equal(t, 16, limit)
	// Too few samples in an interval decide nothing.
	limit, changed := c.observe(at.Add(3*time.Second), time.Second)
	assert.Equal(t, 16, limit)
	assert.False(t, changed)
}
