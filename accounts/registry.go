package accounts

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
)

// Proposer commits commands (a *cluster.Peer).
type Proposer interface {
	Propose(ctx context.Context, typ, requestID, nonce string, payload, out any) error
}

// Registry reads the accounts state locally and writes it through raft.
// Its methods are safe for concurrent use.
type Registry struct {
	st      *State
	p       Proposer
	log     *slog.Logger
	now     func() time.Time // expiry of a rotated bridge token on lookup
	auditor Auditor
}

// Auditor writes an event of the request path to an account's audit log
// (access.Registry: accounts cannot import access, which imports it).
type Auditor interface {
	Audit(ctx context.Context, account string, actor auth.Principal, action, target string) error
}

// SetAuditor installs the audit log of refused privacy changes. Call it
// before serving.
func (reg *Registry) SetAuditor(a Auditor) { reg.auditor = a }

var _ auth.BridgeLookup = (*Registry)(nil)

// New returns the registry over st (from Register), writing through p.
func New(st *State, p Proposer, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{st: st, p: p, log: log, now: time.Now}
}

// WithClock makes reg check the expiry of rotated bridge tokens against
// now instead of time.Now (tests) and returns reg.
func (reg *Registry) WithClock(now func() time.Time) *Registry {
	reg.now = now
	return reg
}

// --- reads: local state, no raft round trip ---

// Stream returns a live stream; ErrNotFound when unknown or deleted.
func (reg *Registry) Stream(ctx context.Context, id string) (Stream, error) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	s := reg.st.Streams[id]
	if s == nil || s.Stream.DeletedAt != nil {
		return Stream{}, fmt.Errorf("meter: stream %s: %w", id, ErrNotFound)
	}
	return cloneStream(s.Stream), nil
}

// Streams returns every live stream, ordered by id.
func (reg *Registry) Streams(ctx context.Context) ([]Stream, error) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	out := make([]Stream, 0, len(reg.st.Streams))
	for _, s := range reg.st.Streams {
		if s.Stream.DeletedAt == nil {
			out = append(out, cloneStream(s.Stream))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Camera returns a live camera; ErrNotFound when unknown or deleted.
func (reg *Registry) Camera(ctx context.Context, id string) (Camera, error) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	c := reg.st.Cameras[id]
	if c == nil || c.DeletedAt != nil {
		return Camera{}, fmt.Errorf("meter: camera %s: %w", id, ErrNotFound)
	}
	out := c.Camera
	out.Streams = slices.Clone(c.Streams)
	return out, nil
}

// Bridge returns a bridge; ErrNotFound when unknown or its account was
// deleted.
func (reg *Registry) Bridge(ctx context.Context, id string) (Bridge, error) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	b := reg.st.Bridges[id]
	if b == nil || b.DeletedAt != nil || reg.st.liveAccount(b.Account) == nil {
		return Bridge{}, fmt.Errorf("meter: bridge %s: %w", id, ErrNotFound)
	}
	return b.Bridge, nil
}

// Account returns an account; ErrNotFound when unknown or deleted.
func (reg *Registry) Account(ctx context.Context, id string) (Account, error) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	a := reg.st.liveAccount(id)
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

// BridgeDigestHA1 returns the bridge's Digest HA1 for DigestRealm, or
// ErrNotFound when the bridge is unknown, deleted or has none (created
// before Digest support; Basic still works for it).
func (reg *Registry) BridgeDigestHA1(ctx context.Context, id string) (string, error) {
	ha1s, err := reg.BridgeDigestHA1s(ctx, id)
	if err != nil {
		return "", err
	}
	return ha1s[0], nil
}

// BridgeDigestHA1s returns every Digest HA1 the bridge may answer with:
// its token's, then, during a rotation's grace, the previous token's.
// ErrNotFound as BridgeDigestHA1.
func (reg *Registry) BridgeDigestHA1s(ctx context.Context, id string) ([]string, error) {
	now := reg.now()
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	b := reg.st.Bridges[id]
	if b == nil || b.DeletedAt != nil || b.DigestHA1 == "" {
		return nil, fmt.Errorf("meter: digest of bridge %s: %w", id, ErrNotFound)
	}
	out := []string{b.DigestHA1}
	if b.Prev.valid(now) && b.Prev.DigestHA1 != "" {
		out = append(out, b.Prev.DigestHA1)
	}
	return out, nil
}

// BridgeByTokenHash implements auth.BridgeLookup: the current token of a
// live bridge, or its previous one until the rotation's grace ends.
func (reg *Registry) BridgeByTokenHash(ctx context.Context, hash string) (string, error) {
	now := reg.now()
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	id, ok := reg.st.TokenIndex[hash]
	if !ok {
		return "", auth.ErrUnknownToken
	}
	b := reg.st.Bridges[id]
	if b == nil || b.DeletedAt != nil {
		return "", auth.ErrUnknownToken
	}
	if b.Prev != nil && b.Prev.Hash == hash && !b.Prev.valid(now) {
		return "", auth.ErrUnknownToken
	}
	return id, nil
}

// What ownerOf looks up.
type ownedKind int

const (
	ownedBridge ownedKind = iota
	ownedCamera
	ownedStream
)

// ownerOf returns the account a bridge, camera or stream belongs to,
// deleted or not (a retried deletion is authorized like the first); "" when
// unknown, which is outside every user's scope.
func (reg *Registry) ownerOf(kind ownedKind, id string) string {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	switch kind {
	case ownedBridge:
		if b := reg.st.Bridges[id]; b != nil {
			return b.Account
		}
	case ownedCamera:
		if c := reg.st.Cameras[id]; c != nil {
			return c.Account
		}
	case ownedStream:
		if s := reg.st.Streams[id]; s != nil {
			return s.Stream.Account
		}
	}
	return ""
}

// accountRecord returns account id as the state holds it, deleted or not.
func (reg *Registry) accountRecord(id string) (Account, bool) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	a := reg.st.Accounts[id]
	if a == nil {
		return Account{}, false
	}
	return a.Account, true
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
func (reg *Registry) StreamRecord(ctx context.Context, id string) (StreamRecord, error) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	s := reg.st.Streams[id]
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
func (reg *Registry) CreateAccount(ctx context.Context, requestID string, a NewAccount) (AccountResult, error) {
	a.normalize()
	if err := a.validate(); err != nil {
		return AccountResult{}, err
	}
	var r AccountResult
	return r, reg.p.Propose(ctx, cluster.CmdCreateAccount, requestID, "", a, &r)
}

// UpdateAccount patches an account; actor is named in its audit log for a
// privacy change.
func (reg *Registry) UpdateAccount(ctx context.Context, requestID string, actor auth.Principal, id string, p AccountPatch) (Account, error) {
	var r Account
	return r, reg.p.Propose(ctx, cluster.CmdUpdateAccount, requestID, "", UpdateAccountCmd{ID: id, Patch: p, Actor: actor.Actor()}, &r)
}

// CreateBridge creates a bridge in account and returns its token in
// plaintext, once. The token is generated here, on the proposer, and only
// its hash and Digest HA1 travel in the command, so the plaintext exists
// only in this call's result: not in the raft log, a snapshot or the
// recent-request table. A retry of a creation that committed (same request
// id, or an identical bridge under another id) succeeds with Created false
// and no token: it was shown once already, and the bridge keeps it.
func (reg *Registry) CreateBridge(ctx context.Context, requestID, account string, b NewBridge) (BridgeResult, error) {
	if err := b.validate(); err != nil {
		return BridgeResult{}, err
	}
	token := auth.NewToken()
	var r BridgeResult
	if err := reg.p.Propose(ctx, cluster.CmdCreateBridge, requestID, bridgeNonce(b.ID, token), CreateBridgeCmd{Account: account, Bridge: b}, &r); err != nil {
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
func (reg *Registry) CreateCamera(ctx context.Context, requestID, bridge string, c NewCamera) (CameraResult, error) {
	if err := c.normalizeValidate(); err != nil {
		return CameraResult{}, err
	}
	var r CameraResult
	return r, reg.p.Propose(ctx, cluster.CmdCreateCamera, requestID, "", CreateCameraCmd{Bridge: bridge, Camera: c}, &r)
}

// UpdateStream patches a live stream's settings; the change is recorded in
// its settings history when the settings in force change.
func (reg *Registry) UpdateStream(ctx context.Context, requestID, id string, p StreamPatch) (Stream, error) {
	if err := p.normalizeValidate(); err != nil {
		return Stream{}, err
	}
	var r Stream
	return r, reg.p.Propose(ctx, cluster.CmdUpdateStream, requestID, "", UpdateStreamCmd{ID: id, Patch: p}, &r)
}

// DeleteCamera marks a camera and its streams deleted at the proposer's
// time (they stay in the meter for billing) and names the purge job that
// is to free their video. Deleting a deleted camera returns the same purge.
func (reg *Registry) DeleteCamera(ctx context.Context, requestID, id string) (DeleteResult, error) {
	var r DeleteResult
	return r, reg.p.Propose(ctx, cluster.CmdDeleteCamera, requestID, "purge-"+cluster.RandomID(), DeleteCameraCmd{ID: id}, &r)
}

// DeleteStream marks one stream deleted at the proposer's time (it stays
// in the meter for billing) and names the purge job that frees its video.
func (reg *Registry) DeleteStream(ctx context.Context, requestID, id string) (StreamDeleteResult, error) {
	var r StreamDeleteResult
	return r, reg.p.Propose(ctx, cluster.CmdDeleteStream, requestID, "purge-"+cluster.RandomID(), DeleteStreamCmd{ID: id}, &r)
}

// DeleteAccount deletes a sub-account and every camera in it; each camera
// gets a purge job.
func (reg *Registry) DeleteAccount(ctx context.Context, requestID, id string) (AccountDeleteResult, error) {
	var r AccountDeleteResult
	return r, reg.p.Propose(ctx, cluster.CmdDeleteAccount, requestID, cluster.RandomID(), DeleteAccountCmd{ID: id}, &r)
}

// --- HTTP ---
