package journal

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/internal/fsutil"
)

// seqs lists the seqs of the batches rec holds.
func seqs(rec Recovery) []uint64 {
	var out []uint64
	for _, b := range rec.Batches {
		out = append(out, b.Seq)
	}
	return out
}

// TestJournalTornTail: a record cut short by a crash ends the replay; the
// records before it count, and appends go on after a rewrite.
func TestJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir)
	require.NoError(t, err)
	_, err = j.Intent("s1", "k1", 10)
	require.NoError(t, err)
	_, err = j.Intent("s1", "k2", 20)
	require.NoError(t, err)
	require.NoError(t, j.Close())
	path := filepath.Join(dir, fileName)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b[:len(b)-5], 0o600)) // the second record torn

	j2, err := Open(dir)
	require.NoError(t, err)
	rec := j2.Recovery()
	require.Len(t, rec.Intents, 1)
	require.Equal(t, "k1", rec.Intents[0].Key)
	in, err := j2.Intent("s1", "k3", 30)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("j%s-%d", j2.id, in.Ord), in.PutID)
	require.NoError(t, j2.Close())

	j3, err := Open(dir)
	require.NoError(t, err)
	defer j3.Close()
	rec = j3.Recovery()
	require.Len(t, rec.Intents, 2)
	require.Equal(t, "k3", rec.Intents[1].Key)
	require.Greater(t, rec.Intents[1].Ord, rec.Intents[0].Ord)
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
	j, err := Open(dir)
	require.NoError(t, err)
	in1, err := j.Intent("s1", "k1", 10)
	require.NoError(t, err)
	disk := &fullDisk{File: j.f.(*os.File)}
	j.f = disk
	disk.full = true
	_, err = j.Intent("s1", "k2", 20)
	require.ErrorIs(t, err, syscall.ENOSPC)
	_, err = j.Free("s1", 5, 1)
	require.ErrorIs(t, err, syscall.ENOSPC)
	disk.full = false
	_, err = j.Intent("s1", "k3", 30)
	require.NoError(t, err)
	seq, _ := j.NextBatch()
	b := json.RawMessage(`{"id":"x","entries":[{"s":"s1","b":10,"o":1,"i":10,"n":1}]}`)
	require.NoError(t, j.Batch(seq, b, []uint64{in1.Ord}))
	require.NoError(t, j.Close())

	j2, err := Open(dir)
	require.NoError(t, err)
	defer j2.Close()
	rec := j2.Recovery()
	require.Equal(t, []uint64{seq}, seqs(rec), "the batch written after the failed append")
	require.Len(t, rec.Intents, 1)
	require.Equal(t, "k3", rec.Intents[0].Key)
	require.Empty(t, rec.Frees)
	next, _ := j2.NextBatch()
	require.Greater(t, next, seq, "a batch seq the meter may have applied is not reused")
}

// TestJournalCompactionDoesNotBlockAppends: while a rewrite writes the new
// file, uploads and batches still append (and fsync); what they append
// meanwhile is in the new file.
func TestJournalCompactionDoesNotBlockAppends(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir)
	require.NoError(t, err)
	in1, err := j.Intent("s1", "k1", 10)
	require.NoError(t, err)
	snap, release := make(chan struct{}), make(chan struct{})
	j.afterSnapshot = func() { close(snap); <-release }
	j.compactBytes = 1
	compacted := make(chan error, 1)
	go func() { compacted <- j.CompactIfBig() }()
	<-snap

	appended := make(chan error, 1)
	var seq uint64
	go func() {
		appended <- func() error {
			if _, err := j.Intent("s1", "k2", 20); err != nil {
				return err
			}
			if _, err := j.Free("s1", 5, 1); err != nil {
				return err
			}
			seq, _ = j.NextBatch()
			return j.Batch(seq, json.RawMessage(`{"id":"x","entries":[{"s":"s1","n":1}]}`), []uint64{in1.Ord})
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
	_, err = j.Intent("s1", "k3", 30)
	require.NoError(t, err)
	require.NoError(t, j.Close())

	j2, err := Open(dir)
	require.NoError(t, err)
	defer j2.Close()
	rec := j2.Recovery()
	require.Equal(t, []uint64{seq}, seqs(rec))
	require.Len(t, rec.Intents, 2)
	require.Equal(t, "k2", rec.Intents[0].Key)
	require.Equal(t, "k3", rec.Intents[1].Key)
	require.Len(t, rec.Frees, 1)
}

// TestJournalCompactionDirSyncFails: once the rewrite is renamed into
// place, appends go to it even if the directory's fsync then fails; they
// used to go to the unlinked old file and were lost.
func TestJournalCompactionDirSyncFails(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir)
	require.NoError(t, err)
	_, err = j.Intent("s1", "k1", 10)
	require.NoError(t, err)
	j.syncDir = func(string) error { return syscall.EIO }
	j.compactBytes = 1
	require.ErrorIs(t, j.CompactIfBig(), syscall.EIO)
	j.syncDir = fsutil.SyncDir
	_, err = j.Intent("s1", "k2", 20)
	require.NoError(t, err)
	require.NoError(t, j.Close())

	j2, err := Open(dir)
	require.NoError(t, err)
	defer j2.Close()
	rec := j2.Recovery()
	require.Len(t, rec.Intents, 2)
	require.Equal(t, "k2", rec.Intents[1].Key)
}

// The journal in testdata was written by the release before this package
// (meter's Journal, which encoded a *UsageBatch inline): a batch, an
// intent NotCreated settled, a committed batch, two batches and a free and
// an intent left unsettled, and a torn last record.
const (
	fixtureID     = "310d7683db5d8a20"
	fixtureBatch2 = `{"id":"j310d7683db5d8a20-2","from":"2026-03-01T12:00:01.123456789Z","to":"2026-03-01T12:00:02.123456789Z","entries":[{"s":"c1-main","b":500,"o":1,"i":500,"n":1}]}`
	fixtureBatch3 = `{"id":"j310d7683db5d8a20-3","from":"2026-03-01T12:00:02.123456789Z","to":"2026-03-01T12:00:03.123456789Z","entries":[{"s":"c1-\u003csub\u003e\u0026","w":640,"h":480}]}`
)

// openFixture opens a copy of the release before's journal.
func openFixture(t *testing.T) (*Journal, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", fileName))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, fileName), b, 0o600))
	j, err := Open(dir)
	require.NoError(t, err)
	return j, dir
}

// TestJournalOfPreviousRelease: a journal written before the batches were
// opaque recovers the same records, each batch as the exact bytes written,
// and goes on with the same journal id, ords and seqs.
func TestJournalOfPreviousRelease(t *testing.T) {
	j, dir := openFixture(t)
	rec := j.Recovery()
	require.Equal(t, []Batch{{Seq: 2, Data: json.RawMessage(fixtureBatch2)}, {Seq: 3, Data: json.RawMessage(fixtureBatch3)}}, rec.Batches)
	require.Equal(t, []Intent{{Ord: 5, Stream: "c1-main", Key: "c1-main/1772366404000", Size: 900, PutID: "j" + fixtureID + "-5"}}, rec.Intents)
	require.Equal(t, []Free{{Ord: 6, Stream: "c1-main", Bytes: 1000, Objects: 1}}, rec.Frees)
	require.Empty(t, j.Recovery().Batches, "recovered twice")

	seq, id := j.NextBatch()
	require.Equal(t, uint64(4), seq)
	require.Equal(t, "j"+fixtureID+"-4", id)
	in, err := j.Intent("c1-main", "k", 1)
	require.NoError(t, err)
	require.Equal(t, Intent{Ord: 7, Stream: "c1-main", Key: "k", Size: 1, PutID: "j" + fixtureID + "-7"}, in)

	// The batches survive the rewrite Open did, byte for byte.
	j.Committed(2)
	require.NoError(t, j.Close())
	j2, err := Open(dir)
	require.NoError(t, err)
	defer j2.Close()
	rec = j2.Recovery()
	require.Equal(t, []Batch{{Seq: 3, Data: json.RawMessage(fixtureBatch3)}}, rec.Batches)
	require.Len(t, rec.Intents, 2)
}

// TestJournalWritesPreviousReleaseLines: a batch record is the line the
// release before wrote for the same batch, so that release can read it too.
func TestJournalWritesPreviousReleaseLines(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", fileName))
	require.NoError(t, err)
	want := []string{
		`abe75ff1 {"t":"b","q":2,"batch":` + fixtureBatch2 + `,"ords":[[2,2]]}` + "\n",
		`fcdf98c4 {"t":"b","q":3,"batch":` + fixtureBatch3 + "}\n",
	}
	require.Equal(t, want, strings.SplitAfter(string(b), "\n")[8:10], "the release before's lines")
	dir := t.TempDir()
	j, err := Open(dir)
	require.NoError(t, err)
	j.id, j.nextOrd, j.nextSeq = fixtureID, 2, 2
	require.NoError(t, j.Batch(2, json.RawMessage(fixtureBatch2), []uint64{2}))
	require.NoError(t, j.Batch(3, json.RawMessage(fixtureBatch3), nil))
	require.NoError(t, j.Close())
	got, err := os.ReadFile(filepath.Join(dir, fileName))
	require.NoError(t, err)
	require.Equal(t, want, strings.SplitAfter(string(got), "\n")[1:3]) // after the header
}
