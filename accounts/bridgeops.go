package accounts

import (
	"context"
	"time"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
)

// Bridge deletion and token rotation. Both are new command types, so no
// log written before them is replayed differently: only they set a
// bridge's DeletedAt and Prev.

// Token rotation grace: how long the previous token keeps working.
const (
	DefaultTokenGrace = time.Hour
	MaxTokenGrace     = 7 * 24 * time.Hour
)

// prevToken is the token a rotation replaced: its hash (also in
// TokenIndex) and Digest HA1, accepted until Until, which the rotation's
// proposer stamped. Lookups compare Until with the node's clock; the state
// keeps the entry until the next rotation or the bridge's deletion.
type prevToken struct {
	Hash      string    `json:"hash"`
	DigestHA1 string    `json:"digest_ha1,omitempty"`
	Until     time.Time `json:"until"`
}

// valid reports whether the previous token is still accepted at now.
func (p *prevToken) valid(now time.Time) bool { return p != nil && now.Before(p.Until) }

// DeleteBridgeCmd is the payload of cluster.CmdDeleteBridge.
type DeleteBridgeCmd struct {
	ID    string `json:"id"`
	Actor string `json:"actor,omitempty"` // for the audit log
}

// RotateBridgeTokenCmd is the payload of cluster.CmdRotateBridgeToken. The
// new token's hash and Digest HA1 travel in the nonce (bridgeNonce), never
// the token.
type RotateBridgeTokenCmd struct {
	ID    string `json:"id"`
	Actor string `json:"actor,omitempty"` // for the audit log
	// GraceMS is how long the previous token keeps working after the
	// command's time; 0 ends it at once.
	GraceMS int64 `json:"grace_ms"`
}

// BridgeDeleteResult is the result of DeleteBridge.
type BridgeDeleteResult struct {
	Bridge    string    `json:"bridge"`
	DeletedAt time.Time `json:"deleted_at"`
}

// RotateResult is the result of RotateBridgeToken. Token is set only on
// the proposer whose attempt rotated (TokenHash is that attempt's hash), as
// for BridgeResult.
type RotateResult struct {
	Bridge             string     `json:"bridge"`
	RotatedAt          time.Time  `json:"rotated_at"`
	PreviousValidUntil *time.Time `json:"previous_valid_until,omitempty"`
	TokenHash          string     `json:"token_hash,omitempty"`
	Token              string     `json:"-"`
	Rotated            bool       `json:"-"`
}

func registerBridgeOps(m *cluster.Machine, st *State) {
	m.Handle(cluster.CmdDeleteBridge, func(c *cluster.Command) (any, error) {
		var p DeleteBridgeCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.deleteBridge(c.Time, p.ID, p.Actor)
	})
	m.Handle(cluster.CmdRotateBridgeToken, func(c *cluster.Command) (any, error) {
		var p RotateBridgeTokenCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.rotateBridgeToken(c.Time, p, c.Nonce)
	})
}

// liveBridge returns bridge id unless it, or its account, was deleted.
func (st *State) liveBridge(id string) *bridgeRec {
	b := st.Bridges[id]
	if b == nil || b.DeletedAt != nil || st.liveAccount(b.Account) == nil {
		return nil
	}
	return b
}

// deleteBridge refuses while the bridge has live cameras (delete them
// first: each gets its purge), then marks it deleted and drops its tokens
// from the index, so they stop working on every replica at this entry.
// Deleting it again answers the first deletion.
func (st *State) deleteBridge(at time.Time, id, actor string) (any, error) {
	b := st.Bridges[id]
	if b != nil && b.DeletedAt != nil {
		return BridgeDeleteResult{Bridge: id, DeletedAt: *b.DeletedAt}, nil
	}
	if b = st.liveBridge(id); b == nil {
		return nil, notFound("bridge %s not found", id)
	}
	live := 0
	for _, c := range st.Cameras { // a count: map order decides nothing
		if c.Bridge == id && c.DeletedAt == nil {
			live++
		}
	}
	if live > 0 {
		return nil, conflict("bridge_has_cameras", "bridge %s has %d live cameras; delete them first", id, live)
	}
	delete(st.TokenIndex, b.TokenHash)
	if b.Prev != nil {
		delete(st.TokenIndex, b.Prev.Hash)
	}
	t := at
	b.DeletedAt, b.TokenHash, b.DigestHA1, b.Prev = &t, "", "", nil
	st.auditEvent(at, b.Account, actor, "bridge.deleted", "bridge:"+id)
	return BridgeDeleteResult{Bridge: id, DeletedAt: t}, nil
}

// rotateBridgeToken makes the nonce's token the bridge's and keeps the
// replaced one for the grace. A previous token still in its grace is
// dropped: only the token being replaced can be in use.
func (st *State) rotateBridgeToken(at time.Time, p RotateBridgeTokenCmd, nonce string) (any, error) {
	if p.GraceMS < 0 || p.GraceMS > MaxTokenGrace.Milliseconds() {
		return nil, invalid("invalid_grace", "grace is 0 to %d ms", MaxTokenGrace.Milliseconds())
	}
	b := st.liveBridge(p.ID)
	if b == nil {
		return nil, notFound("bridge %s not found", p.ID)
	}
	hash, ha1, err := bridgeSecrets(p.ID, nonce)
	if err != nil {
		return nil, err
	}
	if _, dup := st.TokenIndex[hash]; dup {
		return nil, conflict("conflict", "token already in use")
	}
	if b.Prev != nil {
		delete(st.TokenIndex, b.Prev.Hash)
		b.Prev = nil
	}
	res := RotateResult{Bridge: p.ID, RotatedAt: at, TokenHash: hash}
	if p.GraceMS > 0 {
		b.Prev = &prevToken{Hash: b.TokenHash, DigestHA1: b.DigestHA1, Until: at.Add(time.Duration(p.GraceMS) * time.Millisecond)}
		until := b.Prev.Until
		res.PreviousValidUntil = &until
	} else {
		delete(st.TokenIndex, b.TokenHash)
	}
	b.TokenHash, b.DigestHA1 = hash, ha1
	st.TokenIndex[hash] = b.ID
	st.auditEvent(at, b.Account, p.Actor, "bridge.token_rotated", "bridge:"+b.ID)
	return res, nil
}

// DeleteBridge deletes a bridge that has no live cameras (ErrConflict
// bridge_has_cameras otherwise). Its tokens stop working at once.
func (reg *Registry) DeleteBridge(ctx context.Context, requestID string, actor auth.Principal, id string) (BridgeDeleteResult, error) {
	var r BridgeDeleteResult
	return r, reg.p.Propose(ctx, cluster.CmdDeleteBridge, requestID, "", DeleteBridgeCmd{ID: id, Actor: actor.Actor()}, &r)
}

// RotateBridgeToken gives a bridge a new token, returned in plaintext
// once; the previous token keeps working for grace. As in CreateBridge,
// only the token's hash and Digest HA1 enter the command. A retry of a
// rotation that committed (same request id) rotates nothing and returns
// no token (Rotated false): the bridge keeps the first attempt's token.
func (reg *Registry) RotateBridgeToken(ctx context.Context, requestID string, actor auth.Principal, id string, grace time.Duration) (RotateResult, error) {
	if grace < 0 || grace > MaxTokenGrace {
		return RotateResult{}, invalid("invalid_grace", "grace is 0 to %s", MaxTokenGrace)
	}
	token := auth.NewToken()
	var r RotateResult
	if err := reg.p.Propose(ctx, cluster.CmdRotateBridgeToken, requestID, bridgeNonce(id, token),
		RotateBridgeTokenCmd{ID: id, GraceMS: grace.Milliseconds(), Actor: actor.Actor()}, &r); err != nil {
		return RotateResult{}, err
	}
	if r.TokenHash == auth.HashToken(token) {
		r.Token, r.Rotated = token, true
	}
	r.TokenHash = ""
	return r, nil
}
