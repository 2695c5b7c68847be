package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/bench"
	"github.com/vigilcloud/vigil/internal/testutil"
)

// TestBacklogStormLiveFirst: three Bridges drain a backlog into a node
// (MinIO, Redis) whose backlog pool is two slots, with more uploads in
// flight than it admits, while a fourth Bridge uploads live. Every live
// segment is admitted on its first attempt; the drains are pushed back with
// 503 and Retry-After, and the simulator, honouring it, lands every backlog
// segment in the end.
func TestBacklogStormLiveFirst(t *testing.T) {
	mio := testutil.StartMinIO(t)
	bucket := mio.Bucket(t)
	rds := testutil.StartRedis(t)
	n := startVigil(t, append(mio.Env(bucket), "VIGIL_REDIS_ADDR="+rds.Addr),
		"--backlog-concurrency", "2", "--backlog-queue", "2")
	liveTok := n.node.ProvisionBridge("acct", "live", "cam-live", "l0", "l1")
	const drains, perDrain, workers, liveSegs = 3, 8, 4, 8
	stormTok := make([]string, drains)
	for i := range drains {
		stormTok[i] = n.node.ProvisionBridge("acct", fmt.Sprintf("st%d", i), fmt.Sprintf("cam-st%d", i), fmt.Sprintf("b%d", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	body := bench.SyntheticFMP4(64 << 10)
	outage := time.Now().Add(-47 * time.Hour).Truncate(time.Hour)

	var wg sync.WaitGroup
	var mu sync.Mutex
	attempts, stored := 0, 0
	for i := range drains {
		up := &bench.Uploader{BaseURL: n.base, Token: stormTok[i], MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
		next := make(chan int, perDrain)
		for k := range perDrain {
			next <- k
		}
		close(next)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range next {
					r, err := up.Upload(ctx, bench.Segment{Stream: fmt.Sprintf("b%d", i), Start: outage.Add(time.Duration(k) * 2 * time.Second),
						Duration: 2 * time.Second, Body: body, ContentType: "video/mp4", Backlog: true})
					if err != nil {
						t.Errorf("backlog b%d/%d: %v", i, k, err)
						return
					}
					mu.Lock()
					attempts += r.Attempts
					if r.Status == http.StatusCreated {
						stored++
					}
					mu.Unlock()
				}
			}()
		}
	}
	// Live while the drains run: one try each, no retry.
	live := &bench.Uploader{BaseURL: n.base, Token: liveTok, MaxAttempts: 1}
	liveFrom := time.Now().Add(-30 * time.Second).Truncate(time.Second)
	for k := range liveSegs {
		for _, s := range []string{"l0", "l1"} {
			r, err := live.Upload(ctx, bench.Segment{Stream: s, Start: liveFrom.Add(time.Duration(k) * 2 * time.Second),
				Duration: 2 * time.Second, Body: body, ContentType: "video/mp4"})
			if err != nil || r.Status != http.StatusCreated {
				t.Fatalf("live %s #%d during the storm: %+v %v; want 201 at once", s, k, r, err)
			}
		}
		time.Sleep(100 * time.Millisecond) // paced like cameras, not a flood
	}
	wg.Wait()
	if stored != drains*perDrain {
		t.Fatalf("%d backlog segments stored, want %d", stored, drains*perDrain)
	}
	if attempts <= stored {
		t.Fatalf("%d attempts for %d segments: the node never pushed back; the test does not test backpressure", attempts, stored)
	}
	if shed := scrapeCounter(t, n.base, `vigil_ingest_shed_total{class="backlog"}`); shed == 0 {
		t.Fatal("no backlog upload was shed")
	}
	if shed := scrapeCounter(t, n.base, `vigil_ingest_shed_total{class="live"}`); shed != 0 {
		t.Fatalf("%v live uploads shed", shed)
	}
	for i := range drains {
		rec := n.recordings(fmt.Sprintf("b%d", i), outage.UnixMilli(), outage.Add(time.Hour).UnixMilli())
		if len(rec.Segments) != perDrain {
			t.Fatalf("b%d: %d segments listed, want %d", i, len(rec.Segments), perDrain)
		}
	}
}

// scrapeCounter reads one sample of the node's /metrics.
func scrapeCounter(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			must(t, err)
			return f
		}
	}
	t.Fatalf("/metrics has no %s", sample)
	return 0
}
