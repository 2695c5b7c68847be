package access

import (
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
)

// Register adds the access section and commands to m; users belong to
// the accounts of accts.
func Register(m *cluster.Machine, accts *accounts.State) *State {
	st := &State{m: m, accounts: accts, byID: map[string]string{}}
	m.Register(cluster.Section{Name: "access", State: st, Reset: st.reset, Restored: st.restored})
	accts.SetAudit(st.audit) // privacy changes, applied by update_account
	m.Handle(cluster.CmdCreateUser, func(c *cluster.Command) (any, error) {
		var p CreateUserCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.createUser(c.Time, p, c.Nonce)
	})
	m.Handle(cluster.CmdAcceptInvitation, func(c *cluster.Command) (any, error) {
		var p AcceptCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.accept(c.Time, p)
	})
	m.Handle(cluster.CmdRemoveUser, func(c *cluster.Command) (any, error) {
		var p RemoveUserCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.removeUser(c.Time, p)
	})
	m.Handle(cluster.CmdCreateToken, func(c *cluster.Command) (any, error) {
		var p CreateTokenCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.createToken(c.Time, p, c.Nonce)
	})
	m.Handle(cluster.CmdRevokeToken, func(c *cluster.Command) (any, error) {
		var p RevokeTokenCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.revokeToken(c.Time, p)
	})
	m.Handle(cluster.CmdAudit, func(c *cluster.Command) (any, error) {
		var p AuditCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		if p.Account == "" || p.Action == "" {
			return nil, cluster.Invalid("malformed_command", "audit needs an account and an action")
		}
		st.audit(c.Time, p.Account, p.Actor, p.Action, p.Target)
		return struct{}{}, nil
	})
	return st
}
