package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// listFSM appends every command; enough to see what survived a restart.
type listFSM struct {
	mu   sync.Mutex
	cmds []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, string(l.Data))
	return len(f.cmds)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := json.Marshal(f.cmds)
	return snap(b), err
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var cmds []string
	if err := json.NewDecoder(rc).Decode(&cmds); err != nil {
		return err
	}
	f.mu.Lock()
	f.cmds = cmds
	f.mu.Unlock()
	return nil
}

func (f *listFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

type snap []byte

func (s snap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (s snap) Release() {}

func testConfig(dir string) Config {
	return Config{NodeID: "n1", RaftAddr: "127.0.0.1:0", Dir: dir, Bootstrap: true, HeartbeatTimeout: 50 * time.Millisecond}
}

func openReady(t *testing.T, cfg Config, fsm raft.FSM) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := Open(ctx, cfg, fsm)
	require.NoError(t, err)
	require.NoError(t, n.WaitReady(ctx))
	return n
}

func apply(t *testing.T, n *Node, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		_, err := n.Apply(context.Background(), []byte(c))
		require.NoError(t, err)
	}
}

func TestOpenApplyReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	f1 := &listFSM{}
	n := openReady(t, cfg, f1)
	require.Equal(t, raft.Leader, n.State())
	id, _ := n.Leader()
	require.Equal(t, "n1", id)
	res, err := n.Apply(context.Background(), []byte("a"))
	require.NoError(t, err)
	require.Equal(t, 1, res)
	apply(t, n, "b")
	require.NoError(t, n.Snapshot())
	apply(t, n, "c") // after the snapshot: replayed from the WAL
	cfg.RaftAddr = n.Addr()
	require.NoError(t, n.Close())

	f2 := &listFSM{}
	n2 := openReady(t, cfg, f2)
	defer n2.Close()
	require.Equal(t, []string{"a", "b", "c"}, f2.list())
	require.GreaterOrEqual(t, n2.AppliedIndex(), uint64(3))
	apply(t, n2, "d")
	require.Equal(t, []string{"a", "b", "c", "d"}, f2.list())
}

func TestApplyOnFollowerIsNotLeader(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Bootstrap = false // no cluster: never becomes leader
	n, err := Open(context.Background(), cfg, &listFSM{})
	require.NoError(t, err)
	defer n.Close()
	_, err = n.Apply(context.Background(), []byte("x"))
	require.ErrorIs(t, err, ErrNotLeader)
	var nle *NotLeaderError
	require.True(t, errors.As(err, &nle))
}

// prepared returns a data dir holding a snapshot and some log entries.
func prepared(t *testing.T) (Config, string) {
	t.Helper()
	cfg := testConfig(t.TempDir())
	n := openReady(t, cfg, &listFSM{})
	apply(t, n, "a", "b")
	require.NoError(t, n.Snapshot())
	apply(t, n, "c")
	cfg.RaftAddr = n.Addr()
	require.NoError(t, n.Close())
	return cfg, filepath.Join(cfg.Dir, "raft")
}

func snapshotDir(t *testing.T, base string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(base, "snapshots", "*"))
	require.NoError(t, err)
	require.Len(t, m, 1)
	return m[0]
}

func TestDamagedStateRefused(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, base string)
		want   string
	}{
		{"snapshot state truncated", func(t *testing.T, base string) {
			p := filepath.Join(snapshotDir(t, base), "state.bin")
			fi, err := os.Stat(p)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(p, fi.Size()/2))
		}, "damaged"},
		{"snapshot state corrupt", func(t *testing.T, base string) {
			p := filepath.Join(snapshotDir(t, base), "state.bin")
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			b[len(b)/2] ^= 0xff
			require.NoError(t, os.WriteFile(p, b, 0o600))
		}, "damaged"},
		{"snapshot meta truncated", func(t *testing.T, base string) {
			p := filepath.Join(snapshotDir(t, base), "meta.json")
			require.NoError(t, os.Truncate(p, 10))
		}, "damaged"},
		{"wal segment truncated", func(t *testing.T, base string) {
			segs, err := filepath.Glob(filepath.Join(base, "wal", "*.wal"))
			require.NoError(t, err)
			require.NotEmpty(t, segs)
			for _, s := range segs {
				require.NoError(t, os.Truncate(s, 0))
			}
		}, ""},
		{"wal meta db corrupt", func(t *testing.T, base string) {
			p := filepath.Join(base, "wal", "wal-meta.db")
			require.NoError(t, os.WriteFile(p, []byte("not a bolt db"), 0o600))
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, base := prepared(t)
			tc.damage(t, base)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n, err := Open(ctx, cfg, &listFSM{})
			if err == nil {
				n.Close()
			}
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), "cluster: "), err.Error())
			require.Contains(t, err.Error(), tc.want)
			t.Log(err)
		})
	}
}

func TestSecondOpenOnSameDirRefused(t *testing.T) {
	cfg := testConfig(t.TempDir())
	n := openReady(t, cfg, &listFSM{})
	defer n.Close()
	_, err := Open(context.Background(), cfg, &listFSM{})
	require.ErrorContains(t, err, "in use by another process")
}
