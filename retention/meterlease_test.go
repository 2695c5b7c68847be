package retention

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	tu "github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/replica"
)

// startMeterCluster starts n real raft meter nodes on loopback, each
// behind its own HTTP server (joins and forwards to the leader take the
// production path).
func startMeterCluster(t *testing.T, n int) []*replica.Replica {
	t.Helper()
	const token = "cluster-test-token"
	var (
		nodes []*replica.Replica
		first string // HTTP address of the first node
	)
	for i := range n {
		var h atomic.Value
		h.Store(http.NotFoundHandler())
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.Load().(http.Handler).ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		addr := strings.TrimPrefix(srv.URL, "http://")
		join := first
		if i == 0 {
			first = addr
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		m, err := replica.Open(ctx, cluster.PeerConfig{
			Dir: t.TempDir(), NodeID: fmt.Sprintf("n%d", i+1), RaftAddr: tu.FreePort(t), HeartbeatTimeout: 150 * time.Millisecond,
			Join: join, HTTPAddr: addr, ClusterToken: token,
		})
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		mux := http.NewServeMux()
		for _, p := range accounts.HandlerPatterns() {
			mux.Handle(p, m.Accounts.Handler())
		}
		for _, p := range cluster.ClusterPatterns() {
			mux.Handle(p, m.ClusterHandler())
		}
		h.Store(auth.New(token, m.Accounts).Middleware(mux, nil))
		nodes = append(nodes, m)
	}
	return nodes
}

// exclusive wraps a node's lease and fails the test when two holders hold
// one key at once.
type exclusive struct {
	lease.Lease
	t       *testing.T
	mu      *sync.Mutex
	holders map[string]int
	grants  *atomic.Int64
}

type exclusiveHeld struct {
	lease.Held
	e   exclusive
	key string
}

func (e exclusive) TryAcquire(ctx context.Context, key string, ttl time.Duration) (lease.Held, bool, error) {
	h, ok, err := e.Lease.TryAcquire(ctx, key, ttl)
	if err != nil || !ok {
		return h, ok, err
	}
	e.grants.Add(1)
	e.mu.Lock()
	e.holders[key]++
	n := e.holders[key]
	e.mu.Unlock()
	if n > 1 {
		e.t.Errorf("lease %s granted while held (%d holders)", key, n)
	}
	return exclusiveHeld{Held: h, e: e, key: key}, true, nil
}

func (h exclusiveHeld) Release(ctx context.Context) error {
	h.e.mu.Lock()
	h.e.holders[h.key]--
	h.e.mu.Unlock()
	return h.Held.Release(ctx)
}

// TestSweepersShareMeterLease: three sweepers, each on its own node of a
// real 3-node raft meter and using that node's meter lease, sweep the
// same streams at the same time. Never do two sweep one stream at once,
// every expired segment goes, and the freed bytes are counted once.
func TestSweepersShareMeterLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := startMeterCluster(t, 3)
	f := newFixture(t, false)
	streams, all := f.sharedStreams(t, 3, 30*time.Minute)
	usage := newUsage()
	clk := &clock{t: T}
	var (
		mu      sync.Mutex
		holders = map[string]int{}
		grants  atomic.Int64
		g       errgroup.Group
	)
	// Slow deletes widen the window in which a second sweeper could slip in.
	slow := &counting{Backend: f.store, beforeDe: func(keys []string) ([]string, error) {
		time.Sleep(20 * time.Millisecond)
		return keys, nil
	}}
	sweeper := func(m *replica.Replica) *Sweeper {
		l := exclusive{Lease: lease.Shared{M: m.Leases}, t: t, mu: &mu, holders: holders, grants: &grants}
		return NewSweeper(SweeperConfig{Margin: time.Minute, Now: clk.Now}, slow, f.idx, streams, usage, l)
	}
	for _, m := range nodes {
		sw := sweeper(m)
		g.Go(func() error {
			for range 2 {
				if _, err := sw.Sweep(ctx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	// One more pass settles streams that were busy under another's lease.
	_, err := sweeper(nodes[1]).Sweep(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, grants.Load(), int64(len(all)))
	f.checkShared(t, streams, all, usage)
}
