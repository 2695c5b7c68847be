package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Suffrage values as the HTTP API spells them.
const (
	SuffrageVoter    = "voter"
	SuffrageNonvoter = "nonvoter"
)

// ErrUnknownMember is returned by RemoveServer for an id not in the
// configuration.
var ErrUnknownMember = errors.New("cluster: no such member")

// Member is one server of the raft configuration.
type Member struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
}

func suffrageName(s raft.ServerSuffrage) string {
	switch s {
	case raft.Voter:
		return SuffrageVoter
	case raft.Nonvoter:
		return SuffrageNonvoter
	}
	return "staging"
}

// HadState reports whether Open found raft state on disk: the node is
// restarting rather than new, so it must not ask to join again.
func (n *Node) HadState() bool { return n.hadState }

// IsLeader reports whether this node is the leader right now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Members returns the latest raft configuration (committed or not, as raft
// uses it), ordered as raft keeps it.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("cluster: configuration: %w", err)
	}
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{ID: string(s.ID), Address: string(s.Address), Suffrage: suffrageName(s.Suffrage)})
	}
	return out, nil
}

// Join adds (or re-adds) a server. A voter counts for quorum; a nonvoter
// (an ingest-only node) receives the log as a read replica and never votes,
// so losing it costs the meter nothing. Re-adding an id with the same
// address and suffrage is harmless, so a retried join is safe. Only the
// leader can change the membership: elsewhere it returns *NotLeaderError.
func (n *Node) Join(ctx context.Context, id, addr, suffrage string) error {
	if id == "" || addr == "" {
		return errors.New("cluster: join: id and address are required")
	}
	timeout := n.opTimeout(ctx)
	var f raft.IndexFuture
	switch suffrage {
	case SuffrageVoter, "":
		f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	case SuffrageNonvoter:
		// A voter stays a voter: demoting one by a join would be a
		// surprising way to shrink the quorum.
		if m, ok := n.member(id); ok && m.Suffrage == SuffrageVoter {
			if m.Address == addr {
				return nil
			}
			f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
		} else {
			f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
		}
	default:
		return fmt.Errorf("cluster: join: suffrage %q (want %s or %s)", suffrage, SuffrageVoter, SuffrageNonvoter)
	}
	if err := n.futureErr(ctx, f); err != nil {
		return fmt.Errorf("cluster: join %s at %s: %w", id, addr, err)
	}
	n.log.Info("cluster member added", "member", id, "addr", addr, "suffrage", suffrage)
	return nil
}

// Remove takes a server out of the configuration. Removing the leader
// itself is allowed: it steps down and the rest elect a new one.
func (n *Node) Remove(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	if _, ok := n.member(id); !ok {
		return fmt.Errorf("cluster: remove %s: %w", id, ErrUnknownMember)
	}
	f := n.raft.RemoveServer(raft.ServerID(id), 0, n.opTimeout(ctx))
	if err := n.futureErr(ctx, f); err != nil {
		return fmt.Errorf("cluster: remove %s: %w", id, err)
	}
	n.log.Info("cluster member removed", "member", id)
	return nil
}

func (n *Node) member(id string) (Member, bool) {
	ms, err := n.Members()
	if err != nil {
		return Member{}, false
	}
	for _, m := range ms {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

func (n *Node) opTimeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return defaultApplyTimeout
}

// futureErr waits for f or ctx and maps leadership errors to *NotLeaderError.
func (n *Node) futureErr(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-done:
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return n.notLeader()
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return context.DeadlineExceeded
		}
		return err
	}
}
