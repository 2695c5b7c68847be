// Package servers starts real MinIO, redis-server and vigil processes on free
// loopback ports, for tests (through internal/testutil) and benchmarks.
package servers

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
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// FreePort returns a loopback address with a free TCP port.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// RandomID returns a short random hex id for key prefixes and bucket names.
func RandomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Process is a server child process. Its log goes to a file in its dir.
type Process struct {
	Addr string
	bin  string
	dir  string
	args []string
	env  []string
	log  *os.File
	cmd  *exec.Cmd
}

// Start runs bin with args in dir; env is added to the environment.
func Start(bin, dir, addr string, env []string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(filepath.Join(dir, filepath.Base(bin)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &Process{Addr: addr, bin: bin, dir: dir, args: args, env: env, log: logf}
	if err := p.Restart(); err != nil {
		logf.Close()
		return nil, err
	}
	return p, nil
}

// Pid is the running process's id, or 0.
func (p *Process) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Restart starts the process again (after Kill) with the same arguments.
func (p *Process) Restart() error {
	p.Kill()
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Dir = p.dir
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	return nil
}

// Kill sends SIGKILL to the process group and waits. Killing twice is harmless.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	if p.cmd != nil {
		_ = p.cmd.Wait()
		p.cmd = nil
	}
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) {
	if pid := p.Pid(); pid != 0 {
		_ = syscall.Kill(-pid, sig)
	}
}

// Wait waits for the process to exit by itself.
func (p *Process) Wait() error {
	if p.cmd == nil {
		return nil
	}
	err := p.cmd.Wait()
	p.cmd = nil
	return err
}

// Close kills the process and closes its log.
func (p *Process) Close() {
	p.Kill()
	p.log.Close()
}

// Logs returns what the process printed so far.
func (p *Process) Logs() string {
	b, _ := os.ReadFile(p.log.Name())
	return string(b)
}

// PeakRSS returns the process's peak resident set size (VmHWM) in bytes.
func (p *Process) PeakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimPrefix(line, "VmHWM:"), "%d", &kb); err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", p.Pid())
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not accept connections within %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartRedis starts a redis-server with an fsync-always append-only file.
func StartRedis(ctx context.Context, dir string) (*Process, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	addr, err := FreePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	p, err := Start(bin, dir, addr, nil,
		"--bind", "127.0.0.1", "--port", port, "--dir", dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no")
	if err != nil {
		return nil, err
	}
	if err := WaitTCP(ctx, addr, 10*time.Second); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// MinIO is a single-drive MinIO server.
type MinIO struct {
	*Process
	AccessKey string
	SecretKey string
}

// StartMinIO starts MinIO (FindMinIO) on a free loopback port with its
// data under dir.
func StartMinIO(ctx context.Context, dir string) (*MinIO, error) {
	return StartMinIOBin(ctx, "", dir)
}

// ToolsCache is where scripts/test.sh builds MinIO and mc:
// $VIGIL_TOOLS_CACHE, else $XDG_CACHE_HOME/vigil-tools, else
// ~/.cache/vigil-tools.
func ToolsCache() string {
	if d := os.Getenv("VIGIL_TOOLS_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vigil-tools")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".cache", "vigil-tools")
}

// FindMinIO returns the minio binary: bin if given, else `minio` on PATH,
// else the newest one scripts/test.sh built into ToolsCache. The error
// says how to get one.
func FindMinIO(bin string) (string, error) {
	if bin != "" {
		if _, err := exec.LookPath(bin); err != nil {
			return "", fmt.Errorf("minio %s: %w", bin, err)
		}
		return bin, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	cache := ToolsCache()
	if cache != "" {
		// minio-<pseudo-version>: the lexically last is the newest build.
		found, _ := filepath.Glob(filepath.Join(cache, "minio-*", "minio"))
		for i := len(found) - 1; i >= 0; i-- {
			if p, err := exec.LookPath(found[i]); err == nil {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("no minio binary: not on PATH nor in %s/minio-*/; "+
		"run scripts/test.sh once (it builds MinIO there), put a minio binary on PATH, or pass its path (--minio)", cache)
}

// StartMinIOBin starts the MinIO binary bin (FindMinIO(bin)) on a free
// loopback port with its data under dir.
func StartMinIOBin(ctx context.Context, bin, dir string) (*MinIO, error) {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	return startMinIO(ctx, bin, dir, filepath.Join(dir, "data"))
}

// startMinIO starts MinIO with its log in dir on the drives argument
// (one directory, or a MinIO ellipsis pattern for several).
func startMinIO(ctx context.Context, bin, dir, drives string) (*MinIO, error) {
	bin, err := FindMinIO(bin)
	if err != nil {
		return nil, err
	}
	addr, err := FreePort()
	if err != nil {
		return nil, err
	}
	console, err := FreePort()
	if err != nil {
		return nil, err
	}
	m := &MinIO{AccessKey: "vigiltest", SecretKey: "vigiltest-secret-" + RandomID()}
	env := []string{
		"MINIO_ROOT_USER=" + m.AccessKey, "MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1",
	}
	m.Process, err = Start(bin, dir, addr, env,
		"server", "--quiet", "--address", addr, "--console-address", console, drives)
	if err != nil {
		return nil, err
	}
	if err := m.WaitReady(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// WaitReady waits until MinIO answers S3 requests.
func (m *MinIO) WaitReady(ctx context.Context) error {
	if err := WaitTCP(ctx, m.Addr, 60*time.Second); err != nil {
		return err
	}
	c, err := m.Client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.ListBuckets(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("minio not ready: %w\n%s", err, m.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Client returns a minio-go client for the server.
func (m *MinIO) Client() (*minio.Client, error) {
	return minio.New(m.Addr, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
}

// MakeBucket creates a fresh bucket and returns its name.
func (m *MinIO) MakeBucket(ctx context.Context) (string, error) {
	c, err := m.Client()
	if err != nil {
		return "", err
	}
	name := "vigil-" + RandomID()
	return name, c.MakeBucket(ctx, name, minio.MakeBucketOptions{})
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
