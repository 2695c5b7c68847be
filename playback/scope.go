package playback

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/meter"
)

// Auditor appends an event to an account's audit log (package access).
type Auditor interface {
	Audit(ctx context.Context, account string, actor auth.Principal, action, target string) error
}

// ActionPrivacyRefused is the audit action of a request refused by
// privacy mode; its target is "stream:<id>".
const ActionPrivacyRefused = "privacy.refused"

// refusalInterval is how often one actor's refusals on one stream reach
// the audit log: a player retries every segment, and each entry is a raft
// write.
const refusalInterval = time.Minute

// privacyActive says whether a's privacy mode keeps outsiders out at now:
// on, and not suspended until a later time. The allowance
// (privacy_mode_allowed) does not matter here: withdrawing it must not end
// a privacy mode the customer switched on.
func privacyActive(a accounts.Account, now time.Time) bool {
	return a.PrivacyMode && (a.PrivacySuspendedUntil == nil || !now.Before(*a.PrivacySuspendedUntil))
}

// privacyExempt says whether p watches an account in privacy mode: its own
// users (not those its reseller created in it: Delegated), and the
// operator (see the package comment).
func privacyExempt(p auth.Principal, account string) bool {
	return p.Kind == auth.Operator || p.Kind == auth.User && p.Account == account && !p.Delegated
}

// signedPrincipal verifies a signed URL and checks its signer again, now:
// the principal it returns is who the URL acts as. It answers the request
// itself (false) when the URL does not hold.
func (h *Handler) signedPrincipal(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	ctx := r.Context()
	p, err := h.sign.verifyRequest(r, h.opts.Now())
	switch {
	case errors.Is(err, errSigOutdated):
		httpx.WriteError(w, http.StatusForbidden, "signed_url_outdated", err.Error())
		return p, false
	case err != nil:
		if errors.Is(err, errSigInvalid) { // a guess; an expired URL is an old player
			auth.ReportFailure(ctx, "bad_signature")
		}
		httpx.WriteError(w, http.StatusForbidden, "bad_signature", err.Error())
		return p, false
	}
	if p.Kind == auth.Operator {
		return p, true // the key derives from the operator token: it still holds
	}
	if h.opts.Signers == nil {
		httpx.WriteError(w, http.StatusForbidden, "signer_revoked", "this node cannot check a user's signed URL")
		return p, false
	}
	cur, err := h.opts.Signers.SignerPrincipal(ctx, p.ID, p.TokenID)
	switch {
	case errors.Is(err, auth.ErrUnknownToken) || err == nil && cur != p:
		// Removed, revoked, expired, or moved to another role since.
		httpx.WriteError(w, http.StatusForbidden, "signer_revoked", "the user who signed this URL, or their token, is no longer valid")
		return p, false
	case err != nil:
		h.log.WarnContext(ctx, "playback: signer lookup failed", "user", p.ID, "err", err)
		unavailable(w, "access_unavailable", "signer lookup failed, retry")
		return p, false
	}
	return cur, true
}

// mayWatch applies privacy mode to a request for video (not metadata) of
// st by p. It answers the request itself (false) when p is kept out, and
// writes the refusal to the account's audit log, at most once a minute
// per actor and stream.
func (h *Handler) mayWatch(w http.ResponseWriter, r *http.Request, p auth.Principal, st accounts.Stream) bool {
	if p.Kind == auth.Operator {
		return true
	}
	ctx := r.Context()
	a, err := h.reg.Account(ctx, st.Account)
	switch {
	case errors.Is(err, meter.ErrNotFound):
		httpx.WriteError(w, http.StatusNotFound, "stream_not_found", "unknown or deleted stream "+st.ID)
		return false
	case err != nil:
		h.log.WarnContext(ctx, "playback: account lookup failed", "account", st.Account, "err", err)
		unavailable(w, "meter_unavailable", "account registry unavailable")
		return false
	}
	now := h.opts.Now()
	if !privacyActive(a, now) || privacyExempt(p, a.ID) {
		return true
	}
	if h.opts.Audit != nil && h.refused.first(refusalKey{p.Actor(), st.ID}, now) {
		// The refusal is recorded even if the player hangs up meanwhile.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := h.opts.Audit.Audit(actx, a.ID, p, ActionPrivacyRefused, "stream:"+st.ID)
		cancel()
		if err != nil {
			h.log.WarnContext(ctx, "playback: privacy refusal not audited", "account", a.ID, "stream", st.ID, "actor", p.Actor(), "err", err)
		}
	}
	httpx.WriteError(w, http.StatusForbidden, "privacy_mode", "the account of this stream is in privacy mode")
	return false
}

type refusalKey struct{ actor, stream string }

// refusals remembers when each (actor, stream) refusal was last audited,
// in memory on this node.
type refusals struct {
	mu   sync.Mutex
	last map[refusalKey]time.Time
}

// maxRefusals bounds the table before entries older than the interval are
// dropped.
const maxRefusals = 4096

// first reports whether k's refusal at now is the first in refusalInterval,
// and if so remembers it.
func (f *refusals) first(k refusalKey, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.last[k]; ok && now.Sub(t) < refusalInterval {
		return false
	}
	if f.last == nil {
		f.last = map[refusalKey]time.Time{}
	}
	if len(f.last) >= maxRefusals {
		for key, t := range f.last {
			if now.Sub(t) >= refusalInterval {
				delete(f.last, key)
			}
		}
	}
	f.last[k] = now
	return true
}
