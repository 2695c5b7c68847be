// Package cluster runs vigil's hashicorp/raft node: stores, transport,
// bootstrap and the leader-only Apply path. The state machine itself (the
// meter) is passed in as a raft.FSM; cluster knows nothing about it.
//
// The first node of a cluster bootstraps itself as a single voter; every
// other node starts with no configuration and waits for the leader to add it
// (AddVoter, AddNonvoter; see membership.go). Commands are self-contained
// byte strings (the proposer stamps ids and times), so a caller that gets a
// *NotLeaderError from Apply can ship the same bytes to the leader.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// Raft tuning. A snapshot serialises the whole meter (every account, bridge,
// camera and stream with its settings history and the recent-request table),
// which is tens of MB at 100,000 streams, so we do not want one every few
// seconds; but every log entry since the last snapshot is replayed on
// restart, so the threshold bounds restart time. 16k small JSON commands
// replay in well under a second. TrailingLogs keeps enough entries after a
// snapshot that a follower lagging by minutes of usage updates catches up
// from the log instead of receiving a full snapshot.
const (
	defaultSnapshotThreshold = 16384
	defaultTrailingLogs      = 8192
	defaultSnapshotInterval  = 60 * time.Second
	snapshotsRetained        = 2
	defaultApplyTimeout      = 10 * time.Second
)

// ErrNotLeader is returned (wrapped in a *NotLeaderError) by Apply on a node
// that is not the leader, or that lost leadership while the command was in
// flight, in which case the command may or may not have been committed:
// retry it with the same request id.
var ErrNotLeader = errors.New("cluster: not the leader")

// NotLeaderError says who the leader is, if known, so that a caller (or a
// later forwarding layer) can send the command there.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "cluster: not the leader (no leader known)"
	}
	return fmt.Sprintf("cluster: not the leader (leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

// Unwrap makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// Config configures a node.
type Config struct {
	NodeID   string
	RaftAddr string // TCP bind address, e.g. 127.0.0.1:8300
	// Advertise is the address other nodes dial to reach this one (default
	// RaftAddr). It differs when something sits in front of the node: a
	// NAT, or the fault-injecting proxy of the partition tests.
	Advertise string
	Dir       string // the node keeps its raft state under Dir/raft
	Logger    *slog.Logger
	Bootstrap bool // bootstrap a single-voter cluster when Dir holds no raft state

	// Optional tuning; zero means the defaults above / raft's defaults.
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// HeartbeatTimeout also sets the election timeout (and half of it the
	// leader lease). raft's 1s default suits a LAN cluster; a single voter
	// (tests) may go much lower, since it waits this long before electing
	// itself.
	HeartbeatTimeout time.Duration
}

// Node is a running raft node. Its methods are safe for concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	wal   *wal.WAL
	meta  *metadb.BoltMetaDB
	lock  *os.File
	trans *raft.NetworkTransport
	snaps *raft.FileSnapshotStore
	// hadState: Open found raft state on disk (a restart, not a new node).
	hadState bool
}

// Open starts the node, bootstrapping a single-voter cluster on first start
// if cfg.Bootstrap is set. It refuses to start on damaged state (a corrupt or
// truncated snapshot, a WAL that ends before what a clean shutdown recorded)
// rather than come up with a silently smaller state.
func Open(ctx context.Context, cfg Config, fsm raft.FSM) (*Node, error) {
	if cfg.NodeID == "" || cfg.RaftAddr == "" || cfg.Dir == "" {
		return nil, errors.New("cluster: NodeID, RaftAddr and Dir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("node_id", cfg.NodeID)
	base := filepath.Join(cfg.Dir, "raft")
	walDir := filepath.Join(base, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: create %s: %w", walDir, err)
	}
	hl := newHCLogger(log, "raft", hclog.Warn)

	// bolt (the WAL's meta store) waits forever for a file lock another
	// process holds; take our own lock first and fail fast instead.
	lock, err := lockDir(base)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, lock: lock, meta: &metadb.BoltMetaDB{}}
	ok := false
	defer func() {
		if !ok {
			n.closeStores()
		}
	}()
	// raft-wal's Close leaves its meta store open, so we own it and close it.
	n.wal, err = wal.Open(walDir, wal.WithLogger(hl.Named("wal")), wal.WithMetaStore(n.meta))
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft WAL in %s: %w", walDir, err)
	}
	w := n.wal

	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(base, snapshotsRetained, hl.Named("snapshot"))
	if err != nil {
		return nil, fmt.Errorf("cluster: open snapshot store in %s: %w", base, err)
	}
	if err := checkIntegrity(base, w, n.snaps); err != nil {
		return nil, err
	}

	var adv net.Addr // nil: advertise the bound address
	if cfg.Advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("cluster: advertised raft address %q: %w", cfg.Advertise, err)
		}
		adv = a
	}
	n.trans, err = raft.NewTCPTransportWithLogger(cfg.RaftAddr, adv, 3, 10*time.Second, hl.Named("transport"))
	if err != nil {
		return nil, fmt.Errorf("cluster: listen on %s: %w", cfg.RaftAddr, err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	rc.NoLegacyTelemetry = true
	rc.SnapshotThreshold = defaultSnapshotThreshold
	rc.TrailingLogs = defaultTrailingLogs
	rc.SnapshotInterval = defaultSnapshotInterval
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
		rc.ElectionTimeout = cfg.HeartbeatTimeout
		rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	}

	existing, err := raft.HasExistingState(w, w, n.snaps)
	if err != nil {
		return nil, fmt.Errorf("cluster: inspect raft state in %s: %w", base, err)
	}
	n.hadState = existing
	if !existing && cfg.Bootstrap {
		conf := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter,
			ID:       rc.LocalID,
			Address:  n.trans.LocalAddr(),
		}}}
		if err := raft.BootstrapCluster(rc, w, w, n.snaps, n.trans, conf); err != nil {
			return nil, fmt.Errorf("cluster: bootstrap: %w", err)
		}
		log.Info("bootstrapped single-voter raft cluster", "addr", n.trans.LocalAddr())
	}

	n.raft, err = raft.NewRaft(rc, fsm, w, w, n.snaps, n.trans)
	if err != nil {
		return nil, fmt.Errorf("cluster: start raft in %s: %w", base, err)
	}
	ok = true
	return n, nil
}

// Apply commits cmd through raft and returns what the FSM's Apply returned
// for it. On a follower it returns a *NotLeaderError (ErrNotLeader). A ctx
// that ends first returns ctx's error, but the command may still commit;
// commands carry request ids so that a retry is applied at most once.
func (n *Node) Apply(ctx context.Context, cmd []byte) (any, error) {
	res, _, err := n.ApplyIndex(ctx, cmd)
	return res, err
}

// ApplyIndex is Apply that also returns the command's log index.
func (n *Node) ApplyIndex(ctx context.Context, cmd []byte) (any, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, n.notLeader()
	}
	timeout := defaultApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, 0, ctx.Err()
		}
	}
	f := n.raft.Apply(cmd, timeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case err := <-done:
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return nil, 0, n.notLeader()
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, 0, fmt.Errorf("cluster: apply: %w", context.DeadlineExceeded)
		case err != nil:
			return nil, 0, fmt.Errorf("cluster: apply: %w", err)
		}
		return f.Response(), f.Index(), nil
	}
}

func (n *Node) notLeader() error {
	addr, id := n.raft.LeaderWithID()
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
}

// Leader returns the current leader's id and raft address, empty if none is
// known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// ID returns this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Addr returns this node's raft address (useful when RaftAddr had port 0).
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// State returns the raft state: Follower, Candidate, Leader or Shutdown.
func (n *Node) State() raft.RaftState { return n.raft.State() }

// AppliedIndex returns the index of the last log entry applied to the FSM.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// CaughtUp reports whether the state machine has applied every entry in
// the local log, so that local reads reflect what this node has stored.
func (n *Node) CaughtUp() bool { return n.raft.AppliedIndex() >= n.raft.LastIndex() }

// LastCommandIndex returns the index of the newest command entry in the
// local log, 0 if none is left after compaction (configuration and no-op
// entries never reach the state machine).
func (n *Node) LastCommandIndex() uint64 {
	first, err := n.wal.FirstIndex()
	if err != nil {
		return 0
	}
	last, err := n.wal.LastIndex()
	if err != nil {
		return 0
	}
	for i := last; i >= first && i > 0; i-- {
		var l raft.Log
		if err := n.wal.GetLog(i, &l); err != nil {
			return 0
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	return 0
}

// WaitReady blocks until a leader is known and, on the leader, until every
// entry committed before Open is applied to the FSM, so that local reads see
// the state the node had before it restarted.
func (n *Node) WaitReady(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			if n.raft.State() != raft.Leader {
				return nil // a follower catches up as the leader replicates
			}
			err := n.futureErr(ctx, n.raft.Barrier(n.opTimeout(ctx)))
			if err == nil {
				return nil
			}
			// A leader that lost the election while the cluster restarts
			// waits for the next leader instead of failing the start.
			if !errors.Is(err, ErrNotLeader) {
				return fmt.Errorf("cluster: barrier: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: waiting for a leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Snapshot takes a snapshot now (operators, tests); raft also takes them on
// its own past SnapshotThreshold.
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	return nil
}

// Close stops raft and closes the stores. On a clean shutdown it records the
// applied index, so that the next Open can tell a truncated WAL from a
// normal restart.
func (n *Node) Close() error {
	var errs []error
	if err := n.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: shutdown: %w", err))
	} else if err := writeCleanShutdown(filepath.Join(n.cfg.Dir, "raft"), n.raft.AppliedIndex()); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, n.closeStores())
	return errors.Join(errs...)
}

func (n *Node) closeStores() error {
	var errs []error
	if n.trans != nil {
		if err := n.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: close transport: %w", err))
		}
	}
	if n.wal != nil {
		if err := n.wal.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: close WAL: %w", err))
		}
	}
	if n.meta != nil {
		if err := n.meta.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: close WAL meta store: %w", err))
		}
	}
	if n.lock != nil {
		_ = n.lock.Close() // releases the flock
	}
	return errors.Join(errs...)
}
