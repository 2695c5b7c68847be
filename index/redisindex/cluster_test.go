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
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
)

func newClusterClient(t *testing.T, rc *testutil.RedisCluster) *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
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

// The behaviour suite on a real 3-master Redis Cluster: every script,
// pipeline and transaction of the index stays within one stream's slot.
func TestClusterSuite(t *testing.T) {
	rc := testutil.StartRedisCluster(t)
	client := newClusterClient(t, rc)
	runSuite(t, client, func(t *testing.T, prefix string) { deleteClusterKeys(t, client, prefix) })
}

// A master fails over to its replica while segments of streams on every
// master are added and compacted: every Add that returned success (an
// acknowledged upload) is listed afterwards. An Add that failed during
// the failover is retried, as a Bridge retries its upload.
func TestClusterFailoverMidIngest(t *testing.T) {
	ctx := context.Background()
	rc := testutil.StartRedisCluster(t)
	client := newClusterClient(t, rc)
	store := newStore(t)
	prefix := "t" + testutil.RandomID() + ":"
	ix := redisindex.New(client, store, redisindex.Options{KeyPrefix: prefix})

	const streams, perStream = 12, 120 // back to back: 20 minutes each
	refs := make([]storage.StreamRef, streams)
	for i := range refs {
		refs[i] = indextest.Ref(t, fmt.Sprintf("s%d", i))
	}
	// The streams spread over every master.
	masters := map[string]bool{}
	for _, ref := range refs {
		m, err := rc.MasterOf(ctx, prefix+"{"+ref.Account+"/"+ref.Camera+"/"+ref.Stream+"}")
		require.NoError(t, err)
		masters[m.Addr] = true
	}
	require.Len(t, masters, 3, "the test streams should live on every master")

	var mu sync.Mutex
	acked := make(map[int][]int64)
	retried := 0
	progress := make(chan struct{}, streams*perStream)
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Go(func() {
			for j := range perStream {
				seg := indextest.Seg(indextest.Base + int64(j)*10_000)
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
	for range streams * perStream / 3 {
		<-progress
	}
	old, err := rc.Failover(ctx, prefix+"{acct/cam/s0}")
	require.NoError(t, err)
	wg.Wait()
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
		segs, err := ix.Segments(ctx, ref, indextest.Base, indextest.Base+2*index.HourMS)
		require.NoError(t, err)
		got := make([]int64, len(segs))
		for k, s := range segs {
			got[k] = s.Start
		}
		require.Equal(t, acked[i], got, "stream %d", i)
		spans, err := ix.Spans(ctx, ref, indextest.Base, indextest.Base+2*index.HourMS)
		require.NoError(t, err)
		require.Len(t, spans, 1, "stream %d: one contiguous span", i)
	}
}
