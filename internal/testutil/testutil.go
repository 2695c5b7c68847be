// Package testutil starts the real servers integration tests talk to
// (MinIO, redis-server) on free loopback ports and stops them at the end of
// the test.
//
// When a server binary is missing the test is skipped with the reason, or
// fails when VIGIL_REQUIRE_INTEGRATION=1 (CI sets it). Under `go test -short`
// every test that needs one is skipped, whatever VIGIL_REQUIRE_INTEGRATION
// says: -short is an explicit request for the unit tests only.
package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/vigilcloud/vigil/internal/servers"
)

// SkipIfShort skips t under -short, which runs the unit tests only: a test
// that starts a real server or a process, or takes more than a couple of
// seconds, belongs to the full suite. why says what the test needs.
func SkipIfShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test, skipped under -short: " + why)
	}
}

// RequireBinary returns the path of a binary, or skips (fails under
// VIGIL_REQUIRE_INTEGRATION=1) when it is not installed. It skips under
// -short even when the binary is there (SkipIfShort).
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	SkipIfShort(t, "needs "+name)
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
	addr, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// RandomID returns a short random id usable as a key prefix or bucket suffix.
func RandomID() string { return servers.RandomID() }

// Process is a server started for a test.
type Process struct {
	*servers.Process
	t testing.TB
}

// Stop kills the server (SIGKILL) and waits for it. Stopping twice is harmless.
func (p *Process) Stop() { p.Kill() }

// Redis is a redis-server started for a test.
type Redis struct {
	Process
}

// StartRedis starts a redis-server with persistence (appendfsync always) on a
// free loopback port.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	RequireBinary(t, "redis-server")
	p, err := servers.StartRedis(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &Redis{Process{p, t}}
}

// Start restarts a stopped redis-server on the same port and data.
func (r *Redis) Start() {
	r.t.Helper()
	if err := r.Restart(); err != nil {
		r.t.Fatal(err)
	}
	if err := servers.WaitTCP(context.Background(), r.Addr, 10*time.Second); err != nil {
		r.t.Fatal(err)
	}
}

// MinIO is a MinIO server started for a test.
type MinIO struct {
	Process
	AccessKey string
	SecretKey string
	m         *servers.MinIO
}

// StartMinIO starts a single-drive MinIO server on a free loopback port.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	RequireBinary(t, "minio")
	m, err := servers.StartMinIO(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return &MinIO{Process: Process{m.Process, t}, AccessKey: m.AccessKey, SecretKey: m.SecretKey, m: m}
}

// Start restarts a stopped MinIO on the same port and data.
func (m *MinIO) Start() {
	m.t.Helper()
	if err := m.Restart(); err != nil {
		m.t.Fatal(err)
	}
	if err := m.m.WaitReady(context.Background()); err != nil {
		m.t.Fatal(err)
	}
}

// Client returns a minio-go client for the server.
func (m *MinIO) Client() *minio.Client {
	c, err := m.m.Client()
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

// Bucket creates a fresh bucket and returns its name.
func (m *MinIO) Bucket(t testing.TB) string {
	t.Helper()
	name, err := m.m.MakeBucket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// Env returns the VIGIL_S3_* variables that point vigil at bucket.
func (m *MinIO) Env(bucket string) []string { return m.m.Env(bucket) }
