package meter

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Throwaway: writes meter/journal/testdata/usage.journal with the release's code.
func TestWriteJournalFixture(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	require.NoError(t, err)
	o1, _, err := j.intent("c1-main", "c1-main/1772366400000", 1000)
	require.NoError(t, err)
	o2, _, err := j.intent("c1-main", "c1-main/1772366402000", 500)
	require.NoError(t, err)
	o3, _, err := j.intent("c1-sub", "c1-sub/1772366402000", 70)
	require.NoError(t, err)
	j.notCreated(o3)
	f1, err := j.free("c1-sub", 300, 2)
	require.NoError(t, err)
	from := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	s1, id1 := j.nextBatch()
	require.NoError(t, j.batch(s1, &UsageBatch{ID: id1, From: from, To: from.Add(time.Second), Entries: []UsageEntry{
		{Stream: "c1-main", StoredBytes: 1000, StoredObjects: 1, IngestedBytes: 1000, Segments: 1, Width: 1920, Height: 1080},
		{Stream: "c1-sub", StoredBytes: -300, StoredObjects: -2},
	}}, []uint64{o1, f1}))
	j.committed(s1)
	s2, id2 := j.nextBatch()
	require.NoError(t, j.batch(s2, &UsageBatch{ID: id2, From: from.Add(time.Second), To: from.Add(2 * time.Second), Entries: []UsageEntry{
		{Stream: "c1-main", StoredBytes: 500, StoredObjects: 1, IngestedBytes: 500, Segments: 1},
	}}, []uint64{o2}))
	s3, id3 := j.nextBatch()
	require.NoError(t, j.batch(s3, &UsageBatch{ID: id3, From: from.Add(2 * time.Second), To: from.Add(3 * time.Second), Entries: []UsageEntry{
		{Stream: "c1-<sub>&", Width: 640, Height: 480},
	}}, nil))
	_, _, err = j.intent("c1-main", "c1-main/1772366404000", 900)
	require.NoError(t, err)
	_, err = j.free("c1-main", 1000, 1)
	require.NoError(t, err)
	_, _, err = j.intent("c1-main", "c1-main/1772366406000", 800) // torn below
	require.NoError(t, err)
	require.NoError(t, j.Close())
	b, err := os.ReadFile(filepath.Join(dir, journalFile))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile("journal/testdata/usage.journal", b[:len(b)-7], 0o644))
}
