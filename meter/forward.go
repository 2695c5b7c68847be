package meter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// Leader forwarding. Any node takes any write: the proposer encodes the
// command (request id, proposer time, nonce) once, and if its raft node is
// not the leader it sends those exact bytes to the leader's
// POST /v1/internal/apply. Because the bytes and the request id do not
// change between attempts, a forward whose first attempt committed but
// whose answer was lost is deduplicated by the FSM when retried.
//
// The leader's HTTP address comes from the replicated node map (state.Nodes,
// filled by every node for itself with cmdSetNode), so a forward needs no
// extra configuration and follows the leader through elections.

// InternalApplyPattern is the leader's endpoint for forwarded commands.
const InternalApplyPattern = "POST /v1/internal/apply"

const (
	cmdSetNode = "set_node"

	// forwardWait bounds how long a write waits for a leader (an election
	// takes one to two election timeouts, about 1-3 s on raft's defaults)
	// before it fails with 503 and a Retry-After.
	forwardWait       = 8 * time.Second
	forwardBackoffMin = 20 * time.Millisecond
	forwardBackoffMax = 400 * time.Millisecond
	forwardAttemptTTL = 10 * time.Second
)

type setNode struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr"`
}

func (st *state) setNode(p setNode) (any, error) {
	if !storage.ValidID(p.ID) || p.HTTPAddr == "" || len(p.HTTPAddr) > 256 {
		return nil, invalid("malformed_command", "set_node needs a node id and an HTTP address")
	}
	if st.Nodes == nil {
		st.Nodes = map[string]string{}
	}
	st.Nodes[p.ID] = p.HTTPAddr
	return p, nil
}

// nodeHTTPAddr returns the HTTP address a node recorded for itself.
func (m *Meter) nodeHTTPAddr(id string) string {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	return m.fsm.st.Nodes[id]
}

// errForward marks a forward that did not reach a leader able to answer;
// the caller may retry it (the command bytes are unchanged, so a retry is
// deduplicated if an earlier attempt committed).
var errForward = errors.New("meter: forward to leader failed")

// applyCmd commits an encoded command: locally on the leader, otherwise by
// forwarding it to the leader, waiting through an election for up to
// forwardWait. Every write path (provisioning, settings, deletion, usage)
// goes through here.
func (m *Meter) applyCmd(ctx context.Context, cmd []byte) (*applyResult, error) {
	deadline := time.Now().Add(forwardWait)
	backoff := forwardBackoffMin
	for {
		res, err := m.node.Apply(ctx, cmd)
		if err == nil {
			r, ok := res.(*applyResult)
			if !ok {
				return nil, fmt.Errorf("meter: unexpected apply result %T", res)
			}
			return r, nil
		}
		var nl *cluster.NotLeaderError
		if !errors.As(err, &nl) {
			return nil, err
		}
		lastErr := error(err)
		if nl.LeaderID != "" && nl.LeaderID != m.node.ID() {
			if addr := m.nodeHTTPAddr(nl.LeaderID); addr != "" {
				r, ferr := m.forward(ctx, addr, cmd)
				if ferr == nil {
					m.metrics.forwarded.Inc()
					return r, nil
				}
				if !errors.Is(ferr, errForward) {
					return nil, ferr
				}
				m.log.Debug("meter: forward to leader failed, retrying", "leader", nl.LeaderID, "addr", addr, "err", ferr)
				lastErr = fmt.Errorf("%w (leader %s at %s: %v)", err, nl.LeaderID, addr, ferr)
			} else {
				lastErr = fmt.Errorf("%w (leader %s has not published its HTTP address yet)", err, nl.LeaderID)
			}
		}
		if time.Now().Add(backoff).After(deadline) {
			m.metrics.forwardFailures.Inc()
			return nil, lastErr
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, forwardBackoffMax)
	}
}

// wireResult is an applyResult on the wire (internal apply responses).
type wireResult struct {
	Data json.RawMessage `json:"data,omitempty"`
	Err  *wireError      `json:"err,omitempty"`
}

// forward sends cmd to the leader at addr. A transport error, a 503 (not
// the leader any more, or an election) or a 5xx is errForward (retry); any
// other failure (e.g. 401: the nodes do not share the cluster token) is
// returned as is.
func (m *Meter) forward(ctx context.Context, addr string, cmd []byte) (*applyResult, error) {
	actx, cancel := context.WithTimeout(ctx, forwardAttemptTTL)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, httpURL(addr)+"/v1/internal/apply", bytes.NewReader(cmd))
	if err != nil {
		return nil, fmt.Errorf("meter: forward: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+m.clusterToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", errForward, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: read answer: %v", errForward, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("%w: leader answered %d: %s", errForward, resp.StatusCode, strings.TrimSpace(string(body)))
	default:
		return nil, fmt.Errorf("meter: forward to leader at %s: %d: %s", addr, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var wr wireResult
	if err := json.Unmarshal(body, &wr); err != nil {
		return nil, fmt.Errorf("meter: forward: decode leader's answer: %w", err)
	}
	return &applyResult{Data: wr.Data, Err: wr.Err}, nil
}

func httpURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimRight(addr, "/")
	}
	return "http://" + addr
}

// handleInternalApply applies a forwarded command on the leader. It never
// forwards again (no loops): on a node that is not the leader it answers 503
// and the sender looks the leader up afresh.
func (m *Meter) handleInternalApply(w http.ResponseWriter, r *http.Request) {
	cmd, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<20))
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "malformed_body", "reading body: "+err.Error())
		return
	}
	if _, err := decodeCommand(cmd); err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "malformed_command", "body is not a meter command")
		return
	}
	res, err := m.node.Apply(r.Context(), cmd)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		code := "unavailable"
		if errors.Is(err, cluster.ErrNotLeader) {
			code = "not_leader"
		}
		httpx.WriteError(w, http.StatusServiceUnavailable, code, err.Error())
		return
	}
	ar, ok := res.(*applyResult)
	if !ok {
		httpx.WriteError(w, http.StatusInternalServerError, "internal", fmt.Sprintf("unexpected apply result %T", res))
		return
	}
	httpx.WriteJSON(w, http.StatusOK, wireResult{Data: ar.Data, Err: ar.Err})
}

// advertiseLoop keeps this node's entry in the node map equal to its HTTP
// address: at start, and again whenever it differs (a restart on another
// port, a snapshot restored from before the node joined).
func (m *Meter) advertiseLoop(ctx context.Context) {
	defer close(m.advertised)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		// Compare only once the local log is replayed: right after a
		// restart the node map is still empty, and a needless set_node
		// would change the state.
		if m.node.CaughtUp() && m.nodeHTTPAddr(m.node.ID()) != m.httpAddr {
			if id, _ := m.node.Leader(); id != "" {
				err := m.propose(ctx, cmdSetNode, "", "", setNode{ID: m.node.ID(), HTTPAddr: m.httpAddr}, &setNode{})
				if err != nil && ctx.Err() == nil {
					m.log.Debug("meter: publishing the node's HTTP address", "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
