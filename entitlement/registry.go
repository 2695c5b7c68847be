package entitlement

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/mail"
)

// Proposer commits commands (a *cluster.Peer).
type Proposer interface {
	Propose(ctx context.Context, typ, requestID, nonce string, payload, out any) error
}

// Scope answers the scope rule and the account tree (*accounts.Registry).
type Scope interface {
	Allowed(p auth.Principal, account string, need accounts.Need) error
	Above(ancestor, account string) bool
}

// Users lists an account's users, whose admins are e-mailed (*access.Registry).
type Users interface {
	Users(ctx context.Context, account string) []access.User
}

// Mailer sends a notice (mail.Invitations: the invitations' mail path).
type Mailer interface {
	SendNotice(ctx context.Context, to string, m mail.Message) error
}

// Config configures a Registry.
type Config struct {
	Scope Scope
	Users Users  // nil: nobody is e-mailed
	Mail  Mailer // nil: nothing is e-mailed
	Log   *slog.Logger
	// MailTimeout bounds the notices of one request (default 10 s).
	MailTimeout time.Duration
	// Follower reports whether this node follows a leader (nil: never).
	// A follower looks a little longer for an id it does not know yet: it
	// may lag the node that created it by a few milliseconds.
	Follower func() bool
}

// followerWait bounds how long a follower looks for an unknown id.
const followerWait = 500 * time.Millisecond

// Registry reads the entitlement state locally and writes it through raft.
// Its methods are safe for concurrent use.
type Registry struct {
	st  *State
	p   Proposer
	cfg Config
}

// New returns the registry over st (from Register), writing through p.
func New(st *State, p Proposer, cfg Config) *Registry {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MailTimeout <= 0 {
		cfg.MailTimeout = 10 * time.Second
	}
	return &Registry{st: st, p: p, cfg: cfg}
}

// NewActivationID returns a fresh activation ID: 128 bits from crypto/rand,
// base64url (22 characters of [A-Za-z0-9_-]).
func NewActivationID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Get returns an entitlement; ErrNotFound when unknown. On a follower it
// looks again for up to followerWait before it says so.
func (reg *Registry) Get(ctx context.Context, id string) (Entitlement, error) {
	e, ok := reg.get(id)
	if ok || reg.cfg.Follower == nil || !reg.cfg.Follower() {
		if !ok {
			return Entitlement{}, fmt.Errorf("entitlement %s: %w", id, cluster.ErrNotFound)
		}
		return e, nil
	}
	ctx, cancel := context.WithTimeout(ctx, followerWait)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return Entitlement{}, fmt.Errorf("entitlement %s: %w", id, cluster.ErrNotFound)
		case <-t.C:
		}
		if e, ok := reg.get(id); ok {
			return e, nil
		}
	}
}

func (reg *Registry) get(id string) (Entitlement, bool) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	e := reg.st.Entitlements[id]
	if e == nil {
		return Entitlement{}, false
	}
	return cloneEnt(e), true
}

// List returns the entitlements whose owner keep accepts, ordered by id.
// keep is called without the state's lock held (it may take it itself:
// a second read lock could wait behind a writer and deadlock).
func (reg *Registry) List(ctx context.Context, keep func(owner string) bool) []Entitlement {
	reg.st.m.RLock()
	owners := make(map[string]string, len(reg.st.Entitlements)) // id → owner
	for id, e := range reg.st.Entitlements {
		owners[id] = e.Owner
	}
	reg.st.m.RUnlock()
	var ids []string
	kept := map[string]bool{}
	for id, owner := range owners {
		k, seen := kept[owner]
		if !seen {
			k = keep(owner)
			kept[owner] = k
		}
		if k {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := make([]Entitlement, 0, len(ids))
	for _, id := range ids {
		if e, ok := reg.get(id); ok {
			out = append(out, e)
		}
	}
	return out
}

// units returns the units activated from entitlement id, in activation order.
func (reg *Registry) units(id string) []Unit {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	out := make([]Unit, 0, len(reg.st.byEnt[id]))
	for _, u := range reg.st.byEnt[id] {
		out = append(out, *u)
	}
	return out
}

// Create creates an entitlement for a root account and e-mails its admins.
// Created is false for a retry of a creation that committed.
func (reg *Registry) Create(ctx context.Context, requestID string, actor auth.Principal, p CreateCmd) (Entitlement, bool, error) {
	p.Actor = actor.Actor()
	if err := p.validate(); err != nil {
		return Entitlement{}, false, err
	}
	id := NewActivationID()
	var r Result
	if err := reg.p.Propose(ctx, cluster.CmdCreateEntitlement, requestID, id, p, &r); err != nil {
		return Entitlement{}, false, err
	}
	created := r.Entitlement.ID == id
	if created {
		reg.notify(ctx, r.Entitlement.Owner, mail.EntitlementReceived(r.Entitlement.ID, r.Entitlement.Product, r.Entitlement.Quantity, r.Entitlement.TermMonths, ""))
	}
	return r.Entitlement, created, nil
}

// Split splits quantity units of entitlement id to account, directly below
// its owner, and e-mails the receiver's admins.
func (reg *Registry) Split(ctx context.Context, requestID string, actor auth.Principal, id, account string, quantity int) (Entitlement, bool, error) {
	if err := validQuantity(quantity); err != nil {
		return Entitlement{}, false, err
	}
	child := NewActivationID()
	var r Result
	if err := reg.p.Propose(ctx, cluster.CmdSplitEntitlement, requestID, child,
		SplitCmd{ID: id, Account: account, Quantity: quantity, Actor: actor.Actor()}, &r); err != nil {
		return Entitlement{}, false, err
	}
	created := r.Entitlement.ID == child
	if created {
		e := r.Entitlement
		reg.notify(ctx, e.Owner, mail.EntitlementReceived(e.ID, e.Product, e.Quantity, e.TermMonths, id))
	}
	return r.Entitlement, created, nil
}

// TakeBack returns split entitlement id to its parent.
func (reg *Registry) TakeBack(ctx context.Context, requestID string, actor auth.Principal, id string) (Entitlement, error) {
	var r Result
	err := reg.p.Propose(ctx, cluster.CmdReturnEntitlement, requestID, "", ReturnCmd{ID: id, Actor: actor.Actor()}, &r)
	return r.Entitlement, err
}

// Activate puts a unit of entitlement id onto each stream and e-mails the
// owner's admins.
func (reg *Registry) Activate(ctx context.Context, requestID string, actor auth.Principal, id string, streams []string) (ActivateResult, error) {
	if err := validStreams(streams); err != nil {
		return ActivateResult{}, err
	}
	var r ActivateResult
	if err := reg.p.Propose(ctx, cluster.CmdActivateEntitlement, requestID, "", ActivateCmd{ID: id, Streams: streams, Actor: actor.Actor()}, &r); err != nil {
		return ActivateResult{}, err
	}
	// A retry answered from the first attempt mails again: harmless, and
	// better than a notice lost with a dropped answer.
	ids := make([]string, len(r.Units))
	for i, u := range r.Units {
		ids[i] = u.Stream
	}
	if len(r.Units) > 0 {
		reg.notify(ctx, r.Entitlement.Owner, mail.EntitlementActivated(id, r.Entitlement.Product, ids, r.Units[0].Until))
	}
	return r, nil
}

// notify e-mails m to every admin of account, within the mail timeout; a
// failure is logged (without the address) and does not fail the request:
// the event is in the audit log either way.
func (reg *Registry) notify(ctx context.Context, account string, m mail.Message) {
	if reg.cfg.Mail == nil || reg.cfg.Users == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reg.cfg.MailTimeout)
	defer cancel()
	for _, u := range reg.cfg.Users.Users(ctx, account) {
		if u.Role != access.RoleAdmin {
			continue
		}
		if err := reg.cfg.Mail.SendNotice(ctx, u.Email, m); err != nil {
			reg.cfg.Log.Warn("entitlement: notice not sent", "account", account, "user", u.ID, "err", err)
		}
	}
}
