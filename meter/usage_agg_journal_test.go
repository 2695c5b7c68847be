package meter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/meter/journal"
)

// TestJournalReplayAfterCrash: a process is "killed" after the meter
// committed its batch but before it heard so, with one Put that created its
// object unseen, one that created nothing and one that lost the race to
// another node. The next process counts exactly what its Puts stored: the
// committed batch is not applied again, the unseen object is counted once.
func TestJournalReplayAfterCrash(t *testing.T) {
	m := openMeter(t, t.TempDir(), "127.0.0.1:0")
	defer m.Close()
	provision(t, serve(t, m))
	ctx := context.Background()
	streams, err := m.Accounts.Streams(ctx)
	require.NoError(t, err)
	id := streams[0].ID
	dir := t.TempDir()

	j1, err := OpenJournal(dir)
	require.NoError(t, err)
	objects := map[string]string{} // key → put id of the object storage holds
	r := &lossyReporter{m: m}
	a1 := NewAggregator(r, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j1})
	p1, err := a1.Begin(ctx, id, "k1", 1000)
	require.NoError(t, err)
	objects["k1"] = p1
	a1.Created(p1, id, 1000, 1280, 720)
	a1.Freed(id, 100, 1)
	require.Error(t, a1.Flush(ctx)) // committed, acknowledgement lost
	p2, err := a1.Begin(ctx, id, "k2", 500)
	require.NoError(t, err)
	objects["k2"] = p2 // stored, then killed before Created
	_, err = a1.Begin(ctx, id, "k3", 700)
	require.NoError(t, err) // killed mid-Put: nothing stored
	_, err = a1.Begin(ctx, id, "k4", 300)
	require.NoError(t, err)
	objects["k4"] = "another-node" // lost the race
	// SIGKILL: nothing is closed or flushed.

	j2, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j2.Close()
	a2 := NewAggregator(m, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j2,
		Resolve: func(ctx context.Context, key string) (string, error) {
			if p, ok := objects[key]; ok {
				return p, nil
			}
			return "", fs.ErrNotExist
		}})
	a2.resolve(ctx)
	require.NoError(t, a2.Close(ctx))

	u, err := m.Meter.StreamUsage(ctx, id)
	require.NoError(t, err)
	require.Equal(t, StreamUsage{StorageBytes: 1400, StoredObjects: 1, SegmentCount: 2, IngestedBytes: 1500}, StreamUsage{
		StorageBytes: u.StorageBytes, StoredObjects: u.StoredObjects, SegmentCount: u.SegmentCount, IngestedBytes: u.IngestedBytes})

	// Everything is settled: a third start has nothing to replay.
	require.NoError(t, j2.Close())
	j3, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j3.Close()
	rec := j3.Recovery()
	require.Empty(t, rec.Batches)
	require.Empty(t, rec.Intents)
	require.Empty(t, rec.Frees)
}

// TestFSMJournalBatchOnce: a journal's batch replayed after the request
// table forgot it (another request id here) changes nothing, nor does an
// older seq; the next seq applies.
func TestFSMJournalBatchOnce(t *testing.T) {
	h := newHarness(t)
	s := "st1"
	h.must(cluster.CmdCreateAccount, "a", "", accounts.NewAccount{ID: "a1", Name: "A"})
	h.must(cluster.CmdCreateBridge, "b", accounts.BridgeNonce("b1", strings.Repeat("t", 43)), accounts.CreateBridgePayload("a1", accounts.NewBridge{ID: "b1", Name: "B"}))
	h.must(cluster.CmdCreateCamera, "cam", "", accounts.CreateCameraPayload("b1", accounts.NewCamera{ID: "c1", Name: "C", Streams: []accounts.NewStream{{ID: s}}}))
	batch := func(seq int) UsageBatch {
		return UsageBatch{ID: fmt.Sprintf("j0123456789abcdef-%d", seq), Entries: []UsageEntry{{Stream: s, StoredBytes: 10, StoredObjects: 1, IngestedBytes: 10, Segments: 1}}}
	}
	dup := func(rid string, seq int) bool {
		var res UsageResult
		require.NoError(t, json.Unmarshal(h.must(cluster.CmdUsageBatch, rid, "", batch(seq)), &res))
		return res.Duplicate
	}
	require.False(t, dup("u1", 1))
	require.True(t, dup("u2", 1))
	require.False(t, dup("u3", 2))
	require.True(t, dup("u4", 1))
	u := h.st.Usage[s]
	require.Equal(t, int64(20), u.IngestedBytes)
	require.Equal(t, int64(2), u.Segments)
	require.Equal(t, uint64(2), h.st.UsageJournals["0123456789abcdef"])
}

// flakyReporter loses the acknowledgement of every third committed batch.
type flakyReporter struct {
	m     *testNode
	mu    sync.Mutex
	calls int
}

func (r *flakyReporter) ReportUsage(ctx context.Context, b UsageBatch) (UsageResult, error) {
	res, err := r.m.Meter.ReportUsage(ctx, b)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err == nil && r.calls%3 == 0 {
		return UsageResult{}, errors.New("connection reset")
	}
	return res, err
}

// TestJournalConcurrentUploadsThenCrash: uploads settle while batches are
// taken and submitted (some acknowledgements lost); after a "kill" and a
// replay every created object is counted exactly once.
func TestJournalConcurrentUploadsThenCrash(t *testing.T) {
	m := openMeter(t, t.TempDir(), "127.0.0.1:0")
	defer m.Close()
	provision(t, serve(t, m))
	ctx := context.Background()
	streams, err := m.Accounts.Streams(ctx)
	require.NoError(t, err)
	id := streams[0].ID
	dir := t.TempDir()

	j1, err := OpenJournal(dir)
	require.NoError(t, err)
	a1 := NewAggregator(&flakyReporter{m: m}, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j1})
	var mu sync.Mutex
	objects := map[string]string{}
	var wg sync.WaitGroup
	var want int64
	const writers, each = 4, 150
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("k%d-%d", w, i)
				size := int64(100 + i)
				pid, err := a1.Begin(ctx, id, key, size)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				objects[key] = pid
				mu.Unlock()
				if i%10 != 9 { // every tenth is killed before Created
					a1.Created(pid, id, size, 0, 0)
				}
			}
		}()
		for i := range each {
			want += int64(100 + i)
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for flushing := true; flushing; {
		select {
		case <-done:
			flushing = false
		default:
		}
		_ = a1.Flush(ctx)
	}
	// SIGKILL: whatever is pending or in flight stays in the journal.

	j2, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j2.Close()
	a2 := NewAggregator(m, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j2,
		Resolve: func(ctx context.Context, key string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			return objects[key], nil
		}})
	a2.resolve(ctx)
	require.NoError(t, a2.Close(ctx))
	u, err := m.Meter.StreamUsage(ctx, id)
	require.NoError(t, err)
	require.Equal(t, want, u.IngestedBytes)
	require.Equal(t, int64(writers*each), u.SegmentCount)
	require.Equal(t, want, u.StorageBytes)
}

// outageReporter is a meter that goes away: while down, a submission fails
// (the first one after committing, its acknowledgement lost). It checks that
// a journal's batches are submitted in seq order: never one before every
// earlier one was acknowledged.
type outageReporter struct {
	t     *testing.T
	m     *testNode
	mu    sync.Mutex
	down  bool
	lost  bool // the first failure commits
	acked uint64
}

func (r *outageReporter) ReportUsage(ctx context.Context, b UsageBatch) (UsageResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, seq, ok := journal.ParseBatchID(b.ID)
	require.True(r.t, ok)
	require.LessOrEqual(r.t, seq, r.acked+1, "batch %d submitted before %d was acknowledged", seq, r.acked+1)
	if r.down && r.lost {
		return UsageResult{}, errors.New("meter unavailable")
	}
	res, err := r.m.Meter.ReportUsage(ctx, b)
	if r.down {
		r.lost = true
		return UsageResult{}, errors.New("connection reset")
	}
	if err == nil {
		r.acked = max(r.acked, seq)
	}
	return res, err
}

// TestJournalBoundedDuringMeterOutage: while the meter is unreachable, the
// uploads of each interval settle into one batch record, so the journal's
// live records and the aggregator's do not grow by one per upload; when the
// meter is back every upload is counted once.
func TestJournalBoundedDuringMeterOutage(t *testing.T) {
	m := openMeter(t, t.TempDir(), "127.0.0.1:0")
	defer m.Close()
	provision(t, serve(t, m))
	ctx := context.Background()
	streams, err := m.Accounts.Streams(ctx)
	require.NoError(t, err)
	id := streams[0].ID

	dir := t.TempDir()
	j, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j.Close()
	j.SetCompactBytes(4 << 10)
	r := &outageReporter{t: t, m: m, down: true}
	a := NewAggregator(r, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j})
	var want int64
	for tick := range 20 {
		for i := range 20 {
			size := int64(100 + tick*20 + i)
			pid, err := a.Begin(ctx, id, fmt.Sprint("k", tick, "-", i), size)
			require.NoError(t, err)
			a.Created(pid, id, size, 0, 0)
			want += size
		}
		require.Error(t, a.Flush(ctx))
		rec, _ := journalOnDisk(t, dir)
		a.mu.Lock()
		ords := len(a.ords)
		a.mu.Unlock()
		require.Zero(t, len(rec.Intents)+len(rec.Frees), "tick %d: uploads kept one journal record each", tick)
		require.Zero(t, ords, "tick %d", tick)
	}
	// Rewritten meanwhile: the file holds the 20 batches, not the 400
	// uploads' records (at most twice the live records, and one tick's).
	fi, err := os.Stat(filepath.Join(dir, "usage.journal"))
	require.NoError(t, err)
	rec, live := journalOnDisk(t, dir)
	require.Len(t, rec.Batches, 20)
	require.Less(t, fi.Size(), 2*live+4<<10)
	r.mu.Lock()
	r.down = false
	r.mu.Unlock()
	require.NoError(t, a.Close(ctx))
	u, err := m.Meter.StreamUsage(ctx, id)
	require.NoError(t, err)
	require.Equal(t, want, u.IngestedBytes)
	require.Equal(t, int64(400), u.SegmentCount)
	require.Equal(t, want, u.StorageBytes)
	rec, _ = journalOnDisk(t, dir)
	require.Empty(t, rec.Batches)
}

// journalOnDisk is what a process killed now would recover from the journal
// in dir (read from a copy, which Open rewrites), and the size of that
// rewrite: about the live records.
func journalOnDisk(t *testing.T, dir string) (journal.Recovery, int64) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "usage.journal"))
	require.NoError(t, err)
	cp := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(cp, "usage.journal"), b, 0o600))
	j, err := journal.Open(cp)
	require.NoError(t, err)
	defer j.Close()
	fi, err := os.Stat(filepath.Join(cp, "usage.journal"))
	require.NoError(t, err)
	return j.Recovery(), fi.Size()
}

// recordingReporter keeps the batches submitted to it.
type recordingReporter struct {
	mu      sync.Mutex
	batches []UsageBatch
}

func (r *recordingReporter) ReportUsage(_ context.Context, b UsageBatch) (UsageResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, b)
	return UsageResult{Applied: len(b.Entries)}, nil
}

// TestAggregatorReplaysPreviousReleaseJournal: the journal a node of the
// release before left (meter/journal/testdata) is replayed the same: its
// two unsettled batches first, as they were, then its free and the Put
// storage says it created, in a new batch after them.
func TestAggregatorReplaysPreviousReleaseJournal(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("journal", "testdata", "usage.journal"))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "usage.journal"), b, 0o600))
	j, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j.Close()
	r := &recordingReporter{}
	now := time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)
	a := NewAggregator(r, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j, Now: func() time.Time { return now },
		Resolve: func(_ context.Context, key string) (string, error) {
			require.Equal(t, "c1-main/1772366404000", key)
			return "j310d7683db5d8a20-5", nil
		}})
	ctx := context.Background()
	a.resolve(ctx)
	require.NoError(t, a.Close(ctx))

	from := time.Date(2026, 3, 1, 12, 0, 1, 123456789, time.UTC)
	require.Equal(t, []UsageBatch{
		{ID: "j310d7683db5d8a20-2", From: from, To: from.Add(time.Second), Entries: []UsageEntry{
			{Stream: "c1-main", StoredBytes: 500, StoredObjects: 1, IngestedBytes: 500, Segments: 1}}},
		{ID: "j310d7683db5d8a20-3", From: from.Add(time.Second), To: from.Add(2 * time.Second), Entries: []UsageEntry{
			{Stream: "c1-<sub>&", Width: 640, Height: 480}}},
		{ID: "j310d7683db5d8a20-4", From: now, To: now, Entries: []UsageEntry{
			{Stream: "c1-main", StoredBytes: 900 - 1000, StoredObjects: 0, IngestedBytes: 900, Segments: 1}}},
	}, r.batches)
	rec, _ := journalOnDisk(t, dir)
	require.Empty(t, rec.Batches)
	require.Empty(t, rec.Intents)
	require.Empty(t, rec.Frees)
}

// TestJournalReplaysAdjustments: a correction of either sign (reconcile)
// is journaled like a free, so a process killed before its batch replays
// it once, and it leaves ingested bytes and segments alone.
func TestJournalReplaysAdjustments(t *testing.T) {
	m := openMeter(t, t.TempDir(), "127.0.0.1:0")
	defer m.Close()
	provision(t, serve(t, m))
	ctx := context.Background()
	streams, err := m.Accounts.Streams(ctx)
	require.NoError(t, err)
	id := streams[0].ID
	dir := t.TempDir()

	j1, err := OpenJournal(dir)
	require.NoError(t, err)
	a1 := NewAggregator(m, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j1})
	a1.Adjust(id, 5000, 4)
	a1.Adjust(id, -1000, -1)
	a1.Freed(id, 500, 1)
	// SIGKILL: nothing is closed or flushed.

	j2, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j2.Close()
	a2 := NewAggregator(m, AggregatorConfig{NodeID: "n1", Interval: time.Hour, Journal: j2})
	require.NoError(t, a2.Close(ctx))
	u, err := m.Meter.StreamUsage(ctx, id)
	require.NoError(t, err)
	require.Equal(t, StreamUsage{StorageBytes: 3500, StoredObjects: 2}, StreamUsage{
		StorageBytes: u.StorageBytes, StoredObjects: u.StoredObjects, SegmentCount: u.SegmentCount, IngestedBytes: u.IngestedBytes})
	require.NoError(t, j1.Close())
}
