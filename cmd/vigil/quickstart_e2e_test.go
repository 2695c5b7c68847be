package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
)

// readmeBlocks returns the fenced blocks of README.md that follow a line
// <!-- quickstart --> (or <!-- quickstart:KIND -->), keyed by kind ("" for
// plain quickstart), in order.
func readmeBlocks(t *testing.T) (kinds []string, blocks []string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	kind, in, marked := "", false, false
	var cur strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case in && strings.HasPrefix(line, "```"):
			kinds, blocks = append(kinds, kind), append(blocks, cur.String())
			in, marked = false, false
			cur.Reset()
		case in:
			cur.WriteString(line + "\n")
		case strings.HasPrefix(line, "<!-- quickstart") && strings.HasSuffix(line, "-->"):
			kind = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(line, "<!-- quickstart"), ":"), "-->"))
			marked = true
		case marked && strings.HasPrefix(line, "```"):
			in = true
		case marked && strings.TrimSpace(line) != "":
			t.Fatalf("README: a quickstart marker is not followed by a fenced block: %q", line)
		}
	}
	return kinds, blocks
}

// TestReadmeQuickstart follows the README's quick start as written: the
// serve block, then every quickstart block in one bash session (the
// simulated bridge with an outage, an RTSP publish with ffmpeg, HLS
// playback and the clip of the RTSP part), with the README's own VIGIL,
// API and RTSP variables and the VIGIL_*_ADDR flag twins on free ports.
func TestReadmeQuickstart(t *testing.T) {
	for _, bin := range []string{"ffmpeg", "ffprobe", "curl", "bash"} {
		testutil.RequireBinary(t, bin)
	}
	kinds, blocks := readmeBlocks(t)
	var serve, script string
	for i, k := range kinds {
		switch k {
		case "build":
			if !strings.Contains(blocks[i], "go build -o vigil ./cmd/vigil") {
				t.Fatalf("README's build block does not build ./vigil:\n%s", blocks[i])
			}
		case "serve":
			serve = blocks[i]
		case "":
			script += blocks[i]
		default:
			t.Fatalf("README: unknown quickstart marker %q", k)
		}
	}
	if serve == "" || script == "" {
		t.Fatal("README has no quickstart:serve block or no quickstart blocks")
	}
	dir := t.TempDir()
	// The README calls ./vigil from the repository root; here the root is dir.
	must(t, os.Symlink(vigilBin, filepath.Join(dir, "vigil")))
	httpAddr, rtspAddr := testutil.FreePort(t), testutil.FreePort(t)
	env := append(cleanEnv(), "VIGIL_HTTP_ADDR="+httpAddr, "VIGIL_RAFT_ADDR="+testutil.FreePort(t), "VIGIL_RTSP_ADDR="+rtspAddr,
		"API=http://"+httpAddr, "RTSP="+rtspAddr)

	srv := exec.Command("bash", "-c", serve)
	srv.Dir, srv.Env = dir, env
	var srvLog bytes.Buffer
	srv.Stdout, srv.Stderr = &srvLog, &srvLog
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, srv.Start())
	t.Cleanup(func() {
		_ = syscall.Kill(-srv.Process.Pid, syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", tail(srvLog.String(), 40))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("README's serve command not ready: %v\n%s", err, srvLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The README's blocks run as one session; the test only adds strict
	// mode before and prints the playback window after.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+script+"\necho \"window $S $E\"\n")
	sh.Dir, sh.Env = dir, env
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("README quick start failed: %v\n%s", err, out)
	}
	var S, E int64
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "window ") {
			f := strings.Fields(l)
			S, _ = strconv.ParseInt(f[1], 10, 64)
			E, _ = strconv.ParseInt(f[2], 10, 64)
		}
	}
	if S == 0 || E <= S {
		t.Fatalf("no playback window in the output:\n%s", out)
	}
	for _, want := range []string{`"id":"acme"`, "backlog: 50 segments, 50 stored (50 new, 0 already stored), 0 without an answer",
		"live:    2 segments, 2 stored (2 new, 0 already stored), 0 without an answer", "h264,1280,720,"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// The bridge's outage and live video are 52 segments before the RTSP
	// window; the RTSP publish is recorded inside it. (The two may merge
	// into one span: the bridge's last live segment can end as the publish
	// begins.)
	token, err := os.ReadFile(filepath.Join(dir, "vigil-data", "admin-token"))
	must(t, err)
	c := &apiClient{base: "http://" + httpAddr, token: strings.TrimSpace(string(token))}
	var rec recordings
	must(t, c.do(context.Background(), "GET", fmt.Sprintf("/v1/streams/cam1-main/recordings?start=%d&end=%d", S-time.Hour.Milliseconds(), E+1), nil, &rec))
	var bridgeSegs, rtspMS int64
	for _, s := range rec.Segments {
		if s.Start < S {
			bridgeSegs++
		} else {
			rtspMS += s.DurationMS
		}
	}
	if bridgeSegs != 52 || len(rec.Spans) == 0 {
		t.Errorf("recordings: %d bridge segments (want 52) in spans %+v before %d", bridgeSegs, rec.Spans, S)
	}
	t.Logf("%d bridge segments, %d ms over RTSP, spans %+v", bridgeSegs, rtspMS, rec.Spans)
	if rtspMS < 18_000 || rtspMS > 21_000 {
		t.Errorf("RTSP part: %d ms recorded, want about 20 s", rtspMS)
	}
	// Both outputs are the 20 s published: H.264 1280x720, ~500 frames.
	for _, f := range []string{"out.mp4", "clip.mp4"} {
		p := filepath.Join(dir, f)
		probe, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v", "-count_frames",
			"-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", p).Output()
		if err != nil {
			t.Fatalf("ffprobe %s: %v", f, err)
		}
		var codec string
		var w, h, frames int
		fields := strings.Split(strings.TrimSpace(string(probe)), ",")
		if len(fields) == 4 {
			codec = fields[0]
			w, _ = strconv.Atoi(fields[1])
			h, _ = strconv.Atoi(fields[2])
			frames, _ = strconv.Atoi(fields[3])
		}
		d := ffprobeDuration(t, p)
		t.Logf("%s: %s, %.2f s", f, strings.TrimSpace(string(probe)), d)
		if codec != "h264" || w != 1280 || h != 720 || frames < 450 || frames > 505 || d < 18 || d > 20.5 {
			t.Errorf("%s: %q (codec %s %dx%d, %d frames), %.2f s; want h264 1280x720, ~500 frames, ~20 s", f, probe, codec, w, h, frames, d)
		}
	}
}
