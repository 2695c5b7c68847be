package accounts

import "time"

// The account tree (issue 16): operator → distributor → reseller
// (installer) → sub-account (end customer). The operator is the operator
// token, not an account. A root account is a reseller unless it was
// created with tier "distributor"; a distributor's children are resellers,
// a reseller's children are end customers, who have none. Two-level setups
// (reseller → sub-account) are this tree without distributors.

// TierDistributor is NewAccount.Tier of a distributor (root accounts only).
const TierDistributor = "distributor"

// Levels of an account in the tree.
const (
	LevelDistributor = "distributor"
	LevelReseller    = "reseller"
	LevelCustomer    = "customer" // a sub-account: the end customer
)

// maxDepth bounds walks up the tree: distributor, reseller, customer.
const maxDepth = 3

// level returns a's level (the caller holds the lock).
func (st *State) level(a *Account) string {
	if a.Parent == "" {
		if a.Tier == TierDistributor {
			return LevelDistributor
		}
		return LevelReseller
	}
	if p := st.Accounts[a.Parent]; p != nil && p.Parent == "" && p.Tier == TierDistributor {
		return LevelReseller
	}
	return LevelCustomer
}

// Level returns account id's level, "" when unknown (the caller holds the
// machine's lock: other domains call it while they apply a command).
func (st *State) Level(id string) string {
	if a := st.Accounts[id]; a != nil {
		return st.level(&a.Account)
	}
	return ""
}

// Account returns account id as the state holds it, deleted or not; nil
// when unknown (the caller holds the machine's lock and does not modify it).
func (st *State) Account(id string) *Account {
	if a := st.Accounts[id]; a != nil {
		return &a.Account
	}
	return nil
}

// Reaches reports whether account is own or below it in the tree (the
// caller holds the machine's lock).
func (st *State) Reaches(own, account string) bool { return st.reaches(own, account) }

// Chain returns the ids from the root of account's tree down to account's
// parent: [] for a root, [reseller] for a sub-account of a root reseller,
// [distributor, reseller] below a distributor (the caller holds the lock).
func (st *State) Chain(account string) []string {
	var up []string
	a := st.Accounts[account]
	for depth := 0; a != nil && a.Parent != "" && depth < maxDepth; depth++ {
		up = append(up, a.Parent)
		a = st.Accounts[a.Parent]
	}
	for i, j := 0, len(up)-1; i < j; i, j = i+1, j-1 {
		up[i], up[j] = up[j], up[i]
	}
	return up
}

// StreamHook is called as each new stream is registered by create_camera,
// inside the command's apply (package entitlement activates entitlements
// automatically on it). It must be deterministic and must not fail.
type StreamHook func(at time.Time, s *Stream)

// SetStreamHook installs the hook for new streams.
func (st *State) SetStreamHook(f StreamHook) { st.streamHook = f }

// Level returns account id's level, "" when unknown or deleted.
func (reg *Registry) Level(id string) string {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	if a := reg.st.liveAccount(id); a != nil {
		return reg.st.level(&a.Account)
	}
	return ""
}

// Above reports whether ancestor is strictly above account in the tree.
func (reg *Registry) Above(ancestor, account string) bool {
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	return ancestor != account && reg.st.reaches(ancestor, account)
}

// AuditEvent writes an event to account's audit log as a command is
// applied, if a log is installed (SetAudit): other domains' commands
// (entitlements) write to the same log.
func (st *State) AuditEvent(at time.Time, account, actor, action, target string) {
	st.auditEvent(at, account, actor, action, target)
}
