package meter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// joinWait bounds how long a new node keeps asking to join: long enough for
// a whole cluster started at once (the first node bootstraps and elects
// itself meanwhile), short enough that a wrong --join fails visibly.
const joinWait = 2 * time.Minute

// forwardedHeader marks a membership request already forwarded once: the
// receiver acts on it or answers 503, never forwards it again.
const forwardedHeader = "X-Vigil-Forwarded"

type clusterMetrics struct {
	forwarded       prometheus.Counter
	forwardFailures prometheus.Counter
}

func newClusterMetrics(reg prometheus.Registerer) clusterMetrics {
	m := clusterMetrics{
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_meter_forwarded_writes_total",
			Help: "Meter writes this node forwarded to the raft leader.",
		}),
		forwardFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_meter_forward_failures_total",
			Help: "Meter writes that found no reachable leader within the wait.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.forwarded, m.forwardFailures)
	}
	return m
}

// ClusterPatterns are the patterns ClusterHandler serves.
func ClusterPatterns() []string {
	return []string{
		"GET /v1/cluster",
		"POST /v1/cluster/members",
		"DELETE /v1/cluster/members/{id}",
		"POST /v1/cluster/snapshot",
		InternalApplyPattern,
	}
}

// ClusterHandler serves cluster status, membership changes (forwarded to
// the leader from any member) and the leader's internal apply endpoint.
// Mount it behind auth.Middleware: every endpoint needs the operator token.
func (m *Meter) ClusterHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cluster", m.operator(m.handleClusterStatus))
	mux.HandleFunc("POST /v1/cluster/members", m.operator(m.handleJoin))
	mux.HandleFunc("DELETE /v1/cluster/members/{id}", m.operator(m.withID(m.handleRemove)))
	mux.HandleFunc("POST /v1/cluster/snapshot", m.operator(m.handleSnapshot))
	mux.HandleFunc(InternalApplyPattern, m.operator(m.handleInternalApply))
	return mux
}

// MemberStatus is a member as GET /v1/cluster shows it.
type MemberStatus struct {
	cluster.Member
	HTTPAddress string `json:"http_address,omitempty"`
}

// LeaderStatus names the leader; empty during an election.
type LeaderStatus struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	HTTPAddress string `json:"http_address,omitempty"`
}

// ClusterStatus is GET /v1/cluster.
type ClusterStatus struct {
	NodeID       string         `json:"node_id"`
	Role         string         `json:"role"` // leader, follower, candidate
	Leader       LeaderStatus   `json:"leader"`
	Members      []MemberStatus `json:"members"`
	AppliedIndex uint64         `json:"applied_index"`
	// StateDigest (with ?digest=1) is the SHA-256 of the encoded state:
	// equal on every node that applied the same log.
	StateDigest string `json:"state_digest,omitempty"`
}

// Status reports this node's view of the cluster.
func (m *Meter) Status(withDigest bool) (ClusterStatus, error) {
	members, err := m.node.Members()
	if err != nil {
		return ClusterStatus{}, err
	}
	lid, laddr := m.node.Leader()
	st := ClusterStatus{
		NodeID:       m.node.ID(),
		Role:         strings.ToLower(m.node.State().String()),
		Leader:       LeaderStatus{ID: lid, Address: laddr, HTTPAddress: m.nodeHTTPAddr(lid)},
		Members:      make([]MemberStatus, 0, len(members)),
		AppliedIndex: m.node.AppliedIndex(),
	}
	for _, mem := range members {
		st.Members = append(st.Members, MemberStatus{Member: mem, HTTPAddress: m.nodeHTTPAddr(mem.ID)})
	}
	if withDigest {
		if st.StateDigest, err = m.StateDigest(); err != nil {
			return ClusterStatus{}, err
		}
	}
	return st, nil
}

// StateDigest hashes the replicated state as a snapshot encodes it (before
// compression). encoding/json sorts map keys, so replicas that applied the
// same log have the same digest.
func (m *Meter) StateDigest() (string, error) {
	h := sha256.New()
	m.fsm.mu.RLock()
	err := writeStateJSON(h, m.fsm.st) // json.Marshal's bytes, streamed
	m.fsm.mu.RUnlock()
	if err != nil {
		return "", fmt.Errorf("meter: digest: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (m *Meter) handleClusterStatus(w http.ResponseWriter, r *http.Request) {
	st, err := m.Status(r.URL.Query().Get("digest") == "1")
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, st)
}

// handleSnapshot takes a raft snapshot of this node's meter now, so its log
// can be compacted without waiting for the threshold (operators, tests).
func (m *Meter) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	if err := m.node.Snapshot(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"applied_index": m.node.AppliedIndex()})
}

// JoinRequest is POST /v1/cluster/members.
type JoinRequest struct {
	ID          string `json:"id"`
	Address     string `json:"address"`  // raft address
	Suffrage    string `json:"suffrage"` // voter (default) or nonvoter
	HTTPAddress string `json:"http_address,omitempty"`
}

func (m *Meter) handleJoin(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "malformed_body", "reading body: "+err.Error())
		return
	}
	var j JoinRequest
	if !decodeJSON(w, body, &j) {
		return
	}
	if j.Suffrage == "" {
		j.Suffrage = cluster.SuffrageVoter
	}
	switch {
	case !storage.ValidID(j.ID):
		httpx.WriteError(w, http.StatusBadRequest, "invalid_id", "ids are [a-zA-Z0-9_-]{1,64}")
		return
	case j.Address == "" || len(j.Address) > 256:
		httpx.WriteError(w, http.StatusBadRequest, "invalid_address", "address (the raft host:port) is required")
		return
	case j.Suffrage != cluster.SuffrageVoter && j.Suffrage != cluster.SuffrageNonvoter:
		httpx.WriteError(w, http.StatusBadRequest, "invalid_suffrage", "suffrage is voter or nonvoter")
		return
	}
	m.onLeader(w, r, body, func(ctx context.Context) (any, error) {
		if j.HTTPAddress != "" {
			// Publish the newcomer's HTTP address before it takes part, so
			// writes can be forwarded to it as soon as it could lead.
			if err := m.propose(ctx, cmdSetNode, "", "", setNode{ID: j.ID, HTTPAddr: j.HTTPAddress}, &setNode{}); err != nil {
				return nil, err
			}
		}
		if err := m.node.Join(ctx, j.ID, j.Address, j.Suffrage); err != nil {
			return nil, err
		}
		return j, nil
	})
}

func (m *Meter) handleRemove(w http.ResponseWriter, r *http.Request, id string) {
	m.onLeader(w, r, nil, func(ctx context.Context) (any, error) {
		if err := m.node.Remove(ctx, id); err != nil {
			return nil, err
		}
		return map[string]string{"removed": id}, nil
	})
}

// onLeader runs op here if this node leads, else relays the request to the
// leader, waiting through an election for up to forwardWait.
func (m *Meter) onLeader(w http.ResponseWriter, r *http.Request, body []byte, op func(context.Context) (any, error)) {
	ctx := r.Context()
	deadline := time.Now().Add(forwardWait)
	backoff := forwardBackoffMin
	var lastErr error
	for {
		if m.node.IsLeader() {
			res, err := op(ctx)
			switch {
			case err == nil:
				httpx.WriteJSON(w, http.StatusOK, res)
				return
			case errors.Is(err, cluster.ErrUnknownMember):
				httpx.WriteError(w, http.StatusNotFound, "not_found", err.Error())
				return
			case !errors.Is(err, cluster.ErrNotLeader):
				m.writeErr(w, r, err)
				return
			}
			lastErr = err
		} else if r.Header.Get(forwardedHeader) != "" {
			w.Header().Set("Retry-After", "1")
			httpx.WriteError(w, http.StatusServiceUnavailable, "not_leader", "this node is not the leader")
			return
		} else if lid, _ := m.node.Leader(); lid != "" {
			addr := m.nodeHTTPAddr(lid)
			if addr == "" {
				lastErr = fmt.Errorf("leader %s has not published its HTTP address yet", lid)
			} else {
				status, hdr, b, err := m.relay(ctx, r, addr, body)
				if err == nil && status != http.StatusServiceUnavailable {
					w.Header().Set("Content-Type", hdr.Get("Content-Type"))
					w.WriteHeader(status)
					_, _ = w.Write(b)
					return
				}
				lastErr = fmt.Errorf("relay to leader %s at %s: status %d: %v", lid, addr, status, err)
			}
		} else {
			lastErr = errors.New("no leader")
		}
		if time.Now().Add(backoff).After(deadline) || ctx.Err() != nil {
			w.Header().Set("Retry-After", "1")
			httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("no leader could take the request: %v", lastErr))
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, forwardBackoffMax)
	}
}

func (m *Meter) relay(ctx context.Context, r *http.Request, addr string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, httpURL(addr)+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+m.clusterToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forwardedHeader, "1")
	resp, err := m.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	return resp.StatusCode, resp.Header, b, err
}

// join asks the member at addr to add this node, retrying while the member
// is not up yet or the cluster has no leader.
func (m *Meter) join(ctx context.Context, addr, suffrage string) error {
	if suffrage == "" {
		suffrage = cluster.SuffrageVoter
	}
	body, _ := json.Marshal(JoinRequest{ID: m.node.ID(), Address: m.node.Addr(), Suffrage: suffrage, HTTPAddress: m.httpAddr})
	ctx, cancel := context.WithTimeout(ctx, joinWait)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		err := m.tryJoin(ctx, addr, body)
		if err == nil {
			m.log.Info("meter: joined the cluster", "via", addr, "suffrage", suffrage)
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return err
		}
		m.log.Info("meter: join not accepted yet, retrying", "via", addr, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("meter: join via %s: %w (last error: %v)", addr, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

type permanentError struct{ error }

func (m *Meter) tryJoin(ctx context.Context, addr string, body []byte) error {
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, httpURL(addr)+"/v1/cluster/members", bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Authorization", "Bearer "+m.clusterToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode >= 500:
		return fmt.Errorf("join via %s: %d: %s", addr, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return permanentError{fmt.Errorf("meter: join via %s refused: %d: %s", addr, resp.StatusCode, strings.TrimSpace(string(b)))}
}
