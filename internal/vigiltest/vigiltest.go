// Package vigiltest builds the vigil binary and runs it as a child process on
// free loopback ports, for tests that drive the real binary from outside.
package vigiltest

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/apiclient"
	"github.com/vigilcloud/vigil/internal/servers"
	"github.com/vigilcloud/vigil/internal/testutil"
)

// Token is the operator token every node started here uses.
const Token = "vigiltest-operator-token"

// Main is TestMain for a package whose tests run the vigil binary: it builds
// it into *bin, runs the tests, removes it and returns the exit code. Under
// -short nothing is built, *bin stays empty and Start (and RequireBin) skip.
func Main(m *testing.M, bin *string) int {
	flag.Parse() // testing.Short needs the flags parsed
	if testing.Short() {
		return m.Run()
	}
	b, cleanup, err := Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	*bin = b
	return m.Run()
}

// RequireBin returns bin for a test that runs the vigil binary itself rather
// than through Start; under -short, where Main built none, it skips the test.
func RequireBin(t testing.TB, bin string) string {
	t.Helper()
	testutil.SkipIfShort(t, "runs the vigil binary")
	return bin
}

// Build compiles ./cmd/vigil (found from the module root above dir) into a
// temp dir and returns the binary's path and a cleanup. For TestMain.
func Build() (bin string, cleanup func(), err error) {
	root, err := moduleRoot()
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "vigiltest-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "vigil")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/vigil")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build vigil: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		d = p
	}
}

// Node is a running `vigil serve`.
type Node struct {
	*servers.Process
	T        testing.TB
	Base     string // http://host:port
	HTTPAddr string
	RTSPAddr string // empty unless started with WithRTSP
	Data     string
	API      *Client
}

// Options for Start. Args are appended to serve's flags.
type Options struct {
	Env  []string
	Args []string
	RTSP bool // listen for RTSP on a free port (UDP off)
	// Advertise makes the node tell other nodes to reach it at
	// localhost:PORT (--http-advertise, --raft-advertise) rather than at
	// the 127.0.0.1 it listens on.
	Advertise bool
}

// Start runs `vigil serve` with its data in a test temp dir and waits for /readyz.
func Start(t testing.TB, bin string, o Options) *Node {
	t.Helper()
	bin = RequireBin(t, bin)
	dir := t.TempDir()
	n := &Node{T: t, HTTPAddr: testutil.FreePort(t), Data: filepath.Join(dir, "data")}
	n.Base = "http://" + n.HTTPAddr
	rtsp := ""
	raftAddr := testutil.FreePort(t)
	args := []string{"serve", "--data", n.Data, "--http-addr", n.HTTPAddr,
		"--raft-addr", raftAddr, "--log-level", "debug"}
	if o.Advertise {
		args = append(args, "--http-advertise", localhost(n.HTTPAddr), "--raft-advertise", localhost(raftAddr))
	}
	if o.RTSP {
		rtsp = testutil.FreePort(t)
		n.RTSPAddr = rtsp
		args = append(args, "--rtsp-udp-addr", "off")
	}
	args = append(args, "--rtsp-addr", rtsp)
	args = append(args, o.Args...)
	env := append([]string{"VIGIL_ADMIN_TOKEN=" + Token}, o.Env...)
	p, err := servers.Start(bin, dir, n.HTTPAddr, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	n.Process = p
	n.API = &Client{Base: n.Base, Token: Token}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() {
			t.Logf("vigil log:\n%s", Tail(p.Logs(), 60))
		}
	})
	n.WaitReady()
	return n
}

// localhost is addr (host:port) with the host localhost.
func localhost(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort("localhost", port)
}

// WaitReady waits up to a minute for /readyz to answer 200.
func (n *Node) WaitReady() {
	n.T.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(n.Base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			n.T.Fatalf("vigil not ready: %v\n%s", err, Tail(n.Logs(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Restart SIGKILLs the node and starts it again on the same data.
func (n *Node) Restart() {
	n.T.Helper()
	n.Kill()
	if err := n.Process.Restart(); err != nil {
		n.T.Fatal(err)
	}
	n.WaitReady()
}

// Provision creates account acct, bridge br and camera cam with the streams
// (1280x720, 30 days) and returns the bridge token.
func (n *Node) Provision(streams ...string) string {
	n.T.Helper()
	ctx := context.Background()
	n.Must(n.API.Do(ctx, "POST", "/v1/accounts", map[string]any{"id": "acct", "name": "Account"}, nil))
	var br struct{ Token string }
	n.Must(n.API.Do(ctx, "POST", "/v1/accounts/acct/bridges", map[string]any{"id": "br", "name": "Bridge"}, &br))
	var ss []map[string]any
	for _, s := range streams {
		ss = append(ss, map[string]any{"id": s, "width": 1280, "height": 720, "retention_days": 30})
	}
	n.Must(n.API.Do(ctx, "POST", "/v1/bridges/br/cameras", map[string]any{"id": "cam", "name": "Cam", "streams": ss}, nil))
	if br.Token == "" {
		n.T.Fatal("no bridge token returned")
	}
	return br.Token
}

// ProvisionBridge creates account acct (if new), its bridge br and camera
// cam with the streams (1280x720, 30 days) and returns the bridge token: a
// second tenant beside Provision's.
func (n *Node) ProvisionBridge(acct, br, cam string, streams ...string) string {
	n.T.Helper()
	ctx := context.Background()
	err := n.API.Do(ctx, "POST", "/v1/accounts", map[string]any{"id": acct, "name": acct}, nil)
	if se, ok := err.(*StatusError); err != nil && (!ok || se.Status != http.StatusConflict) {
		n.T.Fatal(err)
	}
	var b struct{ Token string }
	n.Must(n.API.Do(ctx, "POST", "/v1/accounts/"+acct+"/bridges", map[string]any{"id": br, "name": br}, &b))
	var ss []map[string]any
	for _, s := range streams {
		ss = append(ss, map[string]any{"id": s, "width": 1280, "height": 720, "retention_days": 30})
	}
	n.Must(n.API.Do(ctx, "POST", "/v1/bridges/"+br+"/cameras", map[string]any{"id": cam, "name": cam, "streams": ss}, nil))
	if b.Token == "" {
		n.T.Fatal("no bridge token returned")
	}
	return b.Token
}

// Must fails the test on err.
func (n *Node) Must(err error) {
	n.T.Helper()
	if err != nil {
		n.T.Fatal(err)
	}
}

// Put uploads one segment of 2 s and returns the status and body.
func (n *Node) Put(token, stream string, start int64, body []byte, ctype string) (int, string) {
	n.T.Helper()
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/streams/%s/segments/%d?duration_ms=2000", n.Base, stream, start), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.T.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Client calls a node's JSON API with a bearer token.
type Client = apiclient.Client

// StatusError is a non-2xx answer.
type StatusError = apiclient.StatusError

// Tail returns the last lines of s.
func Tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
