// Package testutil starts the real servers integration tests talk to
// (MinIO, redis-server) on free loopback ports and stops them at the end of
// the test.
//
// When a server binary is missing the test is skipped with the reason, or
// fails when VIGIL_REQUIRE_INTEGRATION=1 (CI sets it).
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// RequireBinary returns the path of a binary, or skips (fails under
// VIGIL_REQUIRE_INTEGRATION=1) when it is not installed.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not found on PATH (run scripts/test.sh, which installs it): %v", name, err)
		if os.Getenv("VIGIL_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// FreePort returns a loopback address with a free TCP port.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// RandomID returns a short random id usable as a key prefix or bucket suffix.
func RandomID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Process is a server started for a test.
type Process struct {
	Addr string
	cmd  *exec.Cmd
	args []string
	bin  string
	dir  string
	t    testing.TB
	log  *os.File
}

func startProcess(t testing.TB, bin, dir, addr string, env []string, args ...string) *Process {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, filepath.Base(bin)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Addr: addr, args: args, bin: bin, dir: dir, t: t, log: logf}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = logf
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		p.Stop()
		logf.Close()
	})
	return p
}

// Stop kills the server and waits for it. Stopping twice is harmless.
func (p *Process) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// Restart starts the stopped server again with the same arguments, port and
// data directory.
func (p *Process) Restart(env []string) {
	p.t.Helper()
	p.Stop()
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Dir = p.dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("restart %s: %v", p.bin, err)
	}
}

// Logs returns what the server printed so far.
func (p *Process) Logs() string {
	b, _ := os.ReadFile(p.log.Name())
	return string(b)
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not accept connections within %v: %v", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Redis is a redis-server started for a test.
type Redis struct {
	*Process
}

// StartRedis starts a redis-server with persistence (appendfsync always) on a
// free loopback port.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := RequireBinary(t, "redis-server")
	dir := t.TempDir()
	addr := FreePort(t)
	_, port, _ := net.SplitHostPort(addr)
	p := startProcess(t, bin, dir, addr, nil,
		"--bind", "127.0.0.1", "--port", port, "--dir", dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--protected-mode", "no")
	WaitTCP(t, addr, 10*time.Second)
	return &Redis{Process: p}
}

// Start restarts a stopped redis-server on the same port and data.
func (r *Redis) Start() {
	r.t.Helper()
	r.Restart(nil)
	WaitTCP(r.t, r.Addr, 10*time.Second)
}

// MinIO is a MinIO server started for a test.
type MinIO struct {
	*Process
	AccessKey string
	SecretKey string
	env       []string
}

// StartMinIO starts a single-drive MinIO server on a free loopback port.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	bin := RequireBinary(t, "minio")
	dir := t.TempDir()
	addr := FreePort(t)
	console := FreePort(t)
	m := &MinIO{AccessKey: "vigiltest", SecretKey: "vigiltest-secret-" + RandomID()}
	m.env = []string{
		"MINIO_ROOT_USER=" + m.AccessKey,
		"MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	m.Process = startProcess(t, bin, dir, addr, m.env,
		"server", "--quiet", "--address", addr, "--console-address", console, filepath.Join(dir, "data"))
	m.waitReady()
	return m
}

func (m *MinIO) waitReady() {
	m.t.Helper()
	WaitTCP(m.t, m.Addr, 60*time.Second)
	c := m.Client()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.ListBuckets(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("minio not ready: %v\n%s", err, m.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Start restarts a stopped MinIO on the same port and data.
func (m *MinIO) Start() {
	m.t.Helper()
	m.Restart(m.env)
	m.waitReady()
}

// Client returns a minio-go client for the server.
func (m *MinIO) Client() *minio.Client {
	c, err := minio.New(m.Addr, &minio.Options{
		Creds:  credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure: false,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

// Bucket creates a fresh bucket and returns its name.
func (m *MinIO) Bucket(t testing.TB) string {
	t.Helper()
	name := "vigil-" + strings.ToLower(RandomID())
	if err := m.Client().MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

// Env returns the VIGIL_S3_* variables that point vigil at bucket.
func (m *MinIO) Env(bucket string) []string {
	return []string{
		"VIGIL_S3_ENDPOINT=http://" + m.Addr,
		"VIGIL_S3_BUCKET=" + bucket,
		"VIGIL_S3_ACCESS_KEY=" + m.AccessKey,
		"VIGIL_S3_SECRET_KEY=" + m.SecretKey,
	}
}
