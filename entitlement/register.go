package entitlement

import (
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
)

// Register adds the entitlement section and commands to m. Entitlements
// belong to the accounts of accts; new streams of accounts that ask for it
// get a unit automatically as create_camera registers them.
func Register(m *cluster.Machine, accts *accounts.State) *State {
	st := &State{m: m, accounts: accts}
	st.reset()
	m.Register(cluster.Section{Name: "entitlement", State: st, Reset: st.reset, Restored: st.restored})
	accts.SetStreamHook(st.onNewStream)
	m.Handle(cluster.CmdCreateEntitlement, func(c *cluster.Command) (any, error) {
		var p CreateCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.create(c.Time, p, c.Nonce)
	})
	m.Handle(cluster.CmdSplitEntitlement, func(c *cluster.Command) (any, error) {
		var p SplitCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.split(c.Time, p, c.Nonce)
	})
	m.Handle(cluster.CmdReturnEntitlement, func(c *cluster.Command) (any, error) {
		var p ReturnCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.takeBack(c.Time, p)
	})
	m.Handle(cluster.CmdActivateEntitlement, func(c *cluster.Command) (any, error) {
		var p ActivateCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.activate(c.Time, p)
	})
	return st
}
