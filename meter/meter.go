package meter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
)

// Config configures a meter node.
type Config struct {
	Dir      string // raft state goes under Dir/raft
	NodeID   string
	RaftAddr string // e.g. 127.0.0.1:8300
	Logger   *slog.Logger
	Now      func() time.Time // stamps commands on this (proposing) node; default time.Now

	// HeartbeatTimeout is passed to cluster.Config (0: raft's default).
	HeartbeatTimeout time.Duration

	// Cluster (cluster.go, forward.go). With Join empty a node with no raft
	// state bootstraps a new single-voter cluster; with Join set it asks
	// that member (any member: the request is forwarded to the leader) to
	// add it, and never bootstraps. A node restarting on existing state
	// does neither: it is already in the configuration.
	Join          string // HTTP address of any member
	Suffrage      string // cluster.SuffrageVoter (default) or cluster.SuffrageNonvoter (ingest-only)
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

// Meter is the registry: local reads from the replicated state, writes
// through raft. Its methods are safe for concurrent use.
type Meter struct {
	fsm  *fsm
	node *cluster.Node
	now  func() time.Time
	log  *slog.Logger

	httpAddr     string
	clusterToken string
	client       *http.Client
	metrics      clusterMetrics
	stop         context.CancelFunc
	advertised   chan struct{} // closed when advertiseLoop returns
}

var _ auth.BridgeLookup = (*Meter)(nil)

// Open starts the meter's raft node (a single voter, bootstrapped on first
// start) and waits until the state it had before a restart is applied.
func Open(ctx context.Context, cfg Config) (*Meter, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: time.Minute}}
	}
	m := &Meter{fsm: newFSM(cfg.Logger), now: cfg.Now, log: cfg.Logger,
		httpAddr: cfg.HTTPAddr, clusterToken: cfg.ClusterToken, client: cfg.Client,
		metrics: newClusterMetrics(cfg.Registerer)}
	n, err := cluster.Open(ctx, cluster.Config{
		NodeID: cfg.NodeID, RaftAddr: cfg.RaftAddr, Advertise: cfg.RaftAdvertise, Dir: cfg.Dir, Logger: cfg.Logger,
		Bootstrap: cfg.Join == "", HeartbeatTimeout: cfg.HeartbeatTimeout,
	}, m.fsm)
	if err != nil {
		return nil, fmt.Errorf("meter: open: %w", err)
	}
	m.node = n
	if cfg.Join != "" && !n.HadState() {
		if err := m.join(ctx, cfg.Join, cfg.Suffrage); err != nil {
			_ = n.Close()
			return nil, fmt.Errorf("meter: open: %w", err)
		}
	}
	if err := n.WaitReady(ctx); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("meter: open: %w", err)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.stop, m.advertised = cancel, make(chan struct{})
	if m.httpAddr != "" {
		go m.advertiseLoop(bg)
	} else {
		close(m.advertised)
	}
	return m, nil
}

// Close stops the raft node.
func (m *Meter) Close() error {
	m.stop()
	<-m.advertised
	return m.node.Close()
}

// Node returns the raft node (for /v1/cluster and operations).
func (m *Meter) Node() *cluster.Node { return m.node }

// --- reads: local state, no raft round trip ---

// Stream returns a live stream; ErrNotFound when unknown or deleted.
func (m *Meter) Stream(ctx context.Context, id string) (Stream, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	s := m.fsm.st.Streams[id]
	if s == nil || s.Stream.DeletedAt != nil {
		return Stream{}, fmt.Errorf("meter: stream %s: %w", id, ErrNotFound)
	}
	return cloneStream(s.Stream), nil
}

// Streams returns every live stream, ordered by id.
func (m *Meter) Streams(ctx context.Context) ([]Stream, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	out := make([]Stream, 0, len(m.fsm.st.Streams))
	for _, s := range m.fsm.st.Streams {
		if s.Stream.DeletedAt == nil {
			out = append(out, cloneStream(s.Stream))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Camera returns a live camera; ErrNotFound when unknown or deleted.
func (m *Meter) Camera(ctx context.Context, id string) (Camera, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	c := m.fsm.st.Cameras[id]
	if c == nil || c.DeletedAt != nil {
		return Camera{}, fmt.Errorf("meter: camera %s: %w", id, ErrNotFound)
	}
	out := c.Camera
	out.Streams = slices.Clone(c.Streams)
	return out, nil
}

// Bridge returns a bridge; ErrNotFound when unknown or its account was
// deleted.
func (m *Meter) Bridge(ctx context.Context, id string) (Bridge, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	b := m.fsm.st.Bridges[id]
	if b == nil || m.fsm.st.liveAccount(b.Account) == nil {
		return Bridge{}, fmt.Errorf("meter: bridge %s: %w", id, ErrNotFound)
	}
	return b.Bridge, nil
}

// Account returns an account; ErrNotFound when unknown or deleted.
func (m *Meter) Account(ctx context.Context, id string) (Account, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	a := m.fsm.st.liveAccount(id)
	if a == nil {
		return Account{}, fmt.Errorf("meter: account %s: %w", id, ErrNotFound)
	}
	out := a.Account
	if out.PrivacySuspendedUntil != nil {
		t := *out.PrivacySuspendedUntil
		out.PrivacySuspendedUntil = &t
	}
	return out, nil
}

// DigestRealm is the realm of RTSP Digest authentication.
const DigestRealm = "vigil"

// BridgeDigestHA1 returns the bridge's Digest HA1 for DigestRealm, or
// ErrNotFound when the bridge is unknown or has none (created before
// Digest support; Basic still works for it).
func (m *Meter) BridgeDigestHA1(ctx context.Context, id string) (string, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	b := m.fsm.st.Bridges[id]
	if b == nil || b.DigestHA1 == "" {
		return "", fmt.Errorf("meter: digest of bridge %s: %w", id, ErrNotFound)
	}
	return b.DigestHA1, nil
}

// BridgeByTokenHash implements auth.BridgeLookup.
func (m *Meter) BridgeByTokenHash(ctx context.Context, hash string) (string, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	id, ok := m.fsm.st.TokenIndex[hash]
	if !ok {
		return "", auth.ErrUnknownToken
	}
	return id, nil
}

// StreamRecord is the meter's view of a stream, deleted or not: settings in
// force, SKU and settings history.
type StreamRecord struct {
	Stream
	SKU     string           `json:"sku"`
	Tier    string           `json:"tier"`
	History []SettingsChange `json:"history"`
}

// StreamRecord returns the meter's record of a stream, including a deleted
// one (billing needs it); ErrNotFound only for an id never registered.
func (m *Meter) StreamRecord(ctx context.Context, id string) (StreamRecord, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	s := m.fsm.st.Streams[id]
	if s == nil {
		return StreamRecord{}, fmt.Errorf("meter: stream %s: %w", id, ErrNotFound)
	}
	r := StreamRecord{Stream: cloneStream(s.Stream), History: make([]SettingsChange, len(s.History))}
	for i, h := range s.History {
		h.Analytics = slices.Clone(h.Analytics)
		r.History[i] = h
	}
	r.SKU = SKU(r.Settings())
	r.Tier = Tier(r.Width, r.Height)
	return r, nil
}

// --- writes: through raft ---
//
// Every write takes a request id: a retry with the same id is applied at
// most once and returns the first attempt's result. An empty id gets a
// random one (no retry protection).

// CreateAccount creates an account; re-creating an identical one succeeds
// with Created false, a different one is ErrConflict.
func (m *Meter) CreateAccount(ctx context.Context, requestID string, a NewAccount) (AccountResult, error) {
	a.normalize()
	if err := a.validate(); err != nil {
		return AccountResult{}, err
	}
	var r AccountResult
	return r, m.propose(ctx, cmdCreateAccount, requestID, "", a, &r)
}

// UpdateAccount patches an account.
func (m *Meter) UpdateAccount(ctx context.Context, requestID, id string, p AccountPatch) (Account, error) {
	var r Account
	return r, m.propose(ctx, cmdUpdateAccount, requestID, "", updateAccount{ID: id, Patch: p}, &r)
}

// CreateBridge creates a bridge in account and returns its token in
// plaintext, once. The token is generated here, on the proposer, and only
// its hash and Digest HA1 travel in the command, so the plaintext exists
// only in this call's result: not in the raft log, a snapshot or the
// recent-request table. A retry of a creation that committed (same request
// id, or an identical bridge under another id) succeeds with Created false
// and no token: it was shown once already, and the bridge keeps it.
func (m *Meter) CreateBridge(ctx context.Context, requestID, account string, b NewBridge) (BridgeResult, error) {
	if err := b.validate(); err != nil {
		return BridgeResult{}, err
	}
	token := auth.NewToken()
	var r BridgeResult
	if err := m.propose(ctx, cmdCreateBridge, requestID, bridgeNonce(b.ID, token), createBridge{Account: account, Bridge: b}, &r); err != nil {
		return BridgeResult{}, err
	}
	if r.Created && r.TokenHash == auth.HashToken(token) {
		r.Token = token
	} else {
		r.Created = false // another attempt created it
	}
	r.TokenHash = ""
	return r, nil
}

// CreateCamera creates a camera with its streams under bridge.
func (m *Meter) CreateCamera(ctx context.Context, requestID, bridge string, c NewCamera) (CameraResult, error) {
	if err := c.normalizeValidate(); err != nil {
		return CameraResult{}, err
	}
	var r CameraResult
	return r, m.propose(ctx, cmdCreateCamera, requestID, "", createCamera{Bridge: bridge, Camera: c}, &r)
}

// UpdateStream patches a live stream's settings; the change is recorded in
// its settings history when the settings in force change.
func (m *Meter) UpdateStream(ctx context.Context, requestID, id string, p StreamPatch) (Stream, error) {
	if err := p.normalizeValidate(); err != nil {
		return Stream{}, err
	}
	var r Stream
	return r, m.propose(ctx, cmdUpdateStream, requestID, "", updateStream{ID: id, Patch: p}, &r)
}

// DeleteCamera marks a camera and its streams deleted at the proposer's
// time (they stay in the meter for billing) and names the purge job that
// is to free their video. Deleting a deleted camera returns the same purge.
func (m *Meter) DeleteCamera(ctx context.Context, requestID, id string) (DeleteResult, error) {
	var r DeleteResult
	return r, m.propose(ctx, cmdDeleteCamera, requestID, "purge-"+randomID(), deleteCamera{ID: id}, &r)
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (m *Meter) propose(ctx context.Context, typ, requestID, nonce string, payload, out any) error {
	if requestID == "" {
		requestID = randomID()
	}
	cmd, err := encodeCommand(typ, requestID, m.now(), nonce, payload)
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	r, err := m.applyCmd(ctx, cmd)
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	if r.Err != nil {
		return r.Err.err()
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return fmt.Errorf("meter: %s: decode result: %w", typ, err)
	}
	return nil
}

// isNotLeader reports whether err means "try the leader".
func isNotLeader(err error) bool { return errors.Is(err, cluster.ErrNotLeader) }

// Ping reports whether the meter can take writes: its raft cluster has a leader.
func (m *Meter) Ping(ctx context.Context) error {
	if id, _ := m.node.Leader(); id == "" {
		return errors.New("meter: no raft leader")
	}
	return nil
}
