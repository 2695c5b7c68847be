package redisindex_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/indextest"
	"github.com/vigilcloud/vigil/index/redisindex"
	"github.com/vigilcloud/vigil/internal/servers"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
)

func newClusterClient(t *testing.T, rc *testutil.RedisCluster) *redis.ClusterClient {
	// The slot map reload interval vigil serve sets (cmd/vigil/rediscluster.go):
	// a dead master answers no MOVED that would trigger a reload.
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, ClusterStateReloadInterval: 2 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

// deleteClusterKeys is deleteKeys on every master of a cluster.
func deleteClusterKeys(t *testing.T, c *redis.ClusterClient, prefix string) {
	ctx := context.Background()
	require.NoError(t, c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		iter := m.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			// One key at a time: keys of different streams live in
			// different slots.
			if err := m.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}))
}

// One real Redis Cluster (3 masters, a replica each) for the behaviour
// suite and then the two faults, in this order: the last kills a master.
func TestRedisCluster(t *testing.T) {
	rc := testutil.StartRedisCluster(t)
	t.Run("Suite", func(t *testing.T) { testClusterSuite(t, rc) })
	t.Run("FailoverMidIngest", func(t *testing.T) { testClusterFailover(t, rc) })
	t.Run("MasterKilledMidIngest", func(t *testing.T) { testClusterMasterKilled(t, rc) })
}

// The behaviour suite: every script, pipeline and transaction of the
// index stays within one stream's slot.
func testClusterSuite(t *testing.T, rc *testutil.RedisCluster) {
	client := newClusterClient(t, rc)
	runSuite(t, client, func(t *testing.T, prefix string) { deleteClusterKeys(t, client, prefix) })
}

// ingestWithFault adds perStream back-to-back 10-s segments to every
// stream, one goroutine per stream, storing each segment first when store
// is not nil (as an upload does). An Add that fails is retried, as a
// Bridge retries its upload. fault runs once a third of the segments are
// acknowledged. It returns the acknowledged starts per stream and how many
// Adds were retried.
func ingestWithFault(t *testing.T, ix *redisindex.Index, store storage.Backend, refs []storage.StreamRef, perStream int, fault func()) (map[int][]int64, int) {
	ctx := context.Background()
	var mu sync.Mutex
	acked := make(map[int][]int64)
	retried := 0
	progress := make(chan struct{}, len(refs)*perStream)
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Go(func() {
			for j := range perStream {
				seg := indextest.Seg(indextest.Base + int64(j)*10_000)
				if store != nil {
					indextest.Store(t, store, ref, seg)
				}
				deadline := time.Now().Add(60 * time.Second)
				for {
					_, _, err := ix.Add(ctx, ref, seg)
					if err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("stream %d: add %d still failing: %v", i, j, err)
						return
					}
					mu.Lock()
					retried++
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
				mu.Lock()
				acked[i] = append(acked[i], seg.Start)
				mu.Unlock()
				progress <- struct{}{}
			}
		})
	}
	for range len(refs) * perStream / 3 {
		<-progress
	}
	fault()
	wg.Wait()
	return acked, retried
}

func clusterRefs(t *testing.T, name string, n int) []storage.StreamRef {
	refs := make([]storage.StreamRef, n)
	for i := range refs {
		refs[i] = indextest.Ref(t, fmt.Sprintf("%s%d", name, i))
	}
	return refs
}

func starts(t *testing.T, ix *redisindex.Index, ref storage.StreamRef) []int64 {
	segs, err := ix.Segments(context.Background(), ref, indextest.Base, indextest.Base+index.HourMS)
	require.NoError(t, err)
	got := make([]int64, len(segs))
	for k, s := range segs {
		got[k] = s.Start
	}
	return got
}

// A master fails over to its replica (CLUSTER FAILOVER) while segments
// of streams on every master are added and compacted: every Add that
// returned success (an acknowledged upload) is listed afterwards.
func testClusterFailover(t *testing.T, rc *testutil.RedisCluster) {
	ctx := context.Background()
	client := newClusterClient(t, rc)
	prefix := "t" + testutil.RandomID() + ":"
	ix := redisindex.New(client, newStore(t), redisindex.Options{KeyPrefix: prefix})
	refs := clusterRefs(t, "s", 12)
	// The streams spread over every master.
	masters := map[string]bool{}
	for _, ref := range refs {
		m, err := rc.MasterOf(ctx, prefix+"{"+ref.Account+"/"+ref.Camera+"/"+ref.Stream+"}")
		require.NoError(t, err)
		masters[m.Addr] = true
	}
	require.Len(t, masters, 3, "the test streams should live on every master")

	// A compactor closes the hour while Adds go on into it.
	stop := make(chan struct{})
	var cwg sync.WaitGroup
	cwg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = ix.Compact(ctx, indextest.Base+index.HourMS) // fails during the failover; retried
			time.Sleep(20 * time.Millisecond)
		}
	})
	var old *servers.Process
	acked, retried := ingestWithFault(t, ix, nil, refs, 120, func() {
		var err error
		old, err = rc.Failover(ctx, prefix+"{acct/cam/s0}")
		if err != nil {
			t.Error(err)
		}
	})
	close(stop)
	cwg.Wait()
	if t.Failed() {
		return
	}
	now, err := rc.MasterOf(ctx, prefix+"{acct/cam/s0}")
	require.NoError(t, err)
	require.NotEqual(t, old.Addr, now.Addr, "s0's slot has a new master")
	t.Logf("adds retried during the failover: %d", retried)

	require.NoError(t, ix.Compact(ctx, indextest.Base+2*index.HourMS))
	for i, ref := range refs {
		require.Equal(t, acked[i], starts(t, ix, ref), "stream %d", i)
		spans, err := ix.Spans(ctx, ref, indextest.Base, indextest.Base+2*index.HourMS)
		require.NoError(t, err)
		require.Len(t, spans, 1, "stream %d: one contiguous span", i)
	}
}

// A master is SIGKILLed mid-ingest: its replica takes over within the
// node timeout, Adds failing meanwhile are retried, and ingest goes on.
// Replication is asynchronous, so the dead master's last writes may not
// have reached the replica; the segments are in storage, and a rebuild
// (vigil index rebuild) lists every acknowledged one again.
func testClusterMasterKilled(t *testing.T, rc *testutil.RedisCluster) {
	ctx := context.Background()
	client := newClusterClient(t, rc)
	store := newStore(t)
	prefix := "t" + testutil.RandomID() + ":"
	ix := redisindex.New(client, store, redisindex.Options{KeyPrefix: prefix})
	refs := clusterRefs(t, "k", 6)
	master, err := rc.MasterOf(ctx, prefix+"{acct/cam/k0}")
	require.NoError(t, err)
	acked, retried := ingestWithFault(t, ix, store, refs, 90, master.Kill)
	if t.Failed() {
		return
	}
	now, err := rc.MasterOf(ctx, prefix+"{acct/cam/k0}")
	require.NoError(t, err)
	require.NotEqual(t, master.Addr, now.Addr, "k0's slot has a new master")
	t.Logf("adds retried while the master was down: %d", retried)
	for i, ref := range refs {
		if got := starts(t, ix, ref); len(got) != len(acked[i]) {
			t.Logf("stream %d: %d of %d acknowledged segments listed before the rebuild", i, len(got), len(acked[i]))
		}
		require.NoError(t, ix.Rebuild(ctx, ref))
		require.Equal(t, acked[i], starts(t, ix, ref), "stream %d after the rebuild", i)
	}
}
