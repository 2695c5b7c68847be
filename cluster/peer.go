package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/internal/httpx"
)

// PeerConfig configures this process's member of the cluster.
type PeerConfig struct {
	Dir      string // raft state goes under Dir/raft
	NodeID   string
	RaftAddr string // e.g. 127.0.0.1:8300
	Logger   *slog.Logger
	Now      func() time.Time // stamps commands on this (proposing) node; default time.Now

	// HeartbeatTimeout is passed to Config (0: raft's default).
	HeartbeatTimeout time.Duration

	// With Join empty a node with no raft state bootstraps a new
	// single-voter cluster; with Join set it asks that member (any member:
	// the request is forwarded to the leader) to add it, and never
	// bootstraps. A node restarting on existing state does neither: it is
	// already in the configuration.
	Join          string // HTTP address of any member
	Suffrage      string // SuffrageVoter (default) or SuffrageNonvoter (ingest-only)
	RaftAdvertise string // raft address other nodes dial (default RaftAddr)
	// HTTPAddr is this node's HTTP address as other nodes reach it; it is
	// published in the replicated node map for leader forwarding. Empty:
	// this node cannot be forwarded to (fine for a single node).
	HTTPAddr string
	// ClusterToken authenticates forwarded writes and joins (every node of
	// a cluster shares the operator token).
	ClusterToken string
	Client       *http.Client          // for forwarding; default a client with keep-alive
	Registerer   prometheus.Registerer // nil: metrics are not exported
}

// Peer is this process's member of the cluster: the raft node running the
// state machine, proposing writes (forwarded to the leader from any node)
// and serving membership over HTTP. Its methods are safe for concurrent use.
type Peer struct {
	m    *Machine
	node *Node
	now  func() time.Time
	log  *slog.Logger

	httpAddr     string
	clusterToken string
	client       *http.Client
	metrics      peerMetrics
	stop         context.CancelFunc
	advertised   chan struct{} // closed when advertiseLoop returns
}

// OpenPeer starts the raft node on machine m (a single voter, bootstrapped
// on first start, unless cfg.Join) and waits until the state it had before
// a restart is applied.
func OpenPeer(ctx context.Context, cfg PeerConfig, m *Machine) (*Peer, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: time.Minute}}
	}
	p := &Peer{m: m, now: cfg.Now, log: cfg.Logger,
		httpAddr: cfg.HTTPAddr, clusterToken: cfg.ClusterToken, client: cfg.Client,
		metrics: newPeerMetrics(cfg.Registerer)}
	n, err := Open(ctx, Config{
		NodeID: cfg.NodeID, RaftAddr: cfg.RaftAddr, Advertise: cfg.RaftAdvertise, Dir: cfg.Dir, Logger: cfg.Logger,
		Bootstrap: cfg.Join == "", HeartbeatTimeout: cfg.HeartbeatTimeout,
	}, m)
	if err != nil {
		return nil, fmt.Errorf("meter: open: %w", err)
	}
	p.node = n
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(newNodeMetrics(n, cfg.Now))
	}
	if cfg.Join != "" && !n.HadState() {
		if err := p.join(ctx, cfg.Join, cfg.Suffrage); err != nil {
			_ = n.Close()
			return nil, fmt.Errorf("meter: open: %w", err)
		}
	}
	if err := n.WaitReady(ctx); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("meter: open: %w", err)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.stop, p.advertised = cancel, make(chan struct{})
	if p.httpAddr != "" {
		go p.advertiseLoop(bg)
	} else {
		close(p.advertised)
	}
	return p, nil
}

// Close stops the raft node.
func (p *Peer) Close() error {
	p.stop()
	<-p.advertised
	return p.node.Close()
}

// Node returns the raft node.
func (p *Peer) Node() *Node { return p.node }

// Machine returns the state machine.
func (p *Peer) Machine() *Machine { return p.m }

// Now is the proposer's clock.
func (p *Peer) Now() time.Time { return p.now() }

// Ping reports whether the cluster can take writes: it has a leader.
func (p *Peer) Ping(ctx context.Context) error {
	if id, _ := p.node.Leader(); id == "" {
		return errors.New("meter: no raft leader")
	}
	return nil
}

// RandomID returns 32 random hex digits.
func RandomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Propose commits a command stamped now and decodes its result into out.
// Every write takes a request id: a retry with the same id is applied at
// most once and returns the first attempt's result. An empty id gets a
// random one (no retry protection).
func (p *Peer) Propose(ctx context.Context, typ, requestID, nonce string, payload, out any) error {
	return p.ProposeAt(ctx, p.now(), typ, requestID, nonce, payload, out)
}

// ProposeAt is Propose with an explicit proposer time (a usage batch is
// stamped with its window end, so that a retry is the same command).
func (p *Peer) ProposeAt(ctx context.Context, at time.Time, typ, requestID, nonce string, payload, out any) error {
	if requestID == "" {
		requestID = RandomID()
	}
	cmd, err := EncodeCommand(typ, requestID, at, nonce, payload)
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	return p.commit(ctx, typ, cmd, out)
}

// ProposeUnrecorded commits a command without a request id, so it is not
// recorded for deduplication: for commands that are many and safe to
// repeat (leases), which would crowd out the records of API requests. It
// keeps the form such commands always had (no version).
func (p *Peer) ProposeUnrecorded(ctx context.Context, typ string, payload, out any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	cmd, err := json.Marshal(Command{Type: typ, Time: p.now().UTC(), Payload: b})
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	return p.commit(ctx, typ, cmd, out)
}

func (p *Peer) commit(ctx context.Context, typ string, cmd []byte, out any) error {
	r, err := p.applyCmd(ctx, cmd) // forwarded to the leader from a follower
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	if err := r.Error(); err != nil {
		return err
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return fmt.Errorf("meter: %s: decode result: %w", typ, err)
	}
	return nil
}

// Leader forwarding. Any node takes any write: the proposer encodes the
// command (request id, proposer time, nonce) once, and if its raft node is
// not the leader it sends those exact bytes to the leader's
// POST /v1/internal/apply. Because the bytes and the request id do not
// change between attempts, a forward whose first attempt committed but
// whose answer was lost is deduplicated by the machine when retried.
//
// The leader's HTTP address comes from the replicated node map (filled by
// every node for itself with set_node), so a forward needs no extra
// configuration and follows the leader through elections.

// InternalApplyPattern is the leader's endpoint for forwarded commands.
const InternalApplyPattern = "POST /v1/internal/apply"

const (
	// forwardWait bounds how long a write waits for a leader (an election
	// takes one to two election timeouts, about 1-3 s on raft's defaults)
	// before it fails with 503 and a Retry-After.
	forwardWait       = 8 * time.Second
	forwardBackoffMin = 20 * time.Millisecond
	forwardBackoffMax = 400 * time.Millisecond
	forwardAttemptTTL = 10 * time.Second
)

// errForward marks a forward that did not reach a leader able to answer;
// the caller may retry it (the command bytes are unchanged, so a retry is
// deduplicated if an earlier attempt committed).
var errForward = errors.New("meter: forward to leader failed")

// applyCmd commits an encoded command: locally on the leader, otherwise by
// forwarding it to the leader, waiting through an election for up to
// forwardWait. Every write path (provisioning, settings, deletion, usage)
// goes through here.
func (p *Peer) applyCmd(ctx context.Context, cmd []byte) (*Result, error) {
	deadline := time.Now().Add(forwardWait)
	backoff := forwardBackoffMin
	for {
		res, err := p.node.Apply(ctx, cmd)
		if err == nil {
			r, ok := res.(*Result)
			if !ok {
				return nil, fmt.Errorf("meter: unexpected apply result %T", res)
			}
			return r, nil
		}
		var nl *NotLeaderError
		if !errors.As(err, &nl) {
			return nil, err
		}
		lastErr := error(err)
		if nl.LeaderID != "" && nl.LeaderID != p.node.ID() {
			if addr := p.m.NodeHTTPAddr(nl.LeaderID); addr != "" {
				r, index, ferr := p.forward(ctx, addr, cmd)
				if ferr == nil {
					p.metrics.forwarded.Inc()
					p.awaitApplied(ctx, index)
					return r, nil
				}
				if !errors.Is(ferr, errForward) {
					return nil, ferr
				}
				p.log.Debug("meter: forward to leader failed, retrying", "leader", nl.LeaderID, "addr", addr, "err", ferr)
				lastErr = fmt.Errorf("%w (leader %s at %s: %v)", err, nl.LeaderID, addr, ferr)
			} else {
				lastErr = fmt.Errorf("%w (leader %s has not published its HTTP address yet)", err, nl.LeaderID)
			}
		}
		if time.Now().Add(backoff).After(deadline) {
			p.metrics.forwardFailures.Inc()
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

// awaitApplied waits, for up to readYourWritesWait, until this node's state
// machine has applied log index i: a client that wrote through a follower
// then reads from it sees its write (a login right after an invitation's
// acceptance, a token right after its creation). The write has committed
// either way. It asks the machine, not raft: raft counts an entry applied
// when it hands it to the machine's goroutine, before the state shows it.
func (p *Peer) awaitApplied(ctx context.Context, i uint64) {
	if i == 0 || p.m.AppliedIndex() >= i {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, readYourWritesWait)
	defer cancel()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for p.m.AppliedIndex() < i {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// caughtUp reports whether the state machine shows every entry of the local
// log. raft's own test (Node.CaughtUp) passes while the machine's goroutine
// still applies the last batch it was handed.
func (p *Peer) caughtUp() bool {
	return p.node.CaughtUp() && p.m.AppliedIndex() >= p.node.LastCommandIndex()
}

// readYourWritesWait bounds awaitApplied: a follower lags the leader by
// milliseconds unless it is catching up from far behind.
const readYourWritesWait = 2 * time.Second

// wireResult is an applyResult on the wire (internal apply responses).
// Index is the command's log index (0 from a leader of an older release).
type wireResult struct {
	Data  json.RawMessage `json:"data,omitempty"`
	Err   *wireError      `json:"err,omitempty"`
	Index uint64          `json:"index,omitempty"`
}

// forward sends cmd to the leader at addr. A transport error, a 503 (not
// the leader any more, or an election) or a 5xx is errForward (retry); any
// other failure (e.g. 401: the nodes do not share the cluster token) is
// returned as is.
func (p *Peer) forward(ctx context.Context, addr string, cmd []byte) (*Result, uint64, error) {
	actx, cancel := context.WithTimeout(ctx, forwardAttemptTTL)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, httpURL(addr)+"/v1/internal/apply", bytes.NewReader(cmd))
	if err != nil {
		return nil, 0, fmt.Errorf("meter: forward: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.clusterToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, fmt.Errorf("%w: %v", errForward, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: read answer: %v", errForward, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode >= 500:
		return nil, 0, fmt.Errorf("%w: leader answered %d: %s", errForward, resp.StatusCode, strings.TrimSpace(string(body)))
	default:
		return nil, 0, fmt.Errorf("meter: forward to leader at %s: %d: %s", addr, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var wr wireResult
	if err := json.Unmarshal(body, &wr); err != nil {
		return nil, 0, fmt.Errorf("meter: forward: decode leader's answer: %w", err)
	}
	return &Result{Data: wr.Data, Err: wr.Err}, wr.Index, nil
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
func (p *Peer) handleInternalApply(w http.ResponseWriter, r *http.Request) {
	cmd, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<20))
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "malformed_body", "reading body: "+err.Error())
		return
	}
	if _, err := DecodeCommand(cmd); err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "malformed_command", "body is not a meter command")
		return
	}
	res, index, err := p.node.ApplyIndex(r.Context(), cmd)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		code := "unavailable"
		if errors.Is(err, ErrNotLeader) {
			code = "not_leader"
		}
		httpx.WriteError(w, http.StatusServiceUnavailable, code, err.Error())
		return
	}
	ar, ok := res.(*Result)
	if !ok {
		httpx.WriteError(w, http.StatusInternalServerError, "internal", fmt.Sprintf("unexpected apply result %T", res))
		return
	}
	httpx.WriteJSON(w, http.StatusOK, wireResult{Data: ar.Data, Err: ar.Err, Index: index})
}

// advertiseLoop keeps this node's entry in the node map equal to its HTTP
// address: at start, and again whenever it differs (a restart on another
// port, a snapshot restored from before the node joined).
func (p *Peer) advertiseLoop(ctx context.Context) {
	defer close(p.advertised)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		// Compare only once the local log is replayed: right after a
		// restart the node map is still empty, and a needless set_node
		// would change the state.
		if p.caughtUp() && p.m.NodeHTTPAddr(p.node.ID()) != p.httpAddr {
			if id, _ := p.node.Leader(); id != "" {
				err := p.Propose(ctx, CmdSetNode, "", "", SetNodeCmd{ID: p.node.ID(), HTTPAddr: p.httpAddr}, &SetNodeCmd{})
				if err != nil && ctx.Err() == nil {
					p.log.Debug("meter: publishing the node's HTTP address", "err", err)
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

// joinWait bounds how long a new node keeps asking to join: long enough for
// a whole cluster started at once (the first node bootstraps and elects
// itself meanwhile), short enough that a wrong --join fails visibly.
const joinWait = 2 * time.Minute

// forwardedHeader marks a membership request already forwarded once: the
// receiver acts on it or answers 503, never forwards it again.
const forwardedHeader = "X-Vigil-Forwarded"

type peerMetrics struct {
	forwarded       prometheus.Counter
	forwardFailures prometheus.Counter
}

func newPeerMetrics(reg prometheus.Registerer) peerMetrics {
	m := peerMetrics{
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
func (p *Peer) ClusterHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cluster", Operator(p.handleClusterStatus))
	mux.HandleFunc("POST /v1/cluster/members", Operator(p.handleJoin))
	mux.HandleFunc("DELETE /v1/cluster/members/{id}", Operator(WithID(p.handleRemove)))
	mux.HandleFunc("POST /v1/cluster/snapshot", Operator(p.handleSnapshot))
	mux.HandleFunc(InternalApplyPattern, Operator(p.handleInternalApply))
	return mux
}

// MemberStatus is a member as GET /v1/cluster shows it.
type MemberStatus struct {
	Member
	HTTPAddress string `json:"http_address,omitempty"`
}

// LeaderStatus names the leader; empty during an election.
type LeaderStatus struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	HTTPAddress string `json:"http_address,omitempty"`
}

// ClusterStatus is GET /v1/
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

// Status reports this node's view of the
func (p *Peer) Status(withDigest bool) (ClusterStatus, error) {
	members, err := p.node.Members()
	if err != nil {
		return ClusterStatus{}, err
	}
	lid, laddr := p.node.Leader()
	st := ClusterStatus{
		NodeID:       p.node.ID(),
		Role:         strings.ToLower(p.node.State().String()),
		Leader:       LeaderStatus{ID: lid, Address: laddr, HTTPAddress: p.m.NodeHTTPAddr(lid)},
		Members:      make([]MemberStatus, 0, len(members)),
		AppliedIndex: p.node.AppliedIndex(),
	}
	for _, mem := range members {
		st.Members = append(st.Members, MemberStatus{Member: mem, HTTPAddress: p.m.NodeHTTPAddr(mem.ID)})
	}
	if withDigest {
		if st.StateDigest, err = p.m.Digest(); err != nil {
			return ClusterStatus{}, err
		}
	}
	return st, nil
}

// StateDigest hashes the replicated state (Machine.Digest).
func (p *Peer) StateDigest() (string, error) { return p.m.Digest() }

func (p *Peer) handleClusterStatus(w http.ResponseWriter, r *http.Request) {
	st, err := p.Status(r.URL.Query().Get("digest") == "1")
	if err != nil {
		WriteError(w, r, p.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, st)
}

// handleSnapshot takes a raft snapshot of this node's meter now, so its log
// can be compacted without waiting for the threshold (operators, tests).
func (p *Peer) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	if err := p.node.Snapshot(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		WriteError(w, r, p.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"applied_index": p.node.AppliedIndex()})
}

// JoinRequest is POST /v1/cluster/members.
type JoinRequest struct {
	ID          string `json:"id"`
	Address     string `json:"address"`  // raft address
	Suffrage    string `json:"suffrage"` // voter (default) or nonvoter
	HTTPAddress string `json:"http_address,omitempty"`
}

func (p *Peer) handleJoin(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "malformed_body", "reading body: "+err.Error())
		return
	}
	var j JoinRequest
	if !DecodeJSON(w, body, &j) {
		return
	}
	if j.Suffrage == "" {
		j.Suffrage = SuffrageVoter
	}
	switch {
	case !validID(j.ID):
		httpx.WriteError(w, http.StatusBadRequest, "invalid_id", "ids are [a-zA-Z0-9_-]{1,64}")
		return
	case j.Address == "" || len(j.Address) > 256:
		httpx.WriteError(w, http.StatusBadRequest, "invalid_address", "address (the raft host:port) is required")
		return
	case j.Suffrage != SuffrageVoter && j.Suffrage != SuffrageNonvoter:
		httpx.WriteError(w, http.StatusBadRequest, "invalid_suffrage", "suffrage is voter or nonvoter")
		return
	}
	p.onLeader(w, r, body, func(ctx context.Context) (any, error) {
		if j.HTTPAddress != "" {
			// Publish the newcomer's HTTP address before it takes part, so
			// writes can be forwarded to it as soon as it could lead.
			if err := p.Propose(ctx, CmdSetNode, "", "", SetNodeCmd{ID: j.ID, HTTPAddr: j.HTTPAddress}, &SetNodeCmd{}); err != nil {
				return nil, err
			}
		}
		if err := p.node.Join(ctx, j.ID, j.Address, j.Suffrage); err != nil {
			return nil, err
		}
		return j, nil
	})
}

func (p *Peer) handleRemove(w http.ResponseWriter, r *http.Request, id string) {
	p.onLeader(w, r, nil, func(ctx context.Context) (any, error) {
		if err := p.node.Remove(ctx, id); err != nil {
			return nil, err
		}
		return map[string]string{"removed": id}, nil
	})
}

// onLeader runs op here if this node leads, else relays the request to the
// leader, waiting through an election for up to forwardWait.
func (p *Peer) onLeader(w http.ResponseWriter, r *http.Request, body []byte, op func(context.Context) (any, error)) {
	ctx := r.Context()
	deadline := time.Now().Add(forwardWait)
	backoff := forwardBackoffMin
	var lastErr error
	for {
		if p.node.IsLeader() {
			res, err := op(ctx)
			switch {
			case err == nil:
				httpx.WriteJSON(w, http.StatusOK, res)
				return
			case errors.Is(err, ErrUnknownMember):
				httpx.WriteError(w, http.StatusNotFound, "not_found", err.Error())
				return
			case !errors.Is(err, ErrNotLeader):
				WriteError(w, r, p.log, err)
				return
			}
			lastErr = err
		} else if r.Header.Get(forwardedHeader) != "" {
			w.Header().Set("Retry-After", "1")
			httpx.WriteError(w, http.StatusServiceUnavailable, "not_leader", "this node is not the leader")
			return
		} else if lid, _ := p.node.Leader(); lid != "" {
			addr := p.m.NodeHTTPAddr(lid)
			if addr == "" {
				lastErr = fmt.Errorf("leader %s has not published its HTTP address yet", lid)
			} else {
				status, hdr, b, err := p.relay(ctx, r, addr, body)
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

func (p *Peer) relay(ctx context.Context, r *http.Request, addr string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, httpURL(addr)+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.clusterToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forwardedHeader, "1")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	return resp.StatusCode, resp.Header, b, err
}

// join asks the member at addr to add this node, retrying while the member
// is not up yet or the cluster has no leader.
func (p *Peer) join(ctx context.Context, addr, suffrage string) error {
	if suffrage == "" {
		suffrage = SuffrageVoter
	}
	body, _ := json.Marshal(JoinRequest{ID: p.node.ID(), Address: p.node.Addr(), Suffrage: suffrage, HTTPAddress: p.httpAddr})
	ctx, cancel := context.WithTimeout(ctx, joinWait)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		err := p.tryJoin(ctx, addr, body)
		if err == nil {
			p.log.Info("meter: joined the cluster", "via", addr, "suffrage", suffrage)
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return err
		}
		p.log.Info("meter: join not accepted yet, retrying", "via", addr, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("meter: join via %s: %w (last error: %v)", addr, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

type permanentError struct{ error }

func (p *Peer) tryJoin(ctx context.Context, addr string, body []byte) error {
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, httpURL(addr)+"/v1/cluster/members", bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Authorization", "Bearer "+p.clusterToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
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
