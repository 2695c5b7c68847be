package meter

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/klauspost/compress/zstd"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/storage"
)

// The recent-request table deduplicates retried commands. It is bounded by
// count and by age (measured in proposer time, so every replica evicts the
// same entries): a client retries within seconds or minutes, not days.
const (
	defaultMaxRequests = 10_000
	defaultRequestTTL  = 24 * time.Hour
	// maxSnapshotBytes bounds decompression of a (possibly corrupt) snapshot.
	maxSnapshotBytes = 4 << 30
)

// state is the whole replicated state; it is what a snapshot holds.
// encoding/json sorts map keys, so equal states encode to equal bytes.
type state struct {
	Accounts   map[string]*accountRec `json:"accounts"`
	Bridges    map[string]*bridgeRec  `json:"bridges"`
	TokenIndex map[string]string      `json:"token_index"` // token hash → bridge id
	Cameras    map[string]*cameraRec  `json:"cameras"`
	Streams    map[string]*streamRec  `json:"streams"`
	Requests   []*requestRec          `json:"requests"`          // oldest first
	Purges     map[string]*PurgeJob   `json:"purges,omitempty"`  // purge.go
	Retired    []*retiredCamera       `json:"retired,omitempty"` // deleted cameras whose id was reused
	Leases     map[string]*leaseRec   `json:"leases,omitempty"`  // lease.go
	Applied    uint64                 `json:"applied_index"`

	// Clock is the latest proposer time applied: command times are clamped
	// to it, so the meter's time never runs backwards (usage.go).
	Clock       time.Time               `json:"clock"`
	Usage       map[string]*usageRec    `json:"usage"`           // by stream id
	AccountHist map[string]*accountHist `json:"account_history"` // by account id
	UsageStats  usageStats              `json:"usage_stats"`
	// UsageJournals is the last batch seq applied per ingest journal
	// (usage.go): a journal's batches apply once, in order, however late
	// a replay comes. One entry per ingest data directory, never per segment.
	UsageJournals map[string]uint64 `json:"usage_journals,omitempty"`
	// Nodes maps raft node id → HTTP address, so any node can forward a
	// write to the leader (forward.go).
	Nodes map[string]string `json:"nodes,omitempty"`

	reqs map[string]*requestRec // Requests by id
	// tokenResults counts Requests results that may hold a plaintext bridge
	// token (written by legacy create_bridge); derived, not serialised.
	tokenResults int
}

type accountRec struct {
	Account
	Spec string `json:"spec"` // identity of the create, for idempotent re-creates
}

type bridgeRec struct {
	Bridge
	Spec string `json:"spec"`
	// DigestHA1 is hex MD5(id ":" DigestRealm ":" token), what RTSP Digest
	// authentication needs; the token itself is never kept. Bridges created
	// before it existed have none and authenticate with Basic only.
	DigestHA1 string `json:"digest_ha1,omitempty"`
}

type cameraRec struct {
	Camera
	Spec string `json:"spec"`
}

// ownSettings are what the stream itself sets; zero means inherit.
type ownSettings struct {
	Width         int `json:"width,omitempty"`
	Height        int `json:"height,omitempty"`
	RetentionDays int `json:"retention_days,omitempty"`
}

type streamRec struct {
	Stream  Stream           `json:"stream"`
	Own     ownSettings      `json:"own"`
	History []SettingsChange `json:"history"`
	PurgeID string           `json:"purge_id,omitempty"` // set when deleted on its own (purge.go)

	usage *usageRec // st.Usage's record of this incarnation, once looked up (usageRecFor)
}

type requestRec struct {
	ID       string          `json:"id"`
	Identity string          `json:"identity"`
	At       time.Time       `json:"at"`
	Result   json.RawMessage `json:"result"`
}

func newState() *state {
	return &state{
		Accounts:   map[string]*accountRec{},
		Bridges:    map[string]*bridgeRec{},
		TokenIndex: map[string]string{},
		Cameras:    map[string]*cameraRec{},
		Streams:    map[string]*streamRec{},
		Purges:     map[string]*PurgeJob{},
		Nodes:      map[string]string{},
		reqs:       map[string]*requestRec{},
	}
}

// applyResult is what the FSM's Apply returns to the proposer.
type applyResult struct {
	Data json.RawMessage
	Err  *wireError
}

// fsm is the meter's raft.FSM. raft calls Apply, Snapshot and Restore from
// one goroutine; readers take mu.RLock and never wait on raft.
type fsm struct {
	log         *slog.Logger
	maxRequests int
	requestTTL  time.Duration

	mu sync.RWMutex
	st *state
}

var _ raft.FSM = (*fsm)(nil)

func newFSM(log *slog.Logger) *fsm {
	return &fsm{log: log, maxRequests: defaultMaxRequests, requestTTL: defaultRequestTTL, st: newState()}
}

// Apply implements raft.FSM. It must be deterministic: it reads no clock
// and iterates no map where order matters.
func (f *fsm) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applyLocked(l)
}

func (f *fsm) applyLocked(l *raft.Log) any {
	st := f.st
	st.Applied = l.Index
	c, err := decodeCommand(l.Data) // codec.go
	if err != nil {
		f.log.Error("meter: undecodable command in the log", "index", l.Index, "err", err)
		return &applyResult{Err: toWire(invalid("malformed_command", "undecodable command: %v", err))}
	}
	st.tick(&c) // usage.go
	if !c.legacy() && st.tokenResults > 0 {
		// The first versioned command drops the tokens that results of
		// legacy create_bridge entries hold: every replica does it at the
		// same index, whichever snapshot it restored.
		scrubTokens(st.Requests, false)
		st.tokenResults = 0
	}
	identity := c.identity()
	if c.RequestID != "" {
		if r := st.reqs[c.RequestID]; r != nil {
			if r.Identity != identity {
				return &applyResult{Err: toWire(conflict("idempotency_key_reused",
					"request id %q was already used for a different request", c.RequestID))}
			}
			return &applyResult{Data: r.Result}
		}
	}
	res, err := st.apply(&c)
	if err != nil {
		// Refused commands changed nothing, so they need no deduplication.
		return &applyResult{Err: toWire(err)}
	}
	st.Clock = c.Time // usage.go: tick
	data, err := json.Marshal(res)
	if err != nil {
		return &applyResult{Err: toWire(err)}
	}
	if c.RequestID != "" {
		r := &requestRec{ID: c.RequestID, Identity: identity, At: c.Time, Result: data}
		st.Requests = append(st.Requests, r)
		st.reqs[r.ID] = r
	}
	st.evictRequests(c.Time.Add(-f.requestTTL), f.maxRequests)
	return &applyResult{Data: data}
}

func (st *state) evictRequests(before time.Time, max int) {
	n := 0
	for n < len(st.Requests) && (len(st.Requests)-n > max || st.Requests[n].At.Before(before)) {
		delete(st.reqs, st.Requests[n].ID)
		n++
	}
	if n > 0 {
		st.Requests = slices.Delete(st.Requests, 0, n)
	}
}

func (st *state) apply(c *Command) (any, error) {
	dec := func(v any) error {
		if err := c.decodePayload(v); err != nil {
			return invalid("malformed_command", "%s: undecodable payload: %v", c.Type, err)
		}
		return nil
	}
	switch c.Type {
	case cmdCreateAccount:
		var p NewAccount
		if err := dec(&p); err != nil {
			return nil, err
		}
		return st.createAccount(c.Time, p, c.legacy())
	case cmdUpdateAccount:
		var p updateAccount
		if err := dec(&p); err != nil {
			return nil, err
		}
		return st.updateAccount(c.Time, p.ID, p.Patch, c.legacy())
	case cmdCreateBridge:
		var p createBridge
		if err := dec(&p); err != nil {
			return nil, err
		}
		if c.legacy() {
			return st.createBridgeV0(c.Time, p, c.Nonce)
		}
		return st.createBridge(c.Time, p, c.Nonce)
	case cmdCreateCamera:
		var p createCamera
		if err := dec(&p); err != nil {
			return nil, err
		}
		return st.createCamera(c.Time, p, c.legacy())
	case cmdUpdateStream:
		var p updateStream
		if err := dec(&p); err != nil {
			return nil, err
		}
		return st.updateStream(c.Time, p.ID, p.Patch)
	case cmdDeleteCamera:
		var p deleteCamera
		if err := dec(&p); err != nil {
			return nil, err
		}
		return st.deleteCamera(c.Time, p.ID, c.Nonce)
	case cmdSetNode:
		var p setNode
		if err := dec(&p); err != nil {
			return nil, err
		}
		return st.setNode(p)
	}
	if res, ok, err := st.applyUsage(c, dec); ok { // usage.go
		return res, err
	}
	if res, ok, err := st.applyPurge(c, dec); ok {
		return res, err
	}
	return nil, invalid("malformed_command", "unknown command type %q", c.Type)
}

func specOf(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// AccountResult is the result of CreateAccount; Created is false when an
// identical account already existed.
type AccountResult struct {
	Account Account `json:"account"`
	Created bool    `json:"created"`
}

func (st *state) createAccount(at time.Time, p NewAccount, legacy bool) (any, error) {
	p.normalize()
	if err := p.validate(); err != nil {
		return nil, err
	}
	spec := specOf(p)
	if a := st.Accounts[p.ID]; a != nil {
		if a.DeletedAt != nil && !legacy {
			// Billing history names the id, so it is never handed out again.
			return nil, conflict("deleted_id", "account %s was deleted; its id cannot be used again", p.ID)
		}
		if a.Spec != spec {
			return nil, conflict("conflict", "account %s exists with different fields", p.ID)
		}
		return AccountResult{Account: a.Account}, nil
	}
	if p.Parent != "" {
		parent := st.Accounts[p.Parent]
		if parent == nil {
			return nil, invalid("unknown_parent", "parent account %s does not exist", p.Parent)
		}
		if parent.Parent != "" {
			return nil, invalid("invalid_parent", "parent %s is a sub-account; sub-accounts belong to a reseller", p.Parent)
		}
	}
	a := &accountRec{Spec: spec, Account: Account{
		ID: p.ID, Name: p.Name, Parent: p.Parent, BillingCycle: p.BillingCycle,
		Defaults: p.Defaults, CreatedAt: at, UpdatedAt: at,
	}}
	st.Accounts[p.ID] = a
	st.recordAccount(at, &a.Account) // billing.go
	return AccountResult{Account: a.Account, Created: true}, nil
}

func patchInt(dst *int, v *int) {
	if v != nil {
		*dst = *v
	}
}

func (st *state) updateAccount(at time.Time, id string, p AccountPatch, legacy bool) (any, error) {
	cur := st.liveAccount(id)
	if legacy {
		cur = st.Accounts[id] // a deleted account took changes
	}
	if cur == nil {
		return nil, notFound("account %s not found", id)
	}
	a := cur.Account // work on a copy; commit only if valid
	if p.Name != nil {
		if err := validName(*p.Name); err != nil {
			return nil, err
		}
		a.Name = *p.Name
	}
	if p.BillingCycle != nil {
		if err := validCycle(*p.BillingCycle); err != nil {
			return nil, err
		}
		a.BillingCycle = *p.BillingCycle
	}
	if d := p.Defaults; d != nil {
		patchInt(&a.Defaults.Width, d.Width)
		patchInt(&a.Defaults.Height, d.Height)
		patchInt(&a.Defaults.RetentionDays, d.RetentionDays)
		if err := a.Defaults.validate(); err != nil {
			return nil, err
		}
	}
	if p.LockBillingSettings != nil {
		a.LockBillingSettings = *p.LockBillingSettings
	}
	if p.PrivacyModeAllowed != nil {
		a.PrivacyModeAllowed = *p.PrivacyModeAllowed
		if !a.PrivacyModeAllowed {
			a.PrivacyMode = false // the reseller withdrew it
		}
	}
	if p.PrivacyMode != nil {
		if *p.PrivacyMode && !a.PrivacyModeAllowed {
			return nil, invalid("privacy_mode_not_allowed", "privacy mode is not allowed for account %s", id)
		}
		a.PrivacyMode = *p.PrivacyMode
	}
	if p.PrivacySuspendedUntil != nil {
		t := p.PrivacySuspendedUntil.UTC()
		a.PrivacySuspendedUntil = &t
	}
	a.UpdatedAt = at
	defaultsChanged := a.Defaults != cur.Defaults
	if defaultsChanged && !legacy {
		// New defaults reach only streams added from now on: a stream
		// still following a default (added by a legacy create_camera)
		// keeps what it has, so a default change never re-bills or
		// shortens an existing stream.
		st.pinFollowers(id)
	}
	cur.Account = a
	st.recordAccount(at, &cur.Account) // billing.go
	if defaultsChanged && legacy {
		st.reresolve(at, id)
	}
	return a, nil
}

// inherits reports whether stream s is live and its settings can come from
// account's defaults (its own account or its reseller).
func (st *state) inherits(s *streamRec, account string) bool {
	if s.Stream.DeletedAt != nil {
		return false
	}
	acc := st.Accounts[s.Stream.Account]
	return acc != nil && (acc.ID == account || acc.Parent == account)
}

// pinFollowers makes the settings in force of every live stream under
// account its own. It reads only the state, so it is deterministic.
func (st *state) pinFollowers(account string) {
	for _, s := range st.Streams {
		if st.inherits(s, account) {
			pin(s)
		}
	}
}

// reresolve is what a legacy defaults change did: recompute the settings
// of the live streams under account, recording a history entry where the
// settings in force change.
func (st *state) reresolve(at time.Time, account string) {
	for _, s := range st.Streams {
		if st.inherits(s, account) {
			st.setSettings(at, s, "account_defaults")
		}
	}
}

// liveAccount returns account id unless it is unknown or deleted.
func (st *state) liveAccount(id string) *accountRec {
	if a := st.Accounts[id]; a != nil && a.DeletedAt == nil {
		return a
	}
	return nil
}

func pin(s *streamRec) {
	s.Own = ownSettings{Width: s.Stream.Width, Height: s.Stream.Height, RetentionDays: s.Stream.RetentionDays}
}

// resolve applies the defaults chain: the stream's own setting, else the
// account's default, else its reseller's, else the system's (HD1-D30).
func (st *state) resolve(own ownSettings, account string, analytics []string) StreamSettings {
	r := StreamSettings{Width: own.Width, Height: own.Height, RetentionDays: own.RetentionDays, Analytics: analytics}
	for a, depth := st.Accounts[account], 0; a != nil && depth < 2; a, depth = st.Accounts[a.Parent], depth+1 {
		if r.Width == 0 && a.Defaults.Width > 0 && a.Defaults.Height > 0 {
			r.Width, r.Height = a.Defaults.Width, a.Defaults.Height
		}
		if r.RetentionDays == 0 {
			r.RetentionDays = a.Defaults.RetentionDays
		}
		if a.Parent == "" {
			break
		}
	}
	if r.Width == 0 {
		r.Width, r.Height = DefaultWidth, DefaultHeight
	}
	if r.RetentionDays == 0 {
		r.RetentionDays = DefaultRetentionDays
	}
	return r
}

func sameSettings(a, b StreamSettings) bool {
	return a.Width == b.Width && a.Height == b.Height && a.RetentionDays == b.RetentionDays &&
		slices.Equal(a.Analytics, b.Analytics)
}

// setSettings resolves s's settings and records a history entry if the
// settings in force (the last entry) changed, so an update that changes
// nothing leaves no trace.
func (st *state) setSettings(at time.Time, s *streamRec, reason string) {
	r := st.resolve(s.Own, s.Stream.Account, s.Stream.Analytics)
	s.Stream.Width, s.Stream.Height, s.Stream.RetentionDays = r.Width, r.Height, r.RetentionDays
	if n := len(s.History); n > 0 && sameSettings(r, s.History[n-1].StreamSettings) {
		return
	}
	s.History = append(s.History, SettingsChange{At: at, Reason: reason, StreamSettings: s.Stream.Settings()})
}

// BridgeResult is the result of CreateBridge. The plaintext token is never
// in a command or a result (both are stored: raft log, snapshots, the
// recent-request table); Meter.CreateBridge adds it on the proposer that
// generated it, and only when this very attempt created the bridge
// (TokenHash is that attempt's hash).
type BridgeResult struct {
	Bridge    Bridge `json:"bridge"`
	TokenHash string `json:"token_hash,omitempty"`
	Token     string `json:"-"`
	Created   bool   `json:"created"`
}

// bridgeSecrets is what a create_bridge command's nonce carries: the token's
// hash and the Digest HA1 the proposer derived from it. Log entries written
// before carry the plaintext token itself; they are still understood.
func bridgeSecrets(bridge, nonce string) (hash, ha1 string, err error) {
	if h, d, ok := strings.Cut(nonce, ":"); ok {
		if len(h) != sha256.Size*2 || len(d) != md5.Size*2 || !isHex(h) || !isHex(d) {
			return "", "", invalid("malformed_command", "create_bridge with a malformed token hash")
		}
		return h, d, nil
	}
	if len(nonce) < 32 {
		return "", "", invalid("malformed_command", "create_bridge without a token hash")
	}
	return auth.HashToken(nonce), auth.DigestHA1(bridge, DigestRealm, nonce), nil
}

func bridgeNonce(bridge, token string) string {
	return auth.HashToken(token) + ":" + auth.DigestHA1(bridge, DigestRealm, token)
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

func (st *state) createBridge(at time.Time, p createBridge, nonce string) (any, error) {
	if err := p.Bridge.validate(); err != nil {
		return nil, err
	}
	if st.liveAccount(p.Account) == nil {
		return nil, notFound("account %s not found", p.Account)
	}
	spec := specOf(p)
	if b := st.Bridges[p.Bridge.ID]; b != nil {
		if b.Spec != spec {
			return nil, conflict("conflict", "bridge %s exists with different fields", p.Bridge.ID)
		}
		return BridgeResult{Bridge: b.Bridge}, nil
	}
	hash, ha1, err := bridgeSecrets(p.Bridge.ID, nonce)
	if err != nil {
		return nil, err
	}
	if _, dup := st.TokenIndex[hash]; dup {
		return nil, conflict("conflict", "token already in use")
	}
	b := &bridgeRec{Spec: spec, Bridge: Bridge{
		ID: p.Bridge.ID, Account: p.Account, Name: p.Bridge.Name, TokenHash: hash, CreatedAt: at,
	}, DigestHA1: ha1}
	st.Bridges[b.ID] = b
	st.TokenIndex[hash] = b.ID
	return BridgeResult{Bridge: b.Bridge, TokenHash: hash, Created: true}, nil
}

// bridgeResultV0 is a legacy create_bridge result: it held the plaintext
// token, which the first versioned command drops (scrubTokens).
type bridgeResultV0 struct {
	Bridge  Bridge `json:"bridge"`
	Token   string `json:"token,omitempty"`
	Created bool   `json:"created"`
}

// createBridgeV0 applies a legacy create_bridge (the nonce is the plaintext
// token) as it was first applied: a deleted account took new bridges.
func (st *state) createBridgeV0(at time.Time, p createBridge, token string) (any, error) {
	if err := p.Bridge.validate(); err != nil {
		return nil, err
	}
	spec := specOf(p)
	if b := st.Bridges[p.Bridge.ID]; b != nil {
		if b.Spec != spec {
			return nil, conflict("conflict", "bridge %s exists with different fields", p.Bridge.ID)
		}
		return bridgeResultV0{Bridge: b.Bridge}, nil
	}
	if st.Accounts[p.Account] == nil {
		return nil, invalid("unknown_account", "account %s does not exist", p.Account)
	}
	if len(token) < 32 {
		return nil, invalid("malformed_command", "create_bridge without a token")
	}
	hash := auth.HashToken(token)
	if _, dup := st.TokenIndex[hash]; dup {
		return nil, conflict("conflict", "token already in use")
	}
	b := &bridgeRec{Spec: spec, Bridge: Bridge{
		ID: p.Bridge.ID, Account: p.Account, Name: p.Bridge.Name, TokenHash: hash, CreatedAt: at,
	}, DigestHA1: auth.DigestHA1(p.Bridge.ID, DigestRealm, token)}
	st.Bridges[b.ID] = b
	st.TokenIndex[hash] = b.ID
	st.tokenResults++
	return bridgeResultV0{Bridge: b.Bridge, Token: token, Created: true}, nil
}

// CameraResult is the result of CreateCamera.
type CameraResult struct {
	Camera  Camera   `json:"camera"`
	Streams []Stream `json:"streams"`
	Created bool     `json:"created"`
}

func (st *state) cameraResult(c *cameraRec, created bool) CameraResult {
	r := CameraResult{Camera: c.Camera, Created: created}
	r.Camera.Streams = slices.Clone(c.Streams)
	for _, id := range c.Streams {
		r.Streams = append(r.Streams, cloneStream(st.Streams[id].Stream))
	}
	return r
}

// cameraBridge is the bridge a new camera goes under.
func (st *state) cameraBridge(id string, legacy bool) (*bridgeRec, error) {
	b := st.Bridges[id]
	if b == nil {
		return nil, invalid("unknown_bridge", "bridge %s does not exist", id)
	}
	if legacy {
		if a := st.Accounts[b.Account]; a != nil && a.DeletedAt != nil {
			return nil, invalid("deleted_account", "account %s was deleted", b.Account)
		}
		return b, nil
	}
	if st.liveAccount(b.Account) == nil {
		// The bridge went with its deleted account.
		return nil, notFound("bridge %s not found: account %s was deleted", b.ID, b.Account)
	}
	return b, nil
}

// createCamera creates a camera and its streams. A legacy create_camera
// looked at the bridge only after taking a purged camera id back (so a
// refusal could follow reuseCamera), and left its streams following the
// defaults; it still does, as it did when first applied.
func (st *state) createCamera(at time.Time, p createCamera, legacy bool) (any, error) {
	if err := p.Camera.normalizeValidate(); err != nil {
		return nil, err
	}
	var b *bridgeRec
	if !legacy {
		var err error
		if b, err = st.cameraBridge(p.Bridge, legacy); err != nil {
			return nil, err
		}
	}
	spec := specOf(p)
	if c := st.Cameras[p.Camera.ID]; c != nil {
		if c.DeletedAt == nil {
			if c.Spec != spec {
				return nil, conflict("conflict", "camera %s exists with different fields", c.ID)
			}
			return st.cameraResult(c, false), nil
		}
		if err := st.reuseCamera(c); err != nil { // purge.go
			return nil, err
		}
	}
	if legacy {
		var err error
		if b, err = st.cameraBridge(p.Bridge, legacy); err != nil {
			return nil, err
		}
	}
	for _, s := range p.Camera.Streams {
		if old := st.Streams[s.ID]; old != nil {
			return nil, conflict("conflict", "stream %s already exists (camera %s)", s.ID, old.Stream.Camera)
		}
	}
	c := &cameraRec{Spec: spec, Camera: Camera{
		ID: p.Camera.ID, Bridge: b.ID, Account: b.Account, Name: p.Camera.Name, CreatedAt: at,
	}}
	for _, ns := range p.Camera.Streams {
		s := &streamRec{Stream: Stream{
			ID: ns.ID, Camera: c.ID, Bridge: b.ID, Account: b.Account,
			Analytics: slices.Clone(ns.Analytics), RegisteredAt: at,
		}}
		if ns.Width != nil {
			s.Own.Width, s.Own.Height = *ns.Width, *ns.Height
		}
		if ns.RetentionDays != nil {
			s.Own.RetentionDays = *ns.RetentionDays
		}
		st.setSettings(at, s, "registered")
		if !legacy {
			pin(s) // the defaults in force now are the stream's own from here on
		}
		st.Streams[s.Stream.ID] = s
		c.Streams = append(c.Streams, s.Stream.ID)
	}
	st.Cameras[c.ID] = c
	return st.cameraResult(c, true), nil
}

func (st *state) updateStream(at time.Time, id string, p StreamPatch) (any, error) {
	s := st.Streams[id]
	if s == nil || s.Stream.DeletedAt != nil {
		return nil, notFound("stream %s not found", id)
	}
	if err := p.normalizeValidate(); err != nil {
		return nil, err
	}
	if p.Width != nil || p.Height != nil {
		// The own resolution is a pair: fill the side not given from the
		// settings in force.
		s.Own.Width, s.Own.Height = s.Stream.Width, s.Stream.Height
		patchInt(&s.Own.Width, p.Width)
		patchInt(&s.Own.Height, p.Height)
	}
	patchInt(&s.Own.RetentionDays, p.RetentionDays)
	if p.Analytics != nil {
		s.Stream.Analytics = slices.Clone(*p.Analytics)
		if len(s.Stream.Analytics) == 0 {
			s.Stream.Analytics = nil
		}
	}
	st.setSettings(at, s, "updated")
	return cloneStream(s.Stream), nil
}

// DeleteResult is the result of DeleteCamera.
type DeleteResult struct {
	Camera    string    `json:"camera"`
	PurgeID   string    `json:"purge"`
	DeletedAt time.Time `json:"deleted_at"`
}

func (st *state) deleteCamera(at time.Time, id, purgeID string) (any, error) {
	c := st.Cameras[id]
	if c == nil {
		return nil, notFound("camera %s not found", id)
	}
	if c.DeletedAt != nil { // deleting again is a success with the same purge
		return DeleteResult{Camera: id, PurgeID: c.PurgeID, DeletedAt: *c.DeletedAt}, nil
	}
	if !storage.ValidID(purgeID) {
		return nil, invalid("malformed_command", "delete_camera without a purge id")
	}
	t := at
	c.DeletedAt, c.PurgeID = &t, purgeID
	for _, sid := range c.Streams {
		if s := st.Streams[sid]; s.Stream.DeletedAt == nil { // a stream deleted earlier keeps its time
			s.Stream.DeletedAt = &t
		}
	}
	st.newPurge(at, c, purgeID) // purge.go
	return DeleteResult{Camera: id, PurgeID: purgeID, DeletedAt: t}, nil
}

func cloneStream(s Stream) Stream {
	s.Analytics = slices.Clone(s.Analytics)
	if s.DeletedAt != nil {
		t := *s.DeletedAt
		s.DeletedAt = &t
	}
	return s
}

// Snapshot implements raft.FSM. The state is encoded here, under the read
// lock, so the snapshot is consistent; Persist only writes bytes.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := encodeState(f.st)
	if err != nil {
		return nil, err
	}
	return fsmSnapshot(b), nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := decodeState(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	return nil
}

func encodeState(st *state) ([]byte, error) {
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("meter: encode snapshot: %w", err)
	}
	if err := writeStateJSON(enc, st); err != nil { // snapshot.go
		enc.Close()
		return nil, fmt.Errorf("meter: encode snapshot: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("meter: encode snapshot: %w", err)
	}
	return buf.Bytes(), nil
}

func decodeState(r io.Reader) (*state, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxSnapshotBytes))
	if err != nil {
		return nil, fmt.Errorf("meter: restore snapshot: %w", err)
	}
	defer dec.Close()
	st := newState()
	if err := readStateJSON(dec, st); err != nil { // snapshot.go
		return nil, fmt.Errorf("meter: restore snapshot (truncated or corrupt?): %w", err)
	}
	if st.Accounts == nil || st.Bridges == nil || st.TokenIndex == nil || st.Cameras == nil || st.Streams == nil {
		return nil, errors.New("meter: restore snapshot: state is missing sections")
	}
	for _, r := range st.Requests {
		st.reqs[r.ID] = r
	}
	if st.Purges == nil { // snapshots from before purge jobs
		st.Purges = map[string]*PurgeJob{}
	}
	// Bridge.TokenHash is not serialised with the bridge; the index holds it.
	for hash, id := range st.TokenIndex {
		b := st.Bridges[id]
		if b == nil {
			return nil, fmt.Errorf("meter: restore snapshot: token index names unknown bridge %s", id)
		}
		b.TokenHash = hash
	}
	// Restore changes nothing: a replica that restored must hold what one
	// that replayed the log holds. It only notes the legacy bridge results
	// that the next versioned command scrubs.
	st.tokenResults = scrubTokens(st.Requests, true)
	return st, nil
}

// scrubTokens drops the plaintext bridge tokens that results of legacy
// create_bridge entries hold, and returns how many it found; with count it
// only counts. Only a bridge result has both "bridge" and "token".
func scrubTokens(reqs []*requestRec, count bool) int {
	n := 0
	for _, r := range reqs {
		if !bytes.Contains(r.Result, []byte(`"token"`)) {
			continue
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(r.Result, &m) != nil || m["bridge"] == nil || m["token"] == nil {
			continue
		}
		n++
		if count {
			continue
		}
		delete(m, "token")
		if b, err := json.Marshal(m); err == nil {
			r.Result = b
		}
	}
	return n
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("meter: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() {}
