package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/storagetest"
)

// MinIO in erasure-coded mode (one server, four drives: 2 data and 2
// parity shards): the shared suite passes, and a drive pulled mid-ingest
// loses no acknowledged object. With one drive gone writes still reach
// their quorum (3 of 4), so ingest goes on.
func TestErasureCoded(t *testing.T) {
	m := testutil.StartErasureMinIO(t)
	t.Run("Suite", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Backend { return newS3(t, m.MinIO) })
	})
	t.Run("DriveRemovedMidIngest", func(t *testing.T) { testDriveRemoved(t, m) })
}

func testDriveRemoved(t *testing.T, m *testutil.ErasureMinIO) {
	ctx := context.Background()
	b := newS3(t, m.MinIO)
	const writers, perWriter = 4, 60
	var mu sync.Mutex
	acked := map[string][32]byte{}
	var afterRemoval int
	removed := false
	progress := make(chan struct{}, writers*perWriter)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range perWriter {
				// 16 KiB to 1 MiB, the size of real segments at low bitrates.
				body := make([]byte, 16<<10+rng.IntN(1<<20-16<<10))
				for k := range body {
					body[k] = byte(rng.Uint32())
				}
				key := fmt.Sprintf("seg/w%d/%04d", w, i)
				deadline := time.Now().Add(60 * time.Second)
				for {
					_, err := b.Put(ctx, key, bytes.NewReader(body), int64(len(body)), storage.PutOptions{ContentType: "video/mp4"})
					if err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("put %s still failing: %v", key, err)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				mu.Lock()
				acked[key] = sha256.Sum256(body)
				if removed {
					afterRemoval++
				}
				mu.Unlock()
				progress <- struct{}{}
			}
		})
	}
	for range writers * perWriter / 3 {
		<-progress
	}
	mu.Lock()
	removed = true
	mu.Unlock()
	m.RemoveDrive(3)
	wg.Wait()
	if t.Failed() {
		return
	}
	require.Len(t, acked, writers*perWriter)
	require.NotZero(t, afterRemoval, "ingest goes on with a drive gone")
	require.FileExists(t, m.Drives[3], "the drive stayed away")
	t.Logf("objects acknowledged after the drive was removed: %d", afterRemoval)

	var listed int
	require.NoError(t, storage.Walk(ctx, b, "seg/", func(o storage.ObjectInfo) error {
		if _, ok := acked[o.Key]; ok {
			listed++
		}
		return nil
	}))
	require.Equal(t, len(acked), listed, "every acknowledged object is listed")
	for key, sum := range acked {
		rc, _, err := b.Get(ctx, key, 0, -1)
		require.NoError(t, err, key)
		data, err := io.ReadAll(rc)
		rc.Close()
		require.NoError(t, err, key)
		require.Equal(t, sum, sha256.Sum256(data), key)
	}
}
