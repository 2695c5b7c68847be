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
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/fsutil"
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
	rec := j3.takeRecovery()
	require.Empty(t, rec.batches)
	require.Empty(t, rec.intents)
	require.Empty(t, rec.frees)
}

// TestJournalTornTail: a record cut short by a crash ends the replay; the
// records before it count, and appends go on after a rewrite.
func TestJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	require.NoError(t, err)
	_, _, err = j.intent("s1", "k1", 10)
	require.NoError(t, err)
	_, _, err = j.intent("s1", "k2", 20)
	require.NoError(t, err)
	require.NoError(t, j.Close())
	path := filepath.Join(dir, journalFile)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b[:len(b)-5], 0o600)) // the second record torn

	j2, err := OpenJournal(dir)
	require.NoError(t, err)
	rec := j2.takeRecovery()
	require.Len(t, rec.intents, 1)
	require.Equal(t, "k1", rec.intents[0].Key)
	ord, pid, err := j2.intent("s1", "k3", 30)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("j%s-%d", j2.id, ord), pid)
	require.NoError(t, j2.Close())

	j3, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j3.Close()
	rec = j3.takeRecovery()
	require.Len(t, rec.intents, 2)
	require.Equal(t, "k3", rec.intents[1].Key)
	require.Greater(t, rec.intents[1].Ord, rec.intents[0].Ord)
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

// fullDisk is the journal file on a disk that fills up: while full, a write
// stores part of its bytes and fails with ENOSPC, as write(2) does.
type fullDisk struct {
	*os.File
	full bool
}

func (f *fullDisk) Write(p []byte) (int, error) {
	if f.full {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, syscall.ENOSPC
	}
	return f.File.Write(p)
}

func (f *fullDisk) WriteAt(p []byte, off int64) (int, error) {
	if f.full {
		n, _ := f.File.WriteAt(p[:len(p)/2], off)
		return n, syscall.ENOSPC
	}
	return f.File.WriteAt(p, off)
}

// TestJournalWriteFailureLosesNothing: an append that fails part-way (a full
// disk) must not cost the records appended after it: the next start still
// finds the fsynced intents and batches written once space came back, and
// allocates batch seqs after them.
func TestJournalWriteFailureLosesNothing(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	require.NoError(t, err)
	ord1, _, err := j.intent("s1", "k1", 10)
	require.NoError(t, err)
	disk := &fullDisk{File: j.f.(*os.File)}
	j.f = disk
	disk.full = true
	_, _, err = j.intent("s1", "k2", 20)
	require.ErrorIs(t, err, syscall.ENOSPC)
	_, err = j.free("s1", 5, 1)
	require.ErrorIs(t, err, syscall.ENOSPC)
	disk.full = false
	_, _, err = j.intent("s1", "k3", 30)
	require.NoError(t, err)
	seq, _ := j.nextBatch()
	b := &UsageBatch{ID: "x", Entries: []UsageEntry{{Stream: "s1", StoredBytes: 10, StoredObjects: 1, IngestedBytes: 10, Segments: 1}}}
	require.NoError(t, j.batch(seq, b, []uint64{ord1}))
	require.NoError(t, j.Close())

	j2, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j2.Close()
	rec := j2.takeRecovery()
	require.Equal(t, []uint64{seq}, rec.seqs, "the batch written after the failed append")
	require.Len(t, rec.intents, 1)
	require.Equal(t, "k3", rec.intents[0].Key)
	require.Empty(t, rec.frees)
	next, _ := j2.nextBatch()
	require.Greater(t, next, seq, "a batch seq the meter may have applied is not reused")
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
	_, seq, ok := journalBatchID(b.ID)
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
	j.compactBytes = 4 << 10
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
		j.mu.Lock()
		live := len(j.live)
		j.mu.Unlock()
		a.mu.Lock()
		ords := len(a.ords)
		a.mu.Unlock()
		require.Zero(t, live, "tick %d: uploads kept one journal record each", tick)
		require.Zero(t, ords, "tick %d", tick)
	}
	// Rewritten meanwhile: the file holds the 20 batches, not the 400
	// uploads' records (at most twice the live records, and one tick's).
	fi, err := os.Stat(filepath.Join(dir, journalFile))
	require.NoError(t, err)
	j.mu.Lock()
	var live int
	for _, l := range j.batches {
		live += len(l)
	}
	j.mu.Unlock()
	require.Less(t, fi.Size(), int64(2*live+4<<10))
	r.mu.Lock()
	r.down = false
	r.mu.Unlock()
	require.NoError(t, a.Close(ctx))
	u, err := m.Meter.StreamUsage(ctx, id)
	require.NoError(t, err)
	require.Equal(t, want, u.IngestedBytes)
	require.Equal(t, int64(400), u.SegmentCount)
	require.Equal(t, want, u.StorageBytes)
	j.mu.Lock()
	defer j.mu.Unlock()
	require.Empty(t, j.batches)
}

// TestJournalCompactionDoesNotBlockAppends: while a rewrite writes the new
// file, uploads and batches still append (and fsync); what they append
// meanwhile is in the new file.
func TestJournalCompactionDoesNotBlockAppends(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	require.NoError(t, err)
	ord1, _, err := j.intent("s1", "k1", 10)
	require.NoError(t, err)
	snap, release := make(chan struct{}), make(chan struct{})
	j.afterSnapshot = func() { close(snap); <-release }
	j.compactBytes = 1
	compacted := make(chan error, 1)
	go func() { compacted <- j.compactIfBig() }()
	<-snap

	appended := make(chan error, 1)
	var seq uint64
	go func() {
		appended <- func() error {
			if _, _, err := j.intent("s1", "k2", 20); err != nil {
				return err
			}
			if _, err := j.free("s1", 5, 1); err != nil {
				return err
			}
			seq, _ = j.nextBatch()
			return j.batch(seq, &UsageBatch{ID: "x", Entries: []UsageEntry{{Stream: "s1", Segments: 1}}}, []uint64{ord1})
		}()
	}()
	select {
	case err := <-appended:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("appends wait for the rewrite's disk I/O")
	}
	close(release)
	require.NoError(t, <-compacted)
	_, _, err = j.intent("s1", "k3", 30)
	require.NoError(t, err)
	require.NoError(t, j.Close())

	j2, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j2.Close()
	rec := j2.takeRecovery()
	require.Equal(t, []uint64{seq}, rec.seqs)
	require.Len(t, rec.intents, 2)
	require.Equal(t, "k2", rec.intents[0].Key)
	require.Equal(t, "k3", rec.intents[1].Key)
	require.Len(t, rec.frees, 1)
}

// TestJournalCompactionDirSyncFails: once the rewrite is renamed into
// place, appends go to it even if the directory's fsync then fails; they
// used to go to the unlinked old file and were lost.
func TestJournalCompactionDirSyncFails(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	require.NoError(t, err)
	_, _, err = j.intent("s1", "k1", 10)
	require.NoError(t, err)
	j.syncDir = func(string) error { return syscall.EIO }
	j.compactBytes = 1
	require.ErrorIs(t, j.compactIfBig(), syscall.EIO)
	j.syncDir = fsutil.SyncDir
	_, _, err = j.intent("s1", "k2", 20)
	require.NoError(t, err)
	require.NoError(t, j.Close())

	j2, err := OpenJournal(dir)
	require.NoError(t, err)
	defer j2.Close()
	rec := j2.takeRecovery()
	require.Len(t, rec.intents, 2)
	require.Equal(t, "k2", rec.intents[1].Key)
}
