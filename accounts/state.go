package accounts

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/storage"
)

// State is the accounts section of the replicated state: accounts,
// bridges, cameras and streams with their settings history, and each
// account's cycle and defaults history (what billing evaluates).
type State struct {
	Accounts   map[string]*accountRec `json:"accounts"`
	Bridges    map[string]*bridgeRec  `json:"bridges"`
	TokenIndex map[string]string      `json:"token_index"` // token hash → bridge id
	Cameras    map[string]*cameraRec  `json:"cameras"`
	Streams    map[string]*streamRec  `json:"streams"`
	Retired    []*retiredCamera       `json:"retired,omitempty"` // deleted cameras whose id was reused
	// AccountHist is each account's billing-cycle and defaults history.
	AccountHist map[string]*accountHist `json:"account_history"`

	m          *cluster.Machine
	purges     Purges
	audit      AuditFunc  // nil: not audited
	streamHook StreamHook // nil: none (tree.go)
}

// Purges is the purge domain as deletions see it (package purge): a
// deleted camera or stream gets a job that frees its video, and a deleted
// camera's id is taken again only once its purge is done.
type Purges interface {
	// Add records a pending job purging streams of camera (all of them
	// when stream is empty, else only that one).
	Add(at time.Time, id, account, camera string, streams []string, stream string)
	// Done reports whether job id exists and is done.
	Done(id string) (exists, done bool)
}

func (st *State) reset() {
	st.Accounts = map[string]*accountRec{}
	st.Bridges = map[string]*bridgeRec{}
	st.TokenIndex = map[string]string{}
	st.Cameras = map[string]*cameraRec{}
	st.Streams = map[string]*streamRec{}
	st.Retired = nil
	st.AccountHist = nil
}

func (st *State) restored() error {
	if st.Accounts == nil || st.Bridges == nil || st.TokenIndex == nil || st.Cameras == nil || st.Streams == nil {
		return errors.New("state is missing sections")
	}
	// Bridge.TokenHash is not serialised with the bridge; the index holds
	// it, next to the previous token of a rotation in its grace.
	for hash, id := range st.TokenIndex {
		b := st.Bridges[id]
		if b == nil {
			return fmt.Errorf("token index names unknown bridge %s", id)
		}
		if b.Prev == nil || b.Prev.Hash != hash {
			b.TokenHash = hash
		}
	}
	return nil
}

var (
	invalid  = cluster.Invalid
	notFound = cluster.NotFound
	conflict = cluster.Conflict
)

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
	// Prev is the token a rotation replaced, still accepted until its
	// expiry (bridgeops.go).
	Prev *prevToken `json:"prev_token,omitempty"`
	// DeletedAt is set by delete_bridge; the record stays for the deleted
	// cameras and streams that name it, and its id is not handed out again.
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
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

	// ext is another domain's derived data for this stream incarnation
	// (the meter's usage record), kept here so that a batch entry costs
	// one map lookup; never serialised, rebuilt on demand after a restore.
	ext any
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

func (st *State) createAccount(at time.Time, p NewAccount, legacy bool) (any, error) {
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
		if st.level(&parent.Account) == LevelCustomer {
			return nil, invalid("invalid_parent", "parent %s is a sub-account; sub-accounts belong to a reseller", p.Parent)
		}
	}
	a := &accountRec{Spec: spec, Account: Account{
		ID: p.ID, Name: p.Name, Parent: p.Parent, Tier: p.Tier, BillingCycle: p.BillingCycle,
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

// UpdateAccountCmd applies an update_account written at command version
// (cluster.CommandVersion). Before CommandV2, withdrawing
// privacy_mode_allowed switched privacy mode off, a null
// privacy_suspended_until was ignored and nothing was audited; those
// entries replay so.
func (st *State) UpdateAccountCmd(at time.Time, p UpdateAccountCmd, version int) (any, error) {
	id, legacy, v2 := p.ID, version < cluster.CommandV1, version >= cluster.CommandV2
	cur := st.liveAccount(id)
	if legacy {
		cur = st.Accounts[id] // a deleted account took changes
	}
	if cur == nil {
		return nil, notFound("account %s not found", id)
	}
	a := cur.Account // work on a copy; commit only if valid
	if err := patchAccount(&a, &p.Patch, v2); err != nil {
		return nil, err
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
	if v2 {
		st.auditPrivacy(at, p.Actor, &cur.Account, &a)
	}
	cur.Account = a
	st.recordAccount(at, &cur.Account) // billing.go
	if defaultsChanged && legacy {
		st.reresolve(at, id)
	}
	return a, nil
}

// patchAccount applies p to a; v2 is the meaning of cluster.CommandV2.
func patchAccount(a *Account, p *AccountPatch, v2 bool) error {
	if p.Name != nil {
		if err := validName(*p.Name); err != nil {
			return err
		}
		a.Name = *p.Name
	}
	if p.BillingCycle != nil {
		if err := validCycle(*p.BillingCycle); err != nil {
			return err
		}
		a.BillingCycle = *p.BillingCycle
	}
	if d := p.Defaults; d != nil {
		patchInt(&a.Defaults.Width, d.Width)
		patchInt(&a.Defaults.Height, d.Height)
		patchInt(&a.Defaults.RetentionDays, d.RetentionDays)
		if err := a.Defaults.validate(); err != nil {
			return err
		}
	}
	if p.LockBillingSettings != nil {
		a.LockBillingSettings = *p.LockBillingSettings
	}
	if p.AutoActivateEntitlements != nil {
		a.AutoActivateEntitlements = *p.AutoActivateEntitlements
	}
	if p.PrivacyModeAllowed != nil {
		a.PrivacyModeAllowed = *p.PrivacyModeAllowed
		if !a.PrivacyModeAllowed && !v2 {
			a.PrivacyMode = false // before v2, withdrawing the allowance ended it
		}
	}
	if p.PrivacyMode != nil {
		if *p.PrivacyMode && !a.PrivacyModeAllowed && !(v2 && a.PrivacyMode) { // v2: keeping it on needs no allowance
			return invalid("privacy_mode_not_allowed", "privacy mode is not allowed for account %s", a.ID)
		}
		a.PrivacyMode = *p.PrivacyMode
	}
	switch u := p.PrivacySuspendedUntil; {
	case u.Time != nil:
		t := u.Time.UTC()
		a.PrivacySuspendedUntil = &t
	case u.Set && v2: // null ends the suspension
		a.PrivacySuspendedUntil = nil
	}
	return nil
}

// AuditFunc appends an entry to account's audit log as a command is
// applied. Package access installs its log (accounts cannot import access,
// which imports accounts).
type AuditFunc func(at time.Time, account, actor, action, target string)

// SetAudit installs the audit log that privacy changes are written to.
func (st *State) SetAudit(f AuditFunc) { st.audit = f }

// auditEvent writes one event to account's audit log, if one is installed.
func (st *State) auditEvent(at time.Time, account, actor, action, target string) {
	if st.audit != nil {
		st.audit(at, account, actor, action, target)
	}
}

// auditPrivacy writes what an update changed of privacy mode, its
// allowance and its suspension to the account's audit log.
func (st *State) auditPrivacy(at time.Time, actor string, was, now *Account) {
	if st.audit == nil {
		return
	}
	target := "account:" + now.ID
	if was.PrivacyModeAllowed != now.PrivacyModeAllowed {
		st.audit(at, now.ID, actor, map[bool]string{true: "privacy.allowed", false: "privacy.disallowed"}[now.PrivacyModeAllowed], target)
	}
	if was.PrivacyMode != now.PrivacyMode {
		st.audit(at, now.ID, actor, map[bool]string{true: "privacy.on", false: "privacy.off"}[now.PrivacyMode], target)
	}
	switch w, n := was.PrivacySuspendedUntil, now.PrivacySuspendedUntil; {
	case n != nil && (w == nil || !w.Equal(*n)):
		st.audit(at, now.ID, actor, "privacy.suspended", target+" until "+n.Format(time.RFC3339))
	case n == nil && w != nil:
		st.audit(at, now.ID, actor, "privacy.resumed", target)
	}
}

// inherits reports whether stream s is live and its settings can come from
// account's defaults (its own account or its reseller).
func (st *State) inherits(s *streamRec, account string) bool {
	if s.Stream.DeletedAt != nil {
		return false
	}
	return st.reaches(account, s.Stream.Account)
}

// pinFollowers makes the settings in force of every live stream under
// account its own. It reads only the state, so it is deterministic.
func (st *State) pinFollowers(account string) {
	for _, s := range st.Streams {
		if st.inherits(s, account) {
			pin(s)
		}
	}
}

// reresolve is what a legacy defaults change did: recompute the settings
// of the live streams under account, recording a history entry where the
// settings in force change.
func (st *State) reresolve(at time.Time, account string) {
	for _, s := range st.Streams {
		if st.inherits(s, account) {
			st.setSettings(at, s, "account_defaults")
		}
	}
}

// liveAccount returns account id unless it is unknown or deleted.
func (st *State) liveAccount(id string) *accountRec {
	if a := st.Accounts[id]; a != nil && a.DeletedAt == nil {
		return a
	}
	return nil
}

func pin(s *streamRec) {
	s.Own = ownSettings{Width: s.Stream.Width, Height: s.Stream.Height, RetentionDays: s.Stream.RetentionDays}
}

// resolve applies the defaults chain: the stream's own setting, else the
// account's default, else its reseller's (then its distributor's), else the
// system's (HD1-D30).
func (st *State) resolve(own ownSettings, account string, analytics []string) StreamSettings {
	r := StreamSettings{Width: own.Width, Height: own.Height, RetentionDays: own.RetentionDays, Analytics: analytics}
	for a, depth := st.Accounts[account], 0; a != nil && depth < maxDepth; a, depth = st.Accounts[a.Parent], depth+1 {
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
func (st *State) setSettings(at time.Time, s *streamRec, reason string) {
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

func (st *State) CreateBridgeCmd(at time.Time, p CreateBridgeCmd, nonce string) (any, error) {
	if err := p.Bridge.validate(); err != nil {
		return nil, err
	}
	if st.liveAccount(p.Account) == nil {
		return nil, notFound("account %s not found", p.Account)
	}
	spec := specOf(p)
	if b := st.Bridges[p.Bridge.ID]; b != nil {
		if b.DeletedAt != nil {
			// Only delete_bridge sets it, so no older log reaches here.
			return nil, conflict("deleted_id", "bridge %s was deleted; its id cannot be used again", p.Bridge.ID)
		}
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
func (st *State) createBridgeV0(at time.Time, p CreateBridgeCmd, token string) (any, error) {
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
	return bridgeResultV0{Bridge: b.Bridge, Token: token, Created: true}, nil
}

// CameraResult is the result of CreateCamera.
type CameraResult struct {
	Camera  Camera   `json:"camera"`
	Streams []Stream `json:"streams"`
	Created bool     `json:"created"`
}

func (st *State) cameraResult(c *cameraRec, created bool) CameraResult {
	r := CameraResult{Camera: c.Camera, Created: created}
	r.Camera.Streams = slices.Clone(c.Streams)
	for _, id := range c.Streams {
		r.Streams = append(r.Streams, cloneStream(st.Streams[id].Stream))
	}
	return r
}

// cameraBridge is the bridge a new camera goes under.
func (st *State) cameraBridge(id string, legacy bool) (*bridgeRec, error) {
	b := st.Bridges[id]
	if b == nil {
		return nil, invalid("unknown_bridge", "bridge %s does not exist", id)
	}
	if b.DeletedAt != nil { // only delete_bridge sets it: no older log reaches here
		return nil, notFound("bridge %s not found: it was deleted", id)
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
func (st *State) CreateCameraCmd(at time.Time, p CreateCameraCmd, legacy bool) (any, error) {
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
	if st.streamHook != nil && !legacy {
		for _, id := range c.Streams {
			st.streamHook(at, &st.Streams[id].Stream)
		}
	}
	return st.cameraResult(c, true), nil
}

func (st *State) UpdateStreamCmd(at time.Time, id string, p StreamPatch) (any, error) {
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

func (st *State) DeleteCameraCmd(at time.Time, id, purgeID string) (any, error) {
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
	st.purges.Add(at, purgeID, c.Account, c.ID, slices.Clone(c.Streams), "")
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

// retiredCamera keeps a deleted, purged camera and its streams once its id
// is re-created, so that what past billing runs need is not lost.
type retiredCamera struct {
	Camera  Camera       `json:"camera"`
	Streams []*streamRec `json:"streams"`
}

// DeleteAccountCmd is the payload of cluster.CmdDeleteAccount.
type DeleteAccountCmd struct {
	ID string `json:"id"`
}

// DeleteStreamCmd is the payload of cluster.CmdDeleteStream.
type DeleteStreamCmd struct {
	ID string `json:"id"`
}

// reuseCamera lets a deleted camera's id be created again once its purge is
// done: the old records move to Retired and the new camera starts empty.
func (st *State) reuseCamera(c *cameraRec) error {
	if _, done := st.purges.Done(c.PurgeID); !done {
		return conflict("deleted_id", "camera %s was deleted and its purge is not done yet; retry once GET /v1/purges/%s says done", c.ID, c.PurgeID)
	}
	// A stream deleted on its own before the camera has its own job, which
	// must not purge the new camera's video.
	for _, sid := range c.Streams {
		if s := st.Streams[sid]; s != nil && s.PurgeID != "" {
			if exists, done := st.purges.Done(s.PurgeID); exists && !done {
				return conflict("deleted_id", "stream %s of camera %s is still being purged; retry once GET /v1/purges/%s says done", sid, c.ID, s.PurgeID)
			}
		}
	}
	r := &retiredCamera{Camera: c.Camera}
	r.Camera.Streams = slices.Clone(c.Streams)
	for _, sid := range c.Streams {
		if s := st.Streams[sid]; s != nil && s.Stream.Camera == c.ID && s.Stream.DeletedAt != nil {
			r.Streams = append(r.Streams, s)
			delete(st.Streams, sid)
		}
	}
	st.Retired = append(st.Retired, r)
	delete(st.Cameras, c.ID)
	return nil
}

// AccountDeleteResult is the result of DeleteAccount: the purge of every
// camera the sub-account had.
type AccountDeleteResult struct {
	Account   string            `json:"account"`
	DeletedAt time.Time         `json:"deleted_at"`
	Purges    map[string]string `json:"purges"` // camera → purge id
}

// deleteAccount deletes a sub-account's cameras (each with its own purge)
// and marks the account deleted. Its cameras' video is freed by those purge
// jobs; the account, its bridges, cameras and streams stay in the state for
// billing but answer ErrNotFound from then on.
func (st *State) DeleteAccountCmd(at time.Time, id, nonce string, legacy bool) (any, error) {
	a := st.liveAccount(id)
	if legacy {
		a = st.Accounts[id] // deleting again succeeded, with the first time
	}
	if a == nil {
		// A retry of the deletion is answered from the recent-request
		// table; anything else finds nothing, as for every deleted account.
		return nil, notFound("account %s not found", id)
	}
	if st.level(&a.Account) != LevelCustomer {
		return nil, invalid("not_sub_account", "account %s is a reseller or distributor; only sub-accounts can be deleted", id)
	}
	res := AccountDeleteResult{Account: id, Purges: map[string]string{}}
	ids := make([]string, 0)
	for cid, c := range st.Cameras {
		if c.Account == id {
			ids = append(ids, cid)
		}
	}
	sort.Strings(ids) // map order must not decide anything in Apply
	for _, cid := range ids {
		c := st.Cameras[cid]
		if c.DeletedAt == nil {
			if nonce == "" {
				return nil, invalid("malformed_command", "delete_account without a purge nonce")
			}
			// One purge per camera, named from the proposer's nonce.
			if _, err := st.DeleteCameraCmd(at, cid, "purge-"+specOf(nonce + "/" + cid)[:32]); err != nil {
				return nil, err
			}
		}
		res.Purges[cid] = c.PurgeID
	}
	if a.DeletedAt == nil {
		t := at
		a.DeletedAt = &t
	}
	res.DeletedAt = *a.DeletedAt
	return res, nil
}

// StreamDeleteResult is the result of DeleteStream.
type StreamDeleteResult struct {
	Stream    string    `json:"stream"`
	Camera    string    `json:"camera"`
	PurgeID   string    `json:"purge"`
	DeletedAt time.Time `json:"deleted_at"`
}

// deleteStream deletes one stream of a live camera, with a purge job for
// that stream alone. Deleting it again, or a stream whose camera was
// deleted, returns the purge that frees it.
func (st *State) DeleteStreamCmd(at time.Time, id, purgeID string) (any, error) {
	s := st.Streams[id]
	if s == nil {
		return nil, notFound("stream %s not found", id)
	}
	if s.Stream.DeletedAt != nil {
		pid := s.PurgeID
		if c := st.Cameras[s.Stream.Camera]; pid == "" && c != nil {
			pid = c.PurgeID
		}
		return StreamDeleteResult{Stream: id, Camera: s.Stream.Camera, PurgeID: pid, DeletedAt: *s.Stream.DeletedAt}, nil
	}
	if !storage.ValidID(purgeID) {
		return nil, invalid("malformed_command", "delete_stream without a purge id")
	}
	t := at
	s.Stream.DeletedAt, s.PurgeID = &t, purgeID
	st.purges.Add(at, purgeID, s.Stream.Account, s.Stream.Camera, []string{id}, id)
	return StreamDeleteResult{Stream: id, Camera: s.Stream.Camera, PurgeID: purgeID, DeletedAt: t}, nil
}

// CycleChange is one entry of an account's billing-cycle history: the
// cycle ordered at At.
type CycleChange struct {
	At    time.Time `json:"at"`
	Cycle string    `json:"cycle"`
}

// DefaultsChange is one entry of an account's defaults history.
type DefaultsChange struct {
	At       time.Time `json:"at"`
	Defaults Defaults  `json:"defaults"`
}

type accountHist struct {
	Cycles   []CycleChange    `json:"cycles"`
	Defaults []DefaultsChange `json:"defaults"`
}

// recordAccount appends to a's cycle and defaults history what changed.
func (st *State) recordAccount(at time.Time, a *Account) {
	if st.AccountHist == nil {
		st.AccountHist = map[string]*accountHist{}
	}
	h := st.AccountHist[a.ID]
	if h == nil {
		h = &accountHist{}
		st.AccountHist[a.ID] = h
	}
	if n := len(h.Cycles); n == 0 || h.Cycles[n-1].Cycle != a.BillingCycle {
		h.Cycles = append(h.Cycles, CycleChange{At: at, Cycle: a.BillingCycle})
	}
	if n := len(h.Defaults); n == 0 || h.Defaults[n-1].Defaults != a.Defaults {
		h.Defaults = append(h.Defaults, DefaultsChange{At: at, Defaults: a.Defaults})
	}
}

// scrubToken drops the plaintext bridge token that the result of a legacy
// create_bridge entry holds, and reports whether it held one. Only a bridge
// result has both "bridge" and "token".
func scrubToken(r json.RawMessage) (json.RawMessage, bool) {
	if !bytes.Contains(r, []byte(`"token"`)) {
		return r, false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(r, &m) != nil || m["bridge"] == nil || m["token"] == nil {
		return r, false
	}
	delete(m, "token")
	if b, err := json.Marshal(m); err == nil {
		return b, true
	}
	return r, true
}

// StreamState returns stream id's record as the state holds it, deleted or
// not; nil when never registered (or retired). The caller holds the
// machine's lock and does not modify it: other domains read streams this
// way while they apply a command.
func (st *State) StreamState(id string) *Stream {
	if s := st.Streams[id]; s != nil {
		return &s.Stream
	}
	return nil
}

// StreamExt is StreamState with the stream incarnation's slot for another
// domain's derived data (see streamRec.ext); nil, nil when unknown.
func (st *State) StreamExt(id string) (*Stream, *any) {
	if s := st.Streams[id]; s != nil {
		return &s.Stream, &s.ext
	}
	return nil, nil
}

// Len counts accounts and live and deleted streams (the caller holds the
// machine's lock).
func (st *State) Len() (accounts, live, deleted int) {
	for _, r := range st.Streams {
		if r.Stream.DeletedAt != nil {
			deleted++
		} else {
			live++
		}
	}
	return len(st.Accounts), live, deleted
}

// LiveStreams calls f for every live stream (the caller holds the machine's
// lock; order is unspecified).
func (st *State) LiveStreams(f func(*Stream)) {
	for _, r := range st.Streams {
		if r.Stream.DeletedAt == nil {
			f(&r.Stream)
		}
	}
}

// EachAccount calls f for every account, deleted or not, with its billing
// cycle history (the caller holds the machine's lock).
func (st *State) EachAccount(f func(a *Account, cycles []CycleChange)) {
	for id, a := range st.Accounts {
		if h := st.AccountHist[id]; h != nil {
			f(&a.Account, h.Cycles)
		} else { // an account from before cycle history: its cycle since creation
			f(&a.Account, []CycleChange{{At: a.CreatedAt, Cycle: a.BillingCycle}})
		}
	}
}

// EachStream calls f for every stream with its settings history: live,
// deleted and retired (the caller holds the machine's lock).
func (st *State) EachStream(f func(s *Stream, history []SettingsChange)) {
	for _, s := range st.Streams {
		f(&s.Stream, s.History)
	}
	for _, r := range st.Retired {
		for _, s := range r.Streams {
			f(&s.Stream, s.History)
		}
	}
}

// StreamRec is the state's record of a stream, as State.Streams holds it.
type StreamRec = streamRec

// OwnSettings are what a stream sets itself (zero: inherit).
type OwnSettings = ownSettings
