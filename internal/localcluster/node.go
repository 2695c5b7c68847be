package localcluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// node is one `vigil serve` process, restarted when it dies.
type node struct {
	id, dir, bin     string
	http, raft, rtsp string
	args, env        []string
	log              *slog.Logger

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has been waited for
	stopping bool
}

func (n *node) logPath() string { return filepath.Join(n.dir, "vigil.log") }

// start runs the process; n.mu must not be held.
func (n *node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.startLocked()
}

func (n *node) startLocked() error {
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(n.bin, n.args...)
	cmd.Dir = n.dir
	cmd.Env = append(os.Environ(), n.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches only
	// `cluster up`, which then stops the nodes in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.id, err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	return nil
}

// supervise waits for the process and starts it again when it dies,
// until terminate or ctx ends.
func (n *node) supervise(ctx context.Context) {
	for {
		n.mu.Lock()
		cmd, exited := n.cmd, n.exited
		n.mu.Unlock()
		err := cmd.Wait()
		close(exited)
		n.mu.Lock()
		stopping := n.stopping
		n.mu.Unlock()
		if stopping || ctx.Err() != nil {
			return
		}
		n.log.Warn("local cluster: node died; restarting it", "node", n.id, "err", err)
		for {
			if !sleep(ctx, time.Second) {
				return
			}
			n.mu.Lock()
			if n.stopping {
				n.mu.Unlock()
				return
			}
			err := n.startLocked()
			n.mu.Unlock()
			if err == nil {
				break
			}
			n.log.Warn("local cluster: restart failed", "node", n.id, "err", err)
		}
	}
}

// sleep waits d, or less when ctx ends: then it returns false.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// terminate sends SIGTERM and waits up to grace for the process to exit,
// then SIGKILLs it. The supervisor no longer restarts it.
func (n *node) terminate(grace time.Duration) error {
	n.mu.Lock()
	n.stopping = true
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return fmt.Errorf("%s did not stop within %v; killed", n.id, grace)
	}
}

func (n *node) nodeInfo() NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return NodeInfo{ID: n.id, HTTP: n.http, Raft: n.raft, RTSP: n.rtsp, Pid: n.cmd.Process.Pid, Log: n.logPath()}
}
