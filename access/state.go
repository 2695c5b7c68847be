// Package access holds who may do what: users of accounts with their
// invitations, sessions and API tokens, the billing system's tokens, and
// each account's append-only audit log. It is a domain of the replicated
// state machine (package cluster), so a removed user or a revoked token is
// refused on every node as soon as the change is applied there.
//
// Secrets never enter the state: tokens (session, API, billing,
// invitation) are stored as their SHA-256 (they carry 256 random bits),
// passwords as argon2id hashes computed by the proposer.
package access

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/storage"
)

// Roles of a user in its account.
const (
	RoleAdmin = accounts.RoleAdmin // manages the users and settings of accounts in its scope
	RoleUser  = "user"             // reads and watches
)

// Token kinds.
const (
	KindSession = "session" // from POST /v1/sessions; expires
	KindAPI     = "api"     // a user's named token; until revoked
	KindBilling = "billing" // the billing system's: meter and billing endpoints only
)

// InvitationTTL is how long an invitation's link works.
const InvitationTTL = 48 * time.Hour

// User is a person with a role in one account.
type User struct {
	ID          string     `json:"id"`
	Account     string     `json:"account"`
	Email       string     `json:"email"`
	Role        string     `json:"role"`
	CreatedAt   time.Time  `json:"created_at"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	// Delegated: created by a user of another account (the reseller), so
	// privacy mode counts it as the reseller's. The operator's and the
	// account's own admins' users are not delegated.
	Delegated bool `json:"delegated,omitempty"`
}

// Active reports whether the user has set a password.
func (u User) Active() bool { return u.ActivatedAt != nil }

// Token is a bearer token as listed: never the secret itself.
type Token struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	Name      string     `json:"name,omitempty"`
	User      string     `json:"user,omitempty"` // empty for billing tokens
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// AuditEntry is one line of an account's audit log.
type AuditEntry struct {
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`  // "operator", "user:<id>", "billing:<token id>", "bridge:<id>"
	Action string    `json:"action"` // e.g. user.created, token.revoked, privacy.refused
	Target string    `json:"target,omitempty"`
}

type userRec struct {
	User
	PasswordHash string      `json:"password_hash,omitempty"` // argon2id, PHC string
	Invitation   *invitation `json:"invitation,omitempty"`
}

type invitation struct {
	Hash      string     `json:"hash"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
}

type tokenRec struct {
	Token
	Account string `json:"account,omitempty"` // the user's, for the audit log
}

// State is the access section of the replicated state. Every field is
// omitted when empty, so a state from before access control keeps its
// digest.
type State struct {
	Users       map[string]*userRec     `json:"users,omitempty"`       // by user id
	Emails      map[string]string       `json:"user_emails,omitempty"` // normalised e-mail → user id
	Invitations map[string]string       `json:"invitations,omitempty"` // invitation token hash → user id
	Tokens      map[string]*tokenRec    `json:"tokens,omitempty"`      // token hash → token
	Audit       map[string][]AuditEntry `json:"audit,omitempty"`       // by account, oldest first

	m        *cluster.Machine
	accounts *accounts.State
	byID     map[string]string // token id → hash; derived from Tokens
}

func (st *State) reset() {
	st.Users, st.Emails, st.Invitations, st.Tokens, st.Audit = nil, nil, nil, nil, nil
	st.byID = map[string]string{}
}

func (st *State) restored() error {
	for h, t := range st.Tokens {
		st.byID[t.ID] = h
	}
	return nil
}

// NormalizeEmail trims an e-mail and lowers its case: e-mails are unique
// across every account in that form.
func NormalizeEmail(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

func validEmail(e string) bool {
	at := strings.IndexByte(e, '@')
	return len(e) <= 254 && at > 0 && at < len(e)-1 && !strings.ContainsAny(e, " \t\r\n<>,;\"")
}

// CreateUserCmd is the payload of cluster.CmdCreateUser. The nonce is
// "<user id>:<invitation token hash>", both made by the proposer: a retry
// carries new ones and is answered with the first attempt's result.
type CreateUserCmd struct {
	Account string `json:"account"`
	Email   string `json:"email"`
	Role    string `json:"role"`
	Actor   string `json:"actor"`
}

// UserResult is the result of creating a user. The invitation's plaintext
// token is added by the proposer that generated it (Registry.CreateUser).
type UserResult struct {
	User              User      `json:"user"`
	InvitationExpires time.Time `json:"invitation_expires_at"`
	// InvitationHash tells the proposer whether this attempt created the
	// user (its token's hash), as a retry answered from the first attempt
	// carries another; a follower may not have applied the command yet
	// when the leader answers.
	InvitationHash string `json:"invitation_hash"`
	Created        bool   `json:"created"`
}

// splitNonce splits an "<id>:<hash>" nonce.
func splitNonce(nonce string) (id, hash string, ok bool) {
	id, hash, ok = strings.Cut(nonce, ":")
	return id, hash, ok && storage.ValidID(id) && len(hash) == 64
}

func (st *State) createUser(at time.Time, p CreateUserCmd, nonce string) (any, error) {
	email := NormalizeEmail(p.Email)
	id, hash, ok := splitNonce(nonce)
	switch {
	case !ok:
		return nil, cluster.Invalid("malformed_command", "create_user without a valid user id")
	case !validEmail(email):
		return nil, cluster.Invalid("invalid_email", "e-mail %q is not an address", p.Email)
	case p.Role != RoleAdmin && p.Role != RoleUser:
		return nil, cluster.Invalid("invalid_role", "role is admin or user")
	}
	if a := st.accounts.Accounts[p.Account]; a == nil || a.DeletedAt != nil {
		return nil, cluster.NotFound("account %s not found", p.Account)
	}
	if id, taken := st.Emails[email]; taken {
		return nil, cluster.Conflict("email_taken", "e-mail %s belongs to another user (%s)", email, id)
	}
	if st.Users[id] != nil {
		return nil, cluster.Conflict("conflict", "user %s exists", id)
	}
	if st.Users == nil {
		st.Users, st.Emails, st.Invitations = map[string]*userRec{}, map[string]string{}, map[string]string{}
	}
	delegated := false
	if creator, ok := strings.CutPrefix(p.Actor, "user:"); ok {
		c := st.Users[creator]
		// A creator removed since the command was proposed counts as an
		// outsider: the safe side for privacy mode.
		delegated = c == nil || c.Account != p.Account || c.Delegated
	}
	u := &userRec{User: User{ID: id, Account: p.Account, Email: email, Role: p.Role, CreatedAt: at, Delegated: delegated},
		Invitation: &invitation{Hash: hash, ExpiresAt: at.Add(InvitationTTL)}}
	st.Users[u.ID], st.Emails[email], st.Invitations[hash] = u, u.ID, u.ID
	st.audit(at, p.Account, p.Actor, "user.invited", "user:"+u.ID)
	return UserResult{User: u.User, InvitationExpires: u.Invitation.ExpiresAt, InvitationHash: hash, Created: true}, nil
}

// AcceptCmd is the payload of cluster.CmdAcceptInvitation: the invitation
// token's hash and the password's argon2id hash.
type AcceptCmd struct {
	Invitation   string `json:"invitation"`
	PasswordHash string `json:"password_hash"`
}

func (st *State) accept(at time.Time, p AcceptCmd) (any, error) {
	id, ok := st.Invitations[p.Invitation]
	u := st.Users[id]
	if !ok || u == nil || u.Invitation == nil || u.Invitation.Hash != p.Invitation {
		return nil, cluster.NotFound("invitation not found")
	}
	if u.Invitation.UsedAt != nil {
		return nil, cluster.Conflict("invitation_used", "the invitation was used already")
	}
	if !at.Before(u.Invitation.ExpiresAt) {
		return nil, cluster.Invalid("invitation_expired", "the invitation expired at %s", u.Invitation.ExpiresAt.Format(time.RFC3339))
	}
	if !strings.HasPrefix(p.PasswordHash, "$argon2id$") {
		return nil, cluster.Invalid("malformed_command", "accept_invitation without a password hash")
	}
	t := at
	u.Invitation.UsedAt, u.ActivatedAt, u.PasswordHash = &t, &t, p.PasswordHash
	delete(st.Invitations, p.Invitation)
	st.audit(at, u.Account, "user:"+u.ID, "user.activated", "user:"+u.ID)
	return u.User, nil
}

// RemoveUserCmd is the payload of cluster.CmdRemoveUser.
type RemoveUserCmd struct {
	ID    string `json:"id"`
	Actor string `json:"actor"`
}

// removeUser deletes a user with its invitation and every token: they are
// refused from the index of the command on, on every node.
func (st *State) removeUser(at time.Time, p RemoveUserCmd) (any, error) {
	u := st.Users[p.ID]
	if u == nil {
		return nil, cluster.NotFound("user %s not found", p.ID)
	}
	for h, t := range st.Tokens {
		if t.User == u.ID {
			delete(st.Tokens, h)
			delete(st.byID, t.ID)
		}
	}
	if u.Invitation != nil {
		delete(st.Invitations, u.Invitation.Hash)
	}
	delete(st.Emails, u.Email)
	delete(st.Users, u.ID)
	st.audit(at, u.Account, p.Actor, "user.removed", "user:"+u.ID)
	return u.User, nil
}

// CreateTokenCmd is the payload of cluster.CmdCreateToken; the nonce is
// "<token id>:<token hash>", made by the proposer.
type CreateTokenCmd struct {
	Kind  string `json:"kind"`
	Name  string `json:"name,omitempty"`
	User  string `json:"user,omitempty"`
	TTLMS int64  `json:"ttl_ms,omitempty"` // sessions: their lifetime
	Actor string `json:"actor"`
}

func (st *State) createToken(at time.Time, p CreateTokenCmd, nonce string) (any, error) {
	id, hash, ok := splitNonce(nonce)
	if !ok || len(p.Name) > 128 {
		return nil, cluster.Invalid("malformed_command", "create_token needs an id, a token hash and a name of at most 128 bytes")
	}
	t := &tokenRec{Token: Token{ID: id, Kind: p.Kind, Name: p.Name, User: p.User, CreatedAt: at}}
	switch p.Kind {
	case KindSession, KindAPI:
		u := st.Users[p.User]
		if u == nil || !u.Active() {
			return nil, cluster.NotFound("user %s not found", p.User)
		}
		t.Account = u.Account
	case KindBilling:
		if p.User != "" {
			return nil, cluster.Invalid("malformed_command", "a billing token belongs to no user")
		}
	default:
		return nil, cluster.Invalid("invalid_kind", "token kind is session, api or billing")
	}
	if p.Kind == KindSession {
		if p.TTLMS <= 0 {
			return nil, cluster.Invalid("malformed_command", "a session needs a lifetime")
		}
		e := at.Add(time.Duration(p.TTLMS) * time.Millisecond)
		t.ExpiresAt = &e
	}
	if _, dup := st.Tokens[hash]; dup {
		return nil, cluster.Conflict("conflict", "token already in use")
	}
	if st.Tokens == nil {
		st.Tokens = map[string]*tokenRec{}
	}
	st.Tokens[hash] = t
	st.byID[t.ID] = hash
	if p.Kind != KindSession { // sessions are many; logins are not what the audit log is for
		st.audit(at, t.Account, p.Actor, "token.created", "token:"+t.ID)
	}
	return TokenResult{Token: t.Token, Hash: hash}, nil
}

// TokenResult is the result of creating a token; Hash tells the proposer
// whether this attempt created it (see UserResult).
type TokenResult struct {
	Token
	Hash string `json:"hash"`
}

// RevokeTokenCmd is the payload of cluster.CmdRevokeToken.
type RevokeTokenCmd struct {
	ID    string `json:"id"`
	User  string `json:"user,omitempty"` // when set, only that user's token
	Actor string `json:"actor"`
}

func (st *State) revokeToken(at time.Time, p RevokeTokenCmd) (any, error) {
	h, ok := st.byID[p.ID]
	t := st.Tokens[h]
	if !ok || t == nil || (p.User != "" && t.User != p.User) {
		return nil, cluster.NotFound("token %s not found", p.ID)
	}
	delete(st.Tokens, h)
	delete(st.byID, p.ID)
	st.audit(at, t.Account, p.Actor, "token.revoked", "token:"+t.ID)
	return t.Token, nil
}

// AuditCmd is the payload of cluster.CmdAudit: an event of the read path
// (an access privacy mode refused).
type AuditCmd struct {
	Account string `json:"account"`
	AuditEntry
}

// maxAuditPerAccount bounds each account's log; the oldest entries go.
const maxAuditPerAccount = 10_000

func (st *State) audit(at time.Time, account, actor, action, target string) {
	if account == "" {
		account = "-" // billing tokens: the operator's log
	}
	if st.Audit == nil {
		st.Audit = map[string][]AuditEntry{}
	}
	l := append(st.Audit[account], AuditEntry{At: at, Actor: actor, Action: action, Target: target})
	if len(l) > maxAuditPerAccount {
		l = slices.Delete(l, 0, len(l)-maxAuditPerAccount)
	}
	st.Audit[account] = l
}

// usersOf returns the users of account, by e-mail (the caller holds the lock).
func (st *State) usersOf(account string) []User {
	var out []User
	for _, u := range st.Users {
		if u.Account == account {
			out = append(out, u.User)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Email < out[j].Email })
	return out
}
