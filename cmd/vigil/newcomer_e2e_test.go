package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/servers"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// runVigil runs the binary to completion (bounded) in dir and returns its
// exit code, stdout and stderr.
func runVigil(t *testing.T, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(vigiltest.RequireBin(t, vigilBin), args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("vigil %v did not exit within 60 s\nstdout:\n%s\nstderr:\n%s", args, stdout.String(), stderr.String())
		return 0, "", ""
	}
}

// cleanEnv is the test's environment without VIGIL_* variables, so a
// command sees only what the test gives it.
func cleanEnv() []string {
	var env []string
	for _, kv := range testEnviron() {
		if !strings.HasPrefix(kv, "VIGIL_") {
			env = append(env, kv)
		}
	}
	return env
}

// Every help request prints usage on stdout and exits 0, wherever it is
// run (meter --help needs no token).
func TestHelpExitsZero(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"usage: vigil <command>", "serve", "bench    run a benchmark: ingest, meter, retention, rtsp, playback"}},
		{[]string{"-h"}, []string{"usage: vigil <command>"}},
		{[]string{"help"}, []string{"usage: vigil <command>"}},
		{[]string{"serve", "--help"}, []string{"usage: vigil serve", "Runs one vigil node", "-rtsp-udp-addr"}},
		{[]string{"demo", "--help"}, []string{"usage: vigil demo", "ffmpeg", "a temp dir, removed at the end"}},
		{[]string{"bridge", "--help"}, []string{"usage: vigil bridge", "-outage"}},
		{[]string{"bench", "--help"}, []string{"ingest", "meter", "retention", "rtsp", "playback", "backlog", "streams", "all"}},
		{[]string{"bench", "ingest", "--help"}, []string{"usage: vigil bench ingest", "baseline", "-minio"}},
		{[]string{"bench", "rtsp", "-h"}, []string{"usage: vigil bench rtsp", "baseline"}},
		{[]string{"meter", "--help"}, []string{"vigil meter status", "vigil meter billing"}},
		{[]string{"meter", "status", "--help"}, []string{"usage: vigil meter status", "-server"}},
		{[]string{"meter", "billing", "--help"}, []string{"usage: vigil meter billing", "-format"}},
		{[]string{"index", "--help"}, []string{"usage: vigil index rebuild"}},
		{[]string{"index", "rebuild", "--help"}, []string{"usage: vigil index rebuild", "-stream"}},
		{[]string{"cluster", "--help"}, []string{"usage: vigil cluster up"}},
		{[]string{"cluster", "up", "--help"}, []string{"usage: vigil cluster up", "Redis Cluster", "-rtsp-addr"}},
	} {
		code, stdout, stderr := runVigil(t, dir, nil, c.args...)
		if code != 0 || stderr != "" {
			t.Errorf("vigil %v: exit %d, stderr %q; want 0 and nothing on stderr", c.args, code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("vigil %v: stdout lacks %q:\n%s", c.args, w, stdout)
			}
		}
	}
	// A subcommand's help shows only its own flags.
	if _, stdout, _ := runVigil(t, dir, nil, "meter", "status", "--help"); strings.Contains(stdout, "-format") || strings.Contains(stdout, "-dry-run") {
		t.Errorf("meter status --help lists other subcommands' flags:\n%s", stdout)
	}
	// The demo's help shows the defaults the demo uses, not serve's.
	if _, stdout, _ := runVigil(t, dir, nil, "demo", "--help"); strings.Contains(stdout, "./vigil-data") || strings.Contains(stdout, "127.0.0.1:8080") {
		t.Errorf("demo --help shows serve's defaults:\n%s", stdout)
	}
	// Mistakes still fail, with the usage on stderr.
	for _, args := range [][]string{{}, {"nope"}, {"bench", "nope"}, {"serve", "--no-such-flag"}} {
		code, stdout, stderr := runVigil(t, dir, nil, args...)
		if code == 0 || stderr == "" || stdout != "" {
			t.Errorf("vigil %v: exit %d, stdout %q, stderr %q; want non-zero, usage on stderr", args, code, stdout, stderr)
		}
	}
}

// A startup error is shown as what it is and exits non-zero, not as a
// nil-pointer panic.
func TestStartupErrorIsReported(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	code, _, stderr := runVigil(t, dir, nil, "serve", "--data", filepath.Join(dir, "data"),
		"--http-addr", l.Addr().String(), "--raft-addr", testutil.FreePort(t), "--rtsp-addr", testutil.FreePort(t))
	if code == 0 || strings.Contains(stderr, "panic") || !strings.Contains(stderr, "vigil: listen tcp "+l.Addr().String()) ||
		!strings.Contains(stderr, "address already in use") {
		t.Fatalf("serve on a taken port: exit %d, stderr:\n%s", code, stderr)
	}
	// A late error, once HTTP serves and the meter runs: the RTSP UDP port
	// is taken.
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpAddr := udp.LocalAddr().String()
	if udp.LocalAddr().(*net.UDPAddr).Port%2 != 0 { // the RTCP half is taken: name the pair's RTP port
		udpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port-1))
	}
	for i := range 3 { // the panic this replaced depended on timing
		code, _, stderr = runVigil(t, dir, nil, "serve", "--data", filepath.Join(dir, "data"+strconv.Itoa(i)),
			"--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--rtsp-addr", "127.0.0.1:0", "--rtsp-udp-addr", udpAddr)
		if code != 1 || strings.Contains(stderr, "panic") || !strings.Contains(stderr, "vigil: rtsp: udp") ||
			!strings.Contains(stderr, "address already in use") {
			t.Fatalf("serve with its RTSP UDP port taken: exit %d, stderr:\n%s", code, stderr)
		}
	}
}

// Two nodes on one host, each given only its data dir and its HTTP, raft
// and RTSP addresses, both start and stay up.
func TestTwoNodesOneHost(t *testing.T) {
	root := t.TempDir()
	var nodes []*servers.Process
	for _, name := range []string{"a", "b"} {
		dir := filepath.Join(root, name)
		must(t, mkdirAll(dir))
		httpAddr := testutil.FreePort(t)
		p, err := servers.Start(vigiltest.RequireBin(t, vigilBin), dir, httpAddr, nil, "serve", "--data", filepath.Join(dir, "data"),
			"--http-addr", httpAddr, "--raft-addr", testutil.FreePort(t), "--rtsp-addr", testutil.FreePort(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("node %s log:\n%s", name, tail(p.Logs(), 30))
			}
			p.Close()
		})
		nodes = append(nodes, p)
	}
	for _, p := range nodes {
		waitReadyz(t, p)
	}
	// Both still answer after both are up (the second did not take down
	// the first, nor die late), and neither warned at a normal start.
	for _, p := range nodes {
		waitReadyz(t, p)
		if strings.Contains(p.Logs(), "level=WARN") || strings.Contains(p.Logs(), "level=ERROR") {
			t.Errorf("node %s logged a warning or error at a normal start:\n%s", p.Addr, p.Logs())
		}
	}
}

// waitReadyz waits (bounded) until the process answers /readyz with 200.
func waitReadyz(t *testing.T, p *servers.Process) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + p.Addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not ready: %v\n%s", p.Addr, err, tail(p.Logs(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Unknown routes and wrong methods answer the contract's JSON error.
func TestUnknownRouteJSON(t *testing.T) {
	n := startVigil(t, nil)
	for _, c := range []struct {
		method, path, token string
		status              int
		code, allow         string
	}{
		{"GET", "/nope", "", 404, "not_found", ""},
		{"GET", "/v1/nope", e2eToken, 404, "not_found", ""},
		{"DELETE", "/healthz", "", 405, "method_not_allowed", "GET, HEAD"},
		{"DELETE", "/v1/accounts", e2eToken, 405, "method_not_allowed", "GET, HEAD, POST"},
	} {
		req, _ := http.NewRequest(c.method, n.base+c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error, Code string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.status || err != nil || body.Code != c.code || body.Error == "" ||
			resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d %q Allow %q, body %+v (%v); want %d code %q Allow %q",
				c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), body, err, c.status, c.code, c.allow)
		}
	}
}

func testEnviron() []string { return os.Environ() }

func mkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

// Without ffmpeg, the demo says so and offers the synthetic payloads; with
// them it runs.
func TestDemoWithoutFFmpeg(t *testing.T) {
	dir := t.TempDir()
	env := []string{"PATH=" + t.TempDir(), "TMPDIR=" + dir}
	code, _, stderr := runVigil(t, dir, env, "demo", "--live", "2s", "--outage", "10s")
	if code == 0 || !strings.Contains(stderr, "ffmpeg, which is not on PATH") || !strings.Contains(stderr, "--payload synthetic") {
		t.Fatalf("demo without ffmpeg: exit %d, stderr:\n%s", code, stderr)
	}
	code, stdout, stderr := runVigil(t, dir, env, "demo", "--live", "2s", "--outage", "10s", "--payload", "synthetic")
	if code != 0 || !strings.Contains(stdout, "removed the demo's data") {
		t.Fatalf("demo --payload synthetic without ffmpeg: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
