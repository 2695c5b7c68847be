package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/vigilcloud/vigil/internal/servers"
)

// Metric is one figure of a benchmark, against its same-run baseline.
type Metric struct {
	Metric   string  `json:"metric"`
	Unit     string  `json:"unit"`
	Value    float64 `json:"value"`
	Baseline float64 `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
	Goal     string  `json:"goal,omitempty"`
	Met      *bool   `json:"met,omitempty"`
}

// IngestConfig sets up `vigil bench ingest`.
type IngestConfig struct {
	VigilBin    string // the vigil binary that runs the node under test
	MinIOBin    string // the minio binary; empty: servers.FindMinIO
	MinIODrives int    // 1: one drive; 4 or more: erasure-coded over that many drives
	WorkDir     string
	Sizes       []int // segment sizes in bytes
	Concurrency []int
	BytesPerRun int64 // bytes uploaded per case and side
	Runs        int   // repetitions; medians are reported
	Log         *slog.Logger
}

// caseStats is one measured side of one case.
type caseStats struct {
	mbps, segps  float64
	p50, p99     time.Duration
	errors       int64
	peakRSSBytes int64
}

// RunIngest measures vigil over HTTP into MinIO against minio-go PutObject
// straight into the same MinIO, and vigil on the fs backend against raw
// temp-file, fsync and rename writes, at every size and concurrency.
func RunIngest(ctx context.Context, cfg IngestConfig) ([]Metric, error) {
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
	viaVigil, err := mio.MakeBucket(ctx)
	if err != nil {
		return nil, err
	}
	s3Node, err := startBenchNode(ctx, cfg, "vigil-s3", mio.Env(viaVigil))
	if err != nil {
		return nil, err
	}
	defer s3Node.Close()
	fsNode, err := startBenchNode(ctx, cfg, "vigil-fs", nil)
	if err != nil {
		return nil, err
	}
	defer fsNode.Close()
	rawDir := mkdir(cfg.WorkDir, "raw")
	// The same options vigil's s3 backend uses, so the ratio measures what
	// vigil adds and nothing else.
	directOpts := minio.PutObjectOptions{ContentType: "video/mp4", DisableContentSha256: true}

	var out []Metric
	caseNo := 0
	for _, size := range cfg.Sizes {
		body := SyntheticFMP4(size)
		for _, conc := range cfg.Concurrency {
			n := int(max(cfg.BytesPerRun/int64(size), int64(conc*4)))
			var s3v, s3d, fsv, fsd []caseStats
			for run := 0; run < max(cfg.Runs, 1); run++ {
				caseNo++
				tag := fmt.Sprintf("c%d", caseNo)
				// Alternate which side goes first, so drift on a shared
				// machine does not favour one side.
				sides := []func(){
					func() {
						s3d = append(s3d, measure(ctx, conc, n, len(body), func(ctx context.Context, i int) error {
							_, err := mc.PutObject(ctx, direct, fmt.Sprintf("%s/%d", tag, i), bytes.NewReader(body), int64(len(body)), directOpts)
							return err
						}))
					},
					func() { s3v = append(s3v, s3Node.measure(ctx, tag, conc, n, body)) },
					func() {
						fsd = append(fsd, measure(ctx, conc, n, len(body), func(ctx context.Context, i int) error {
							return rawWrite(filepath.Join(rawDir, fmt.Sprintf("%s-%d", tag, i)), body)
						}))
					},
					func() { fsv = append(fsv, fsNode.measure(ctx, tag, conc, n, body)) },
				}
				if run%2 == 1 {
					sides[0], sides[1], sides[2], sides[3] = sides[1], sides[0], sides[3], sides[2]
				}
				for _, side := range sides {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					side()
				}
				_ = os.RemoveAll(rawDir)
				rawDir = mkdir(cfg.WorkDir, "raw")
			}
			name := fmt.Sprintf("%s_c%d", sizeName(size), conc)
			v, d := median(s3v), median(s3d)
			fv, fd := median(fsv), median(fsd)
			log.Info("bench ingest", "case", name, "s3_vigil_MBps", v.mbps, "s3_direct_MBps", d.mbps,
				"fs_vigil_MBps", fv.mbps, "fs_raw_MBps", fd.mbps, "errors", v.errors+fv.errors+d.errors+fd.errors)
			out = append(out,
				ratioMetric("s3_throughput_"+name, "MB/s", v.mbps, d.mbps, 0.9),
				ratioMetric("s3_segments_"+name, "segments/s", v.segps, d.segps, 0),
				Metric{Metric: "s3_p50_" + name, Unit: "ms", Value: ms(v.p50), Baseline: ms(d.p50)},
				Metric{Metric: "s3_p99_" + name, Unit: "ms", Value: ms(v.p99), Baseline: ms(d.p99)},
				ratioMetric("fs_throughput_"+name, "MB/s", fv.mbps, fd.mbps, 0.9),
				Metric{Metric: "fs_p99_" + name, Unit: "ms", Value: ms(fv.p99), Baseline: ms(fd.p99)},
				Metric{Metric: "upload_errors_" + name, Unit: "count", Value: float64(v.errors + fv.errors)},
			)
			rss := float64(v.peakRSSBytes) / (1 << 20)
			m := Metric{Metric: "s3_peak_rss_" + name, Unit: "MiB", Value: rss}
			if size == 4<<20 && conc == 64 {
				met := rss < 200
				m.Goal, m.Met = "< 200", &met
			}
			out = append(out, m)
		}
	}
	return out, nil
}

// startMinIO starts the benchmarks' MinIO under dir, with a client for it.
func startMinIO(ctx context.Context, dir, bin string) (*servers.MinIO, *minio.Client, error) {
	return startMinIODrives(ctx, dir, bin, 1)
}

// startMinIODrives starts MinIO on one drive or, with 4 or more,
// erasure-coded across that many drive directories in one server.
func startMinIODrives(ctx context.Context, dir, bin string, drives int) (*servers.MinIO, *minio.Client, error) {
	var mio *servers.MinIO
	var err error
	if drives > 1 {
		var e *servers.ErasureMinIO
		if e, err = servers.StartErasureMinIO(ctx, bin, mkdir(dir, "minio"), drives); e != nil {
			mio = e.MinIO
		}
	} else {
		mio, err = servers.StartMinIOBin(ctx, bin, mkdir(dir, "minio"))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("bench: start minio: %w", err)
	}
	mc, err := mio.Client()
	if err != nil {
		mio.Close()
		return nil, nil, err
	}
	return mio, mc, nil
}

func ratioMetric(name, unit string, value, baseline, goal float64) Metric {
	m := Metric{Metric: name, Unit: unit, Value: round(value), Baseline: round(baseline)}
	if baseline > 0 {
		m.Ratio = round(value / baseline)
	}
	if goal > 0 {
		met := m.Ratio >= goal
		m.Goal, m.Met = fmt.Sprintf(">= %.1fx", goal), &met
	}
	return m
}

func round(f float64) float64      { return float64(int64(f*100+0.5)) / 100 }
func ms(d time.Duration) float64   { return round(float64(d) / float64(time.Millisecond)) }
func mkdir(parts ...string) string { p := filepath.Join(parts...); _ = os.MkdirAll(p, 0o755); return p }
func sizeName(size int) string {
	if size >= 1<<20 {
		return fmt.Sprintf("%dMiB", size>>20)
	}
	return fmt.Sprintf("%dKiB", size>>10)
}

// median picks, field by field, the median of the runs.
func median(runs []caseStats) caseStats {
	pick := func(f func(caseStats) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return caseStats{
		mbps:         pick(func(c caseStats) float64 { return c.mbps }),
		segps:        pick(func(c caseStats) float64 { return c.segps }),
		p50:          time.Duration(pick(func(c caseStats) float64 { return float64(c.p50) })),
		p99:          time.Duration(pick(func(c caseStats) float64 { return float64(c.p99) })),
		errors:       int64(pick(func(c caseStats) float64 { return float64(c.errors) })),
		peakRSSBytes: int64(pick(func(c caseStats) float64 { return float64(c.peakRSSBytes) })),
	}
}

// measure runs n operations on conc workers and times them.
func measure(ctx context.Context, conc, n, bytesPerOp int, op func(ctx context.Context, i int) error) caseStats {
	var next, errs atomic.Int64
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	began := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				if err := op(ctx, i); err != nil {
					errs.Add(1)
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	el := time.Since(began)
	slices.Sort(lat)
	return caseStats{
		mbps:  float64(bytesPerOp) * float64(n) / el.Seconds() / 1e6,
		segps: float64(n) / el.Seconds(), p50: lat[n/2], p99: lat[n*99/100], errors: errs.Load(),
	}
}

// rawWrite is the fs baseline: what a durable write must do at the least,
// temp file, fsync, rename, and fsync of the directory so the rename
// survives a crash.
func rawWrite(path string, body []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(body); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// benchNode is a vigil process under test, provisioned with one stream per
// worker.
type benchNode struct {
	*servers.Process
	base  string
	token string
	// restart starts the node again over the same data and ports (after
	// Close), without provisioning anything.
	restart func(ctx context.Context) (*benchNode, error)
}

const benchToken = "bench-operator-token"

func startBenchNode(ctx context.Context, cfg IngestConfig, name string, env []string) (*benchNode, error) {
	return startNode(ctx, cfg.VigilBin, cfg.WorkDir, name, env)
}

// startNode starts `vigil serve` (HTTP only) under workDir/name with extra
// serve flags, and provisions the account bench with bridge bench-bridge.
func startNode(ctx context.Context, bin, workDir, name string, env []string, extra ...string) (*benchNode, error) {
	dir := mkdir(workDir, name)
	httpAddr, err := servers.FreePort()
	if err != nil {
		return nil, err
	}
	raftAddr, err := servers.FreePort()
	if err != nil {
		return nil, err
	}
	env = append(env, "VIGIL_ADMIN_TOKEN="+benchToken)
	args := append([]string{"serve",
		"--data", filepath.Join(dir, "data"), "--http-addr", httpAddr, "--raft-addr", raftAddr,
		"--live-threshold", "100000h", "--log-level", "warn", "--rtsp-addr", ""}, // HTTP only: nodes share the host
		extra...)
	var launch func(ctx context.Context) (*benchNode, error)
	launch = func(ctx context.Context) (*benchNode, error) {
		p, err := servers.Start(bin, dir, httpAddr, env, args...)
		if err != nil {
			return nil, err
		}
		n := &benchNode{Process: p, base: "http://" + httpAddr, token: benchToken, restart: launch}
		if err := n.waitReady(ctx); err != nil {
			n.Close()
			return nil, err
		}
		return n, nil
	}
	n, err := launch(ctx)
	if err != nil {
		return nil, err
	}
	if err := n.call(ctx, "POST", "/v1/accounts", map[string]any{"id": "bench", "name": "bench"}); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.call(ctx, "POST", "/v1/accounts/bench/bridges", map[string]any{"id": "bench-bridge", "name": "bench"}); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *benchNode) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(n.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: vigil not ready: %v\n%s", err, n.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *benchNode) call(ctx context.Context, method, path string, body any) error {
	return n.callJSON(ctx, method, path, body, nil)
}

// callJSON calls the node with the operator token; out, when not nil,
// receives the JSON answer.
func (n *benchNode) callJSON(ctx context.Context, method, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, method, n.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+n.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("bench: %s %s: %d %s", method, path, resp.StatusCode, msg)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(msg, out)
}

// measure uploads n segments of body on conc workers, one stream each, and
// reports the node's peak RSS during the case.
func (n *benchNode) measure(ctx context.Context, tag string, conc, count int, body []byte) caseStats {
	streams := make([]map[string]any, conc)
	for w := range conc {
		streams[w] = map[string]any{"id": fmt.Sprintf("%s-s%d", tag, w), "width": 1920, "height": 1080, "retention_days": 3650}
	}
	if err := n.call(ctx, "POST", "/v1/bridges/bench-bridge/cameras", map[string]any{"id": tag, "name": tag, "streams": streams}); err != nil {
		return caseStats{errors: int64(count)}
	}
	// Reset the peak RSS so it reflects this case alone.
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", n.Pid()), []byte("5"), 0)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	base := time.Now().Add(-90 * 24 * time.Hour).Truncate(time.Hour).UnixMilli()
	st := measure(ctx, conc, count, len(body), func(ctx context.Context, i int) error {
		stream, seq := i%conc, i/conc
		url := n.base + "/v1/streams/" + fmt.Sprintf("%s-s%d", tag, stream) + "/segments/" + strconv.FormatInt(base+int64(seq)*1000, 10) + "?duration_ms=1000"
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+n.token)
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
	})
	st.peakRSSBytes, _ = n.PeakRSS()
	client.CloseIdleConnections()
	return st
}
