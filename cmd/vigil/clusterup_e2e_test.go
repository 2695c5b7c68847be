package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/redis/go-redis/v9"

	"github.com/vigilcloud/vigil/bench"
	"github.com/vigilcloud/vigil/internal/localcluster"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// startClusterUp runs `vigil cluster up` on free ports and returns what
// it wrote to cluster.json, the command and a channel of its stdout lines.
// Cleanup leaves no process behind whatever happened.
func startClusterUp(t *testing.T, data string) (localcluster.Info, *exec.Cmd, <-chan string, func() error) {
	t.Helper()
	for _, b := range []string{"redis-server", "redis-cli", "minio", "ffmpeg", "ffprobe"} {
		testutil.RequireBinary(t, b)
	}
	cmd := exec.Command(vigilBin, "cluster", "up", "--data", data, "--http-addr", "127.0.0.1:0", "--rtsp-addr", "127.0.0.1:0")
	cmd.Env = append(cleanEnv(), "VIGIL_ADMIN_TOKEN="+e2eToken)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	lines := make(chan string, 100)
	done := make(chan struct{})
	var exitErr error
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exitErr = cmd.Wait()
		close(done)
	}()
	// wait waits up to a minute for the command to end.
	wait := func() error {
		select {
		case <-done:
			return exitErr
		case <-time.After(60 * time.Second):
			return fmt.Errorf("cluster up still running after 60 s")
		}
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = wait()
		for _, pid := range clusterProcesses(data) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("cluster up stderr:\n%s", tail(stderr.String(), 40))
			for _, n := range []string{"m1", "m2", "m3", "i1", "i2"} {
				b, _ := os.ReadFile(filepath.Join(data, n, "vigil.log"))
				t.Logf("%s/vigil.log:\n%s", n, tail(string(b), 15))
			}
		}
	})
	deadline := time.After(3 * time.Minute)
	for up := false; !up; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("cluster up ended before the cluster was up: %v\nstderr:\n%s", wait(), stderr.String())
			}
			up = strings.HasPrefix(l, "cluster up")
		case <-deadline:
			t.Fatalf("no \"cluster up\" within 3 minutes\nstderr:\n%s", stderr.String())
		}
	}
	var info localcluster.Info
	b, err := os.ReadFile(filepath.Join(data, "cluster.json"))
	must(t, err)
	must(t, json.Unmarshal(b, &info))
	return info, cmd, lines, wait
}

// clusterProcesses are the running processes started by a cluster under
// data: every one names data on its command line but Redis, whose
// working directory is under data.
func clusterProcesses(data string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if strings.Contains(string(cmdline), data) || strings.HasPrefix(cwd, data) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// redisFailover makes the first replica among nodes its master's master
// (CLUSTER FAILOVER: the replica catches up first) and waits until it is.
func redisFailover(t *testing.T, nodes []localcluster.NodeInfo) {
	t.Helper()
	ctx := context.Background()
	for _, n := range nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		defer c.Close()
		repl, err := c.Info(ctx, "replication").Result()
		must(t, err)
		if !strings.Contains(repl, "role:slave") {
			continue
		}
		must(t, c.ClusterFailover(ctx).Err())
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(repl, "role:master") {
			if time.Now().After(deadline) {
				t.Fatalf("redis %s still a replica 30 s after CLUSTER FAILOVER", n.Addr)
			}
			time.Sleep(50 * time.Millisecond)
			repl, err = c.Info(ctx, "replication").Result()
			must(t, err)
		}
		t.Logf("redis %s took over from its master", n.Addr)
		return
	}
	t.Fatal("no redis replica to fail over to")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// upload PUTs one 2-s segment to base; a transport error is a status 0.
func upload(base, token, stream string, start int64, body []byte) (int, error) {
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/streams/%s/segments/%d?duration_ms=2000", base, stream, start), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "video/mp4")
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// TestClusterUpFaults: `vigil cluster up` as a newcomer runs it. Bridges
// upload through both ingest nodes and the balancer while a camera
// publishes over RTSP; one ingest node and the meter's leader are
// SIGKILLed mid-run, while a Redis master fails over and a MinIO drive is
// pulled. Every acknowledged segment is listed and fetched
// byte for byte, the RTSP recording decodes (and one published through
// the balancer afterwards), the meter's usage matches what storage holds,
// and SIGTERM stops every process.
func TestClusterUpFaults(t *testing.T) {
	data := t.TempDir()
	info, cmd, lines, wait := startClusterUp(t, data)
	api := &apiClient{base: info.HTTP, token: e2eToken}
	ctx := context.Background()
	streams := []string{"s1", "s2", "s3", "s4"}
	token := (&vigiltest.Node{T: t, API: &vigiltest.Client{Base: info.HTTP, Token: e2eToken}}).Provision(append(streams, "live", "viabalancer")...)
	i1, i2 := "http://"+info.Ingest[0].HTTP, "http://"+info.Ingest[1].HTTP

	// RTSP straight to i2, which stays up.
	rtsp := &rtspNode{vigilNode: &vigilNode{t: t, base: info.HTTP, api: api}, rtsp: info.Ingest[1].RTSP, token: token}
	ffmpeg := rtsp.publish(t, "br", token, "live", append(h264Args("320x240", 20, 25), "-rtsp_transport", "tcp")...)

	const perStream = 30
	start := time.Now().Add(-5 * time.Minute).Truncate(time.Second).UnixMilli()
	body := func(s, j int) []byte { return bench.SyntheticFMP4(8<<10 + 97*j + 13*s) }
	var (
		mu      sync.Mutex
		acked   = map[string]int{}
		retries int
		wg      sync.WaitGroup
	)
	progress := make(chan struct{}, len(streams)*perStream)
	for s, stream := range streams {
		wg.Go(func() {
			targets := []string{i1, i2, info.HTTP}
			for j := range perStream {
				b := body(s, j)
				deadline := time.Now().Add(90 * time.Second)
				// First through one node or the balancer in turn; a Bridge
				// retries through the balancer.
				for try := 0; ; try++ {
					base := info.HTTP
					if try == 0 {
						base = targets[(s+j)%3]
					}
					code, err := upload(base, token, stream, start+int64(j)*2000, b)
					if code == http.StatusCreated || code == http.StatusOK {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("%s segment %d never acknowledged: %d %v", stream, j, code, err)
						return
					}
					mu.Lock()
					retries++
					mu.Unlock()
					time.Sleep(100 * time.Millisecond)
				}
				mu.Lock()
				acked[stream]++
				mu.Unlock()
				progress <- struct{}{}
			}
		})
	}
	for range len(streams) * perStream / 3 {
		<-progress
	}
	var st clusterStatus
	must(t, api.do(ctx, "GET", "/v1/cluster", nil, &st))
	killed := map[string]bool{"i1": true, st.Leader.ID: true}
	for _, n := range append(info.Voters, info.Ingest...) {
		if killed[n.ID] {
			t.Logf("SIGKILL %s (pid %d)", n.ID, n.Pid)
			must(t, syscall.Kill(n.Pid, syscall.SIGKILL))
		}
	}
	// And the engines: a Redis master hands over to its replica, and a
	// MinIO drive is pulled (a file takes its place, so it stays gone).
	redisFailover(t, info.Redis)
	drive := info.MinIO.Drives[2]
	must(t, os.Rename(drive, drive+".pulled"))
	must(t, os.WriteFile(drive, []byte("pulled by the test\n"), 0o444))
	wg.Wait()
	if err := ffmpeg.Wait(); err != nil {
		t.Errorf("ffmpeg publishing to i2: %v", err)
	}
	if t.Failed() {
		return
	}
	t.Logf("uploads retried after a failure: %d", retries)
	// RTSP through the balancer, to whichever ingest node is ready.
	viaBalancer := &rtspNode{vigilNode: rtsp.vigilNode, rtsp: strings.TrimPrefix(info.RTSP, "rtsp://"), token: token}
	ffmpeg = viaBalancer.publish(t, "br", token, "viabalancer", append(h264Args("320x240", 8, 25), "-rtsp_transport", "tcp")...)

	// Every acknowledged segment is listed and fetched as uploaded.
	for s, stream := range streams {
		var rec recordings
		deadline := time.Now().Add(30 * time.Second)
		for {
			must(t, api.do(ctx, "GET", fmt.Sprintf("/v1/streams/%s/recordings?start=%d&end=%d", stream, start, start+perStream*2000), nil, &rec))
			if len(rec.Segments) >= perStream || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if len(rec.Segments) != perStream || acked[stream] != perStream {
			t.Fatalf("%s: %d segments listed, %d acknowledged, want %d", stream, len(rec.Segments), acked[stream], perStream)
		}
		for j, seg := range rec.Segments {
			resp, err := authGet(info.HTTP+seg.URL, e2eToken, "")
			must(t, err)
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			must(t, err)
			if seg.Start != start+int64(j)*2000 || !bytes.Equal(got, body(s, j)) {
				t.Fatalf("%s segment %d at %d: %d bytes fetched (status %d), want the %d uploaded", stream, j, seg.Start, len(got), resp.StatusCode, len(body(s, j)))
			}
		}
	}
	rtsp.checkedSegments(t, "live", 12_000)
	if err := ffmpeg.Wait(); err != nil {
		t.Fatalf("ffmpeg publishing through the balancer: %v", err)
	}
	viaBalancer.checkedSegments(t, "viabalancer", 6_000)

	// The meter's usage of every stream matches the objects in storage,
	// once the killed nodes are back (their usage journals replay).
	mc, err := minio.New(strings.TrimPrefix(info.MinIO.Endpoint, "http://"), &minio.Options{Creds: credentials.NewStaticV4(info.MinIO.AccessKey, info.MinIO.SecretKey, "")})
	must(t, err)
	for _, stream := range append(streams, "live", "viabalancer") {
		var objects, size int64
		for o := range mc.ListObjects(ctx, info.MinIO.Bucket, minio.ListObjectsOptions{Prefix: "acct/cam/" + stream + "/seg/", Recursive: true}) {
			must(t, o.Err)
			objects++
			size += o.Size
		}
		if strings.HasPrefix(stream, "s") && objects != perStream {
			t.Errorf("%s: %d segment objects in storage, want %d", stream, objects, perStream)
		}
		var u struct {
			StorageBytes int64 `json:"storage_bytes"`
			SegmentCount int64 `json:"segment_count"`
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			must(t, api.do(ctx, "GET", "/v1/meter/streams/"+url.PathEscape(stream), nil, &u))
			if u.StorageBytes == size && u.SegmentCount == objects {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: meter says %d bytes in %d segments, storage holds %d in %d", stream, u.StorageBytes, u.SegmentCount, size, objects)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// SIGTERM stops everything.
	must(t, cmd.Process.Signal(syscall.SIGTERM))
	if err := wait(); err != nil {
		t.Fatalf("cluster up after SIGTERM: %v", err)
	}
	var out []string
	for l := range lines {
		out = append(out, l)
	}
	if len(out) == 0 || out[len(out)-1] != "local cluster stopped" {
		t.Errorf("last lines: %q", out)
	}
	pids := []int{info.MinIO.Pid}
	for _, n := range append(append(info.Voters, info.Ingest...), info.Redis...) {
		pids = append(pids, n.Pid)
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("pid %d still running after cluster up stopped", pid)
		}
	}
	if left := clusterProcesses(data); len(left) > 0 {
		t.Errorf("processes left under %s: %v", data, left)
	}
}
