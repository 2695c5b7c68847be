package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
)

// deploy/local-cluster.sh as a newcomer runs it (on free ports): it says
// "cluster up" only with a leader and every member, a write through a
// follower works, and Ctrl-C leaves no process behind.
func TestLocalClusterScript(t *testing.T) {
	testutil.RequireBinary(t, "curl")
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "local-cluster.sh")
	data := t.TempDir()
	var httpPorts, raftPorts, rtspPorts []string
	for range 3 {
		for _, l := range []*[]string{&httpPorts, &raftPorts, &rtspPorts} {
			*l = append(*l, strings.TrimPrefix(testutil.FreePort(t), "127.0.0.1:"))
		}
	}
	cmd := exec.Command(script, data)
	cmd.Env = append(cleanEnv(), "VIGIL_BIN="+vigilBin, "VIGIL_ADMIN_TOKEN="+e2eToken,
		"VIGIL_CLUSTER_HTTP_PORTS="+strings.Join(httpPorts, " "),
		"VIGIL_CLUSTER_RAFT_PORTS="+strings.Join(raftPorts, " "),
		"VIGIL_CLUSTER_RTSP_PORTS="+strings.Join(rtspPorts, " "))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		// Whatever happened, leave nothing running.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		for _, pid := range processesUnder(data) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			for _, n := range []string{"n1", "n2", "n3"} {
				b, _ := os.ReadFile(filepath.Join(data, n+".log"))
				t.Logf("%s.log:\n%s", n, tail(string(b), 20))
			}
		}
	})
	up := false
	deadline := time.After(90 * time.Second)
	for !up {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("local-cluster.sh ended before the cluster was up: %v\nstderr:\n%s", <-exited, stderr.String())
			}
			up = strings.HasPrefix(l, "cluster up")
		case <-deadline:
			t.Fatalf("no \"cluster up\" within 90 s\nstderr:\n%s", stderr.String())
		}
	}
	go func() { // keep draining
		for range lines {
		}
	}()

	// Every node agrees on the leader and lists all three voters.
	var leader string
	var follower *apiClient
	for i, p := range httpPorts {
		c := &apiClient{base: "http://127.0.0.1:" + p, token: e2eToken}
		var s clusterStatus
		must(t, c.do(context.Background(), "GET", "/v1/cluster", nil, &s))
		if leader == "" {
			leader = s.Leader.ID
		}
		if s.Leader.ID == "" || s.Leader.ID != leader {
			t.Fatalf("node %d: leader %q, another node says %q", i+1, s.Leader.ID, leader)
		}
		voters := map[string]bool{}
		for _, m := range s.Members {
			voters[m.ID] = m.Suffrage == "voter"
		}
		if !voters["n1"] || !voters["n2"] || !voters["n3"] || len(s.Members) != 3 {
			t.Fatalf("node %d: members %+v, want voters n1, n2, n3", i+1, s.Members)
		}
		if s.NodeID != leader {
			follower = c
		}
	}
	// A write through a follower is forwarded to the leader; a write that
	// depends on it succeeds on another node.
	must(t, follower.do(context.Background(), "POST", "/v1/accounts", map[string]any{"id": "acme", "name": "ACME"}, nil))
	other := &apiClient{base: "http://127.0.0.1:" + httpPorts[0], token: e2eToken}
	if follower.base == other.base {
		other.base = "http://127.0.0.1:" + httpPorts[1]
	}
	must(t, other.do(context.Background(), "POST", "/v1/accounts/acme/bridges", map[string]any{"id": "br1", "name": "Office"}, nil))

	// Ctrl-C stops the cluster: the script exits and no node is left.
	if len(processesUnder(data)) != 3 {
		t.Fatalf("want 3 vigil processes under %s, found %v", data, processesUnder(data))
	}
	must(t, cmd.Process.Signal(syscall.SIGINT))
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("local-cluster.sh still running 30 s after SIGINT")
	}
	if left := processesUnder(data); len(left) != 0 {
		t.Fatalf("processes left after SIGINT: %v", left)
	}
}

// processesUnder returns the pids of processes whose command line names dir.
func processesUnder(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		for _, c := range e.Name() {
			if c < '0' || c > '9' {
				pid = -1
				break
			}
			pid = pid*10 + int(c-'0')
		}
		if pid <= 0 || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == "vigil" && strings.Contains(string(b), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}
