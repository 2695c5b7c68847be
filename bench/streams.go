package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/internal/servers"
)

// StreamsConfig sets up `vigil bench streams`: many low-bitrate streams
// through one ingest node.
type StreamsConfig struct {
	VigilBin, MinIOBin, WorkDir string
	MinIODrives                 int           // 1: one drive; 4 or more: erasure-coded
	Streams                     int           // 10,000
	StreamsPerBridge            int           // 100 (two cameras of 50 streams)
	BitrateBps                  int           // per stream (32 kbit/s)
	SegmentDuration             time.Duration // 5 s
	Rounds                      int           // segments per stream per run
	Concurrency                 int           // uploads in flight
	Runs                        int
	NodeArgs                    []string
	Log                         *slog.Logger
}

// RunStreams uploads Rounds segments of every stream through one vigil
// node (MinIO storage, Redis index), round robin over the streams with
// Concurrency uploads in flight, against the same bodies PUT straight to
// the same MinIO with the same concurrency.
func RunStreams(ctx context.Context, cfg StreamsConfig) ([]Metric, error) {
	log := cfg.Log
	mio, mc, err := startMinIODrives(ctx, cfg.WorkDir, cfg.MinIOBin, cfg.MinIODrives)
	if err != nil {
		return nil, err
	}
	defer mio.Close()
	direct, err := mio.MakeBucket(ctx)
	if err != nil {
		return nil, err
	}
	bucket, err := mio.MakeBucket(ctx)
	if err != nil {
		return nil, err
	}
	redis, err := servers.StartRedis(ctx, mkdir(cfg.WorkDir, "redis"))
	if err != nil {
		return nil, fmt.Errorf("bench: start redis: %w", err)
	}
	defer redis.Close()
	env := append(mio.Env(bucket), "VIGIL_REDIS_ADDR="+redis.Addr)
	// Hours stay open (in Redis) for the whole run, so that its memory per
	// open segment can be read off.
	node, err := startNode(ctx, cfg.VigilBin, cfg.WorkDir, "vigil", env, append([]string{"--compact-grace", "48h"}, cfg.NodeArgs...)...)
	if err != nil {
		return nil, err
	}
	defer node.Close()
	began := time.Now()
	streams, tokens, err := provisionStreams(ctx, node, cfg.Streams, cfg.StreamsPerBridge)
	if err != nil {
		return nil, err
	}
	size := max(cfg.BitrateBps/8*int(cfg.SegmentDuration/time.Millisecond)/1000, 64)
	body := SyntheticFMP4(size)
	log.Info("bench streams: provisioned", "streams", len(streams), "took", time.Since(began).Round(time.Millisecond), "segment_bytes", size)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	opts := minio.PutObjectOptions{ContentType: "video/mp4", DisableContentSha256: true}
	base := time.Now().Add(-24 * time.Hour).Truncate(time.Hour)
	n := len(streams) * max(cfg.Rounds, 1)
	var viaVigil, straight []caseStats
	var cpuUS [3][]float64 // CPU µs per segment of vigil, MinIO and Redis, per run
	var redisMem []int64   // Redis used_memory after each run
	done := 0
	for run := range max(cfg.Runs, 1) {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", node.Pid()), []byte("5"), 0)
		from := done
		cpu0 := cpuOf(node.Pid(), mio.Pid(), redis.Pid())
		v := measure(ctx, cfg.Concurrency, n, size, func(ctx context.Context, i int) error {
			s, seq := i%len(streams), from+i/len(streams)
			start := base.Add(time.Duration(seq) * cfg.SegmentDuration).UnixMilli()
			return putSegment(ctx, client, node.base, tokens[s], streams[s], start, cfg.SegmentDuration, body)
		})
		v.peakRSSBytes, _ = node.PeakRSS()
		cpu1 := cpuOf(node.Pid(), mio.Pid(), redis.Pid())
		for i := range cpu1 {
			cpuUS[i] = append(cpuUS[i], (cpu1[i]-cpu0[i])*1e6/float64(n))
		}
		done += max(cfg.Rounds, 1)
		d := measure(ctx, cfg.Concurrency, n, size, func(ctx context.Context, i int) error {
			_, err := mc.PutObject(ctx, direct, fmt.Sprintf("r%d/%s/%d", run, streams[i%len(streams)], i), bytes.NewReader(body), int64(size), opts)
			return err
		})
		mem, err := redisUsedMemory(ctx, redis.Addr)
		if err != nil {
			return nil, err
		}
		redisMem = append(redisMem, mem)
		log.Info("bench streams: run", "run", run+1, "redis_used_memory", mem, "vigil_segps", round(v.segps), "direct_segps", round(d.segps),
			"p99", v.p99, "rss_MiB", v.peakRSSBytes>>20, "errors", v.errors)
		viaVigil, straight = append(viaVigil, v), append(straight, d)
	}
	redisBytes := redisMem[len(redisMem)-1]
	// The open hours' growth per segment: the slope from the first run on
	// (every run adds Rounds segments to every stream's open hour).
	perOpenSeg := 0.0
	if len(redisMem) > 1 {
		perOpenSeg = float64(redisMem[len(redisMem)-1]-redisMem[0]) / float64((len(redisMem)-1)*n)
	}
	// One drive keeps the bucket under data/, an erasure set under drive*/.
	drives, _ := filepath.Glob(filepath.Join(cfg.WorkDir, "minio", "*", bucket))
	var diskBytes int64
	for _, d := range drives {
		n, err := diskUsage(d)
		if err != nil {
			return nil, err
		}
		diskBytes += n
	}
	segs := float64(done * len(streams))
	v, d := median(viaVigil), median(straight)
	segps := ratioMetric("segments_per_s", "segments/s", v.segps, d.segps, 0)
	met := v.segps >= 2000
	segps.Goal, segps.Met = ">= 2000", &met
	rss := float64(v.peakRSSBytes) / (1 << 20)
	rssMet := rss < 1024
	errs := float64(v.errors)
	errMet := errs == 0
	return []Metric{
		segps,
		{Metric: "p50", Unit: "ms", Value: ms(v.p50), Baseline: ms(d.p50)},
		{Metric: "p99", Unit: "ms", Value: ms(v.p99), Baseline: ms(d.p99)},
		{Metric: "peak_rss", Unit: "MiB", Value: round(rss), Goal: "< 1024", Met: &rssMet},
		{Metric: "upload_errors", Unit: "count", Value: errs, Goal: "0", Met: &errMet},
		{Metric: "vigil_cpu_per_segment", Unit: "µs", Value: round(medianOf(cpuUS[0]))},
		{Metric: "minio_cpu_per_segment", Unit: "µs", Value: round(medianOf(cpuUS[1]))},
		{Metric: "redis_cpu_per_segment", Unit: "µs", Value: round(medianOf(cpuUS[2]))},
		{Metric: "streams", Unit: "count", Value: float64(len(streams))},
		// What the capacity model (docs/capacity.md) needs: the index's
		// memory per stream with its open hour, and storage per segment.
		{Metric: "redis_bytes_per_stream", Unit: "B", Value: round(float64(redisBytes) / float64(len(streams)))},
		{Metric: "redis_bytes_per_open_segment", Unit: "B", Value: round(perOpenSeg)},
		{Metric: "minio_disk_bytes_per_segment", Unit: "B", Value: round(float64(diskBytes) / segs)},
		{Metric: "segment_bytes", Unit: "B", Value: float64(size)},
	}, nil
}

// provisionStreams creates n streams, perBridge to a Bridge in cameras of
// up to 50 streams, and returns each stream's Bridge token.
func provisionStreams(ctx context.Context, node *benchNode, n, perBridge int) (streams, tokens []string, err error) {
	perBridge = max(perBridge, 1)
	bridges := (n + perBridge - 1) / perBridge
	streams, tokens = make([]string, n), make([]string, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for b := range bridges {
		g.Go(func() error {
			id := fmt.Sprintf("sb%d", b)
			var tok struct {
				Token string `json:"token"`
			}
			if err := node.callJSON(gctx, "POST", "/v1/accounts/bench/bridges", map[string]any{"id": id, "name": id}, &tok); err != nil {
				return err
			}
			first, last := b*perBridge, min(n, (b+1)*perBridge)
			for c := first; c < last; c += 50 {
				var list []map[string]any
				for s := c; s < min(last, c+50); s++ {
					streams[s], tokens[s] = fmt.Sprintf("%s-s%d", id, s), tok.Token
					list = append(list, map[string]any{"id": streams[s], "width": 320, "height": 240, "retention_days": 7})
				}
				cam := fmt.Sprintf("%s-c%d", id, c)
				if err := node.call(gctx, "POST", "/v1/bridges/"+id+"/cameras", map[string]any{"id": cam, "name": cam, "streams": list}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return streams, tokens, g.Wait()
}

// putSegment uploads one segment as a Bridge does; anything but 201 is an
// error.
func putSegment(ctx context.Context, client *http.Client, base, token, stream string, start int64, dur time.Duration, body []byte) error {
	url := base + "/v1/streams/" + stream + "/segments/" + strconv.FormatInt(start, 10) + "?duration_ms=" + strconv.FormatInt(dur.Milliseconds(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "video/mp4")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// redisUsedMemory is Redis's used_memory (INFO memory).
func redisUsedMemory(ctx context.Context, addr string) (int64, error) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("bench: redis info: %w", err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("bench: redis info has no used_memory")
}

// diskUsage is the disk space (allocated blocks) of the files under dir.
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	return n, err
}

// cpuOf is the user+system CPU seconds of each process (0 when unreadable).
func cpuOf(pids ...int) []float64 {
	out := make([]float64, len(pids))
	for i, p := range pids {
		out[i], _ = procCPUSeconds(p)
	}
	return out
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
