package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/mail"
)

// Proposer commits commands (a *cluster.Peer).
type Proposer interface {
	Propose(ctx context.Context, typ, requestID, nonce string, payload, out any) error
}

// Mailer sends an invitation (package mail); nil sends none, and the
// invitation link is returned to the admin instead.
type Mailer interface {
	SendInvitation(ctx context.Context, to, token string, expires time.Time) error
}

// Config configures a Registry.
type Config struct {
	// Accounts answers the scope rule (accounts.Registry.Allowed).
	Accounts   *accounts.Registry
	Log        *slog.Logger
	Now        func() time.Time // expiry of sessions on reads; default time.Now
	SessionTTL time.Duration    // default 12 h
	Mailer     Mailer
	// Limiter limits failed logins and invitation guesses per e-mail and
	// per source address (the node's limiter of failed authentications).
	Limiter *auth.Limiter
	// PublicURL is the base of invitation links (--public-url).
	PublicURL string
}

// DefaultSessionTTL is how long a login's session token works.
const DefaultSessionTTL = 12 * time.Hour

// Registry reads the access state locally and writes it through raft.
// Its methods are safe for concurrent use.
type Registry struct {
	st  *State
	p   Proposer
	cfg Config
}

var _ auth.UserLookup = (*Registry)(nil)

// New returns the registry over st (from Register), writing through p.
func New(st *State, p Proposer, cfg Config) *Registry {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	return &Registry{st: st, p: p, cfg: cfg}
}

// PrincipalByTokenHash implements auth.UserLookup: a live session, API or
// billing token.
func (reg *Registry) PrincipalByTokenHash(ctx context.Context, hash string) (auth.Principal, error) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	t := reg.st.Tokens[hash]
	if t == nil || (t.ExpiresAt != nil && !reg.cfg.Now().Before(*t.ExpiresAt)) {
		return auth.Principal{}, auth.ErrUnknownToken
	}
	if t.Kind == KindBilling {
		return auth.Principal{Kind: auth.Billing, ID: t.ID}, nil
	}
	u := reg.st.Users[t.User]
	if u == nil {
		return auth.Principal{}, auth.ErrUnknownToken
	}
	return auth.Principal{Kind: auth.User, ID: u.ID, Account: u.Account, Role: u.Role, TokenID: t.ID, Delegated: u.Delegated}, nil
}

// SignerPrincipal returns the principal of user's live token id (the
// signer of a playback URL, checked when the URL is used);
// auth.ErrUnknownToken when the user was removed or the token revoked or
// expired.
func (reg *Registry) SignerPrincipal(ctx context.Context, user, tokenID string) (auth.Principal, error) {
	reg.st.m.RLock()
	h, ok := reg.st.byID[tokenID]
	reg.st.m.RUnlock()
	if !ok {
		return auth.Principal{}, auth.ErrUnknownToken
	}
	p, err := reg.PrincipalByTokenHash(ctx, h)
	if err != nil || p.Kind != auth.User || p.ID != user {
		return auth.Principal{}, auth.ErrUnknownToken
	}
	return p, nil
}

// User returns a user; ErrNotFound when unknown.
func (reg *Registry) User(ctx context.Context, id string) (User, error) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	u := reg.st.Users[id]
	if u == nil {
		return User{}, fmt.Errorf("user %s: %w", id, cluster.ErrNotFound)
	}
	return u.User, nil
}

// Users returns the users of account, by e-mail.
func (reg *Registry) Users(ctx context.Context, account string) []User {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	return reg.st.usersOf(account)
}

// Tokens returns user's tokens (all billing tokens when user is empty),
// oldest first; sessions that expired are left out.
func (reg *Registry) Tokens(ctx context.Context, user string) []Token {
	now := reg.cfg.Now()
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	var out []Token
	for _, t := range reg.st.Tokens {
		if t.ExpiresAt != nil && !now.Before(*t.ExpiresAt) {
			continue
		}
		if (user == "" && t.Kind == KindBilling) || (user != "" && t.User == user) {
			out = append(out, t.Token)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// AuditLog returns up to limit entries of account's log from index from
// on, and the index of the next page (0: none).
func (reg *Registry) AuditLog(ctx context.Context, account string, from, limit int) ([]AuditEntry, int) {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	l := reg.st.Audit[account]
	if from >= len(l) {
		return []AuditEntry{}, 0
	}
	end := min(len(l), from+limit)
	out := append([]AuditEntry(nil), l[from:end]...)
	if end < len(l) {
		return out, end
	}
	return out, 0
}

// Invitation is what creating a user returns: the token only when no
// e-mail carried it.
type Invitation struct {
	Token     string    `json:"token,omitempty"`
	Link      string    `json:"link,omitempty"` // with Token: the activation link to hand over`
	ExpiresAt time.Time `json:"expires_at"`
	Sent      bool      `json:"sent"` // e-mailed to the user
}

// CreateUser adds a user to account and issues its invitation, e-mailed
// when a Mailer is configured, else returned (once) to the caller.
func (reg *Registry) CreateUser(ctx context.Context, requestID string, actor auth.Principal, account, email, role string) (User, Invitation, error) {
	token := auth.NewToken()
	var r UserResult
	err := reg.p.Propose(ctx, cluster.CmdCreateUser, requestID, "u-"+cluster.RandomID()[:20]+":"+auth.HashToken(token),
		CreateUserCmd{Account: account, Email: email, Role: role, Actor: actor.Actor()}, &r)
	if err != nil {
		return User{}, Invitation{}, err
	}
	inv := Invitation{ExpiresAt: r.InvitationExpires}
	if r.InvitationHash != auth.HashToken(token) {
		return r.User, inv, nil // a retry of a creation that committed: the token was handed out then
	}
	if reg.cfg.Mailer != nil {
		if err := reg.cfg.Mailer.SendInvitation(ctx, r.User.Email, token, inv.ExpiresAt); err != nil {
			reg.cfg.Log.Warn("access: invitation not sent; the admin gets the link", "user", r.User.ID, "err", err)
		} else {
			inv.Sent = true
			return r.User, inv, nil
		}
	}
	inv.Token = token
	if reg.cfg.PublicURL != "" {
		inv.Link = mail.InvitationLink(reg.cfg.PublicURL, token)
	}
	return r.User, inv, nil
}

// AcceptInvitation sets the password of the invited user.
func (reg *Registry) AcceptInvitation(ctx context.Context, token, password string) (User, error) {
	ph, err := HashPassword(password)
	if err != nil {
		return User{}, cluster.Invalid("invalid_password", "%v", err)
	}
	var u User
	return u, reg.p.Propose(ctx, cluster.CmdAcceptInvitation, "", "", AcceptCmd{Invitation: auth.HashToken(token), PasswordHash: ph}, &u)
}

// RemoveUser removes a user; its sessions and tokens stop working on every
// node as the removal is applied there.
func (reg *Registry) RemoveUser(ctx context.Context, requestID string, actor auth.Principal, id string) (User, error) {
	var u User
	return u, reg.p.Propose(ctx, cluster.CmdRemoveUser, requestID, "", RemoveUserCmd{ID: id, Actor: actor.Actor()}, &u)
}

// ErrLogin is a wrong e-mail or password (which one is not said).
var ErrLogin = errors.New("access: wrong e-mail or password")

// Login checks an e-mail and password and opens a session; it returns the
// session token, once.
func (reg *Registry) Login(ctx context.Context, email, password string) (string, Token, error) {
	email = NormalizeEmail(email)
	reg.st.m.RLock()
	var phc, user string
	if id, ok := reg.st.Emails[email]; ok {
		if u := reg.st.Users[id]; u != nil && u.Active() {
			phc, user = u.PasswordHash, u.ID
		}
	}
	reg.st.m.RUnlock()
	if phc == "" {
		// Spend the same work as a real check, so timing tells nothing.
		_ = CheckPassword(dummyHash(), password)
		return "", Token{}, ErrLogin
	}
	if !CheckPassword(phc, password) {
		return "", Token{}, ErrLogin
	}
	return reg.newToken(ctx, "", CreateTokenCmd{Kind: KindSession, User: user, TTLMS: reg.cfg.SessionTTL.Milliseconds(), Actor: "user:" + user})
}

// dummyHash is checked for unknown e-mails; made on first use, not at
// start-up (it costs an argon2id pass).
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword("not-a-password-of-anyone")
	return h
})

// CreateToken creates a named API token for user (a user principal's own)
// or, with user empty, a billing token (the operator's); it returns the
// token, once.
func (reg *Registry) CreateToken(ctx context.Context, requestID string, actor auth.Principal, user, name string) (string, Token, error) {
	kind := KindAPI
	if user == "" {
		kind = KindBilling
	}
	return reg.newToken(ctx, requestID, CreateTokenCmd{Kind: kind, Name: name, User: user, Actor: actor.Actor()})
}

func (reg *Registry) newToken(ctx context.Context, requestID string, c CreateTokenCmd) (string, Token, error) {
	token := auth.NewToken()
	var t TokenResult
	if err := reg.p.Propose(ctx, cluster.CmdCreateToken, requestID, "t-"+cluster.RandomID()[:20]+":"+auth.HashToken(token), c, &t); err != nil {
		return "", Token{}, err
	}
	if t.Hash != auth.HashToken(token) {
		return "", t.Token, nil // a retry of a creation that committed: shown then
	}
	return token, t.Token, nil
}

// RevokeToken revokes token id (only user's, when user is set).
func (reg *Registry) RevokeToken(ctx context.Context, requestID string, actor auth.Principal, user, id string) (Token, error) {
	var t Token
	return t, reg.p.Propose(ctx, cluster.CmdRevokeToken, requestID, "", RevokeTokenCmd{ID: id, User: user, Actor: actor.Actor()}, &t)
}

// Audit appends an event of the read path to account's log.
func (reg *Registry) Audit(ctx context.Context, account string, actor auth.Principal, action, target string) error {
	var out struct{}
	return reg.p.Propose(ctx, cluster.CmdAudit, "", "", AuditCmd{Account: account,
		AuditEntry: AuditEntry{Actor: actor.Actor(), Action: action, Target: target}}, &out)
}
