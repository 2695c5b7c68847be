package hostile

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// TestUsageSurvivesSIGKILL: a bridge uploads while the node is SIGKILLed
// four times; the bridge retries every segment until it gets a 2xx, as a
// real one does. Afterwards the meter and the month's billing preview must
// count exactly what is stored: nothing lost with the killed process's
// unflushed usage, nothing counted twice by the retries' 200s.
func TestUsageSurvivesSIGKILL(t *testing.T) {
	usageKillLoop(t, vigiltest.Options{})
}

// TestUsageSurvivesSIGKILLS3Redis is the same on MinIO and redis-server.
func TestUsageSurvivesSIGKILLS3Redis(t *testing.T) {
	mio := testutil.StartMinIO(t)
	rds := testutil.StartRedis(t)
	env := append(mio.Env(mio.Bucket(t)), "VIGIL_REDIS_ADDR="+rds.Addr)
	usageKillLoop(t, vigiltest.Options{Env: env})
}

func usageKillLoop(t *testing.T, o vigiltest.Options) {
	n := vigiltest.Start(t, vigilBin, o)
	streams := []string{"u1", "u2"}
	tok := n.Provision(streams...)
	month := time.Now().UTC().Format("2006-01")
	base := time.Now().Add(-30 * time.Minute).UnixMilli()

	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for si, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(si), 7))
			for i := int64(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// A segment once begun is retried until acknowledged, so
				// everything stored was acknowledged in the end.
				body := segmentBody(rng, 4<<10+rng.IntN(60<<10))
				for try := 0; ; try++ {
					code, err := putSegment(n.Base, tok, s, base+i*2000, body)
					if err == nil && code/100 == 2 {
						acked.Add(1)
						break
					}
					if err == nil && code/100 == 4 {
						t.Errorf("stream %s segment %d: status %d", s, i, code)
						return
					}
					if try > 2000 {
						t.Errorf("stream %s segment %d: never acknowledged: %v %d", s, i, err, code)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	waitAcked := func(more int64) {
		t.Helper()
		want := acked.Load() + more
		deadline := time.Now().Add(30 * time.Second)
		for acked.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("uploads stalled at %d acknowledged", acked.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for range 4 {
		waitAcked(30)
		n.Restart() // SIGKILL mid-upload, start on the same data
	}
	waitAcked(10)
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}

	replays := strings.Count(n.Logs(), "usage: replaying the journal")
	t.Logf("%d segments acknowledged; journal replays at start: %d", acked.Load(), replays)
	if replays == 0 {
		// Four kills mid-upload leave Puts under way: otherwise the test
		// did not exercise the journal at all.
		t.Error("no journal replay in 4 restarts")
	}
	ctx := context.Background()
	for _, s := range streams {
		var rec struct {
			Segments []struct {
				Start int64 `json:"start"`
				Size  int64 `json:"size"`
			} `json:"segments"`
		}
		path := fmt.Sprintf("/v1/streams/%s/recordings?start=%d&end=%d", s, base-3600_000, time.Now().Add(time.Hour).UnixMilli())
		n.Must(n.API.Do(ctx, "GET", path, nil, &rec))
		var bytes int64
		for _, sg := range rec.Segments {
			bytes += sg.Size
		}
		objects := int64(len(rec.Segments))
		if objects < 40 {
			t.Fatalf("stream %s: only %d segments stored", s, objects)
		}

		// The aggregator flushes about once a second: wait, bounded, for
		// the meter to agree, then compare.
		type meterView struct {
			StorageBytes  int64 `json:"storage_bytes"`
			StoredObjects int64 `json:"stored_objects"`
			SegmentCount  int64 `json:"segment_count"`
			IngestedBytes int64 `json:"ingested_bytes"`
		}
		want := meterView{bytes, objects, objects, bytes}
		var got meterView
		deadline := time.Now().Add(15 * time.Second)
		for {
			n.Must(n.API.Do(ctx, "GET", "/v1/meter/streams/"+s, nil, &got))
			if got == want || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got != want {
			t.Errorf("stream %s: meter %+v, stored %+v (lost %d segments / %d bytes)", s, got, want,
				want.SegmentCount-got.SegmentCount, want.IngestedBytes-got.IngestedBytes)
		}

		if time.Now().UTC().Format("2006-01") != month {
			continue // the month turned during the test: the preview is another month's
		}
		var run struct {
			Items []struct {
				Stream        string `json:"stream"`
				StorageBytes  int64  `json:"storage_bytes"`
				IngestedBytes int64  `json:"ingested_bytes"`
			} `json:"items"`
		}
		n.Must(n.API.Do(ctx, "GET", "/v1/billing/runs/"+month+"?part=items", nil, &run))
		found := false
		for _, it := range run.Items {
			if it.Stream != s {
				continue
			}
			found = true
			if it.IngestedBytes != bytes || it.StorageBytes != bytes {
				t.Errorf("stream %s: billing item ingested %d / storage %d bytes, stored %d", s, it.IngestedBytes, it.StorageBytes, bytes)
			}
		}
		if !found {
			t.Errorf("stream %s: no line item in the %s billing preview", s, month)
		}
	}
}

// segmentBody is a well-formed fMP4 top-level box sequence (ftyp, mdat) of
// size bytes with random content.
func segmentBody(rng *rand.Rand, size int) []byte {
	b := make([]byte, size)
	copy(b, []byte{0, 0, 0, 16, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0})
	binary.BigEndian.PutUint32(b[16:], uint32(size-16))
	copy(b[20:], "mdat")
	for i := 24; i < size; i++ {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// putSegment uploads one 2-s segment as a bridge does; err is a transport
// error (the node is down or was killed mid-request).
func putSegment(base, token, stream string, start int64, body []byte) (int, error) {
	req, err := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/streams/%s/segments/%d?duration_ms=2000", base, stream, start), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "video/mp4")
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
