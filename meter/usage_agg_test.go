package meter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// lossyReporter commits the first batch but reports a failure, as a
// connection dropped after the leader committed would.
type lossyReporter struct {
	m     *testNode
	calls int
}

func (r *lossyReporter) ReportUsage(ctx context.Context, b UsageBatch) (UsageResult, error) {
	r.calls++
	res, err := r.m.Meter.ReportUsage(ctx, b)
	if r.calls == 1 && err == nil {
		return UsageResult{}, errors.New("connection reset")
	}
	return res, err
}

// TestAggregatorOverRaft: deltas reach a real raft-backed meter once, even
// when the first submission's acknowledgement is lost; unknown streams are
// refused and counted.
func TestAggregatorOverRaft(t *testing.T) {
	m := openMeter(t, t.TempDir(), "127.0.0.1:0")
	defer m.Close()
	c := serve(t, m)
	provision(t, c)
	ctx := context.Background()
	streams, err := m.Accounts.Streams(ctx)
	require.NoError(t, err)
	id := streams[0].ID

	r := &lossyReporter{m: m}
	a := NewAggregator(r, AggregatorConfig{NodeID: "n1", Interval: time.Hour})
	a.Stored(id, 1000)
	a.Stored(id, 500)
	a.Observe(id, 1920, 1080)
	a.Observe(id, 1920, 1080) // unchanged: not sent again
	a.Stored("no-such-stream", 10)
	require.Error(t, a.Flush(ctx))
	a.Freed(id, 200, 1)
	require.NoError(t, a.Close(ctx)) // retries the first batch (same id), then sends the free
	require.Equal(t, 3, r.calls)

	u, err := m.Meter.StreamUsage(ctx, id)
	require.NoError(t, err)
	require.Equal(t, int64(1300), u.StorageBytes)
	require.Equal(t, int64(1), u.StoredObjects)
	require.Equal(t, int64(2), u.SegmentCount)
	require.Equal(t, int64(1500), u.IngestedBytes)
	require.Equal(t, "HD2", u.ObservedTier)
	st := m.Meter.Status(ctx)
	require.Equal(t, int64(1), st.Usage.RejectedUnknown)
	require.Equal(t, int64(2), st.Usage.Batches)
}

// dupReporter answers every batch as one the meter applied already, after
// failing the first fail submissions.
type dupReporter struct{ fail int }

func (r *dupReporter) ReportUsage(context.Context, UsageBatch) (UsageResult, error) {
	if r.fail > 0 {
		r.fail--
		return UsageResult{}, errors.New("connection reset")
	}
	return UsageResult{Duplicate: true}, nil
}

// TestAggregatorCountsUnexpectedDuplicate: a new batch the meter answers
// "duplicate" lost its usage (its seq was reused); that is counted, while a
// replayed or retried batch's duplicate answer (applied before the crash or
// the lost acknowledgement) is not.
func TestAggregatorCountsUnexpectedDuplicate(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	require.NoError(t, err)
	seq, id := j.NextBatch()
	data, err := json.Marshal(UsageBatch{ID: id, Entries: []UsageEntry{{Stream: "s1", Segments: 1}}})
	require.NoError(t, err)
	require.NoError(t, j.Batch(seq, data, nil))
	require.NoError(t, j.Close())

	j, err = OpenJournal(dir)
	require.NoError(t, err)
	defer j.Close()
	r := &dupReporter{}
	a := NewAggregator(r, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j})
	require.NoError(t, a.Flush(context.Background())) // the replay
	require.Zero(t, counterValue(t, a.duplicates))
	r.fail = 1
	a.Stored("s1", 100)
	require.Error(t, a.Flush(context.Background()))
	require.NoError(t, a.Flush(context.Background())) // the retry
	require.Zero(t, counterValue(t, a.duplicates))
	a.Stored("s1", 100)
	require.NoError(t, a.Flush(context.Background()))
	require.Equal(t, 1.0, counterValue(t, a.duplicates))
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

// TestResolveStopsAtStorageOutage: while storage fails, one tick asks it
// once, not once per unsure Put; each question has a deadline and a tick a
// cap, so a slow storage cannot hold the flush loop.
func TestResolveStopsAtStorageOutage(t *testing.T) {
	ctx := context.Background()
	var calls atomic.Int64
	var fail atomic.Bool
	fail.Store(true)
	j, err := OpenJournal(t.TempDir())
	require.NoError(t, err)
	defer j.Close()
	a := NewAggregator(&dupReporter{}, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j, ResolveMax: 20,
		ResolveTimeout: 50 * time.Millisecond,
		Resolve: func(ctx context.Context, key string) (string, error) {
			if calls.Add(1) == 2 {
				<-ctx.Done() // storage hangs: the deadline ends the call
				return "", ctx.Err()
			}
			if fail.Load() {
				return "", errors.New("connection refused")
			}
			return "", fs.ErrNotExist
		}})
	for i := range 50 {
		pid, err := a.Begin(ctx, "s1", fmt.Sprint("k", i), 10)
		require.NoError(t, err)
		a.Unsure(pid)
	}
	a.resolve(ctx)
	require.Equal(t, int64(1), calls.Load(), "storage asked again after it failed")
	fail.Store(false)
	a.resolve(ctx) // hangs on its first call
	require.Equal(t, int64(2), calls.Load())
	a.resolve(ctx)
	require.Equal(t, int64(22), calls.Load(), "at most ResolveMax calls a tick")
	a.resolve(ctx)
	a.resolve(ctx)
	require.Equal(t, int64(52), calls.Load())
	a.mu.Lock()
	require.Empty(t, a.unsure)
	a.mu.Unlock()
}
