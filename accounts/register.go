package accounts

import "github.com/vigilcloud/vigil/cluster"

// Register adds the accounts section and commands to m. Deletions record
// their purge jobs in purges.
func Register(m *cluster.Machine, purges Purges) *State {
	st := &State{m: m, purges: purges}
	st.reset()
	m.Register(cluster.Section{Name: "accounts", State: st, Reset: st.reset, Restored: st.restored})
	m.SetLegacyScrub(scrubToken)
	m.Handle(cluster.CmdCreateAccount, func(c *cluster.Command) (any, error) {
		var p NewAccount
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.createAccount(c.Time, p, c.Legacy())
	})
	m.Handle(cluster.CmdUpdateAccount, func(c *cluster.Command) (any, error) {
		var p UpdateAccountCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.UpdateAccountCmd(c.Time, p, c.Version)
	})
	m.Handle(cluster.CmdCreateBridge, func(c *cluster.Command) (any, error) {
		var p CreateBridgeCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		if c.Legacy() {
			return st.createBridgeV0(c.Time, p, c.Nonce)
		}
		return st.CreateBridgeCmd(c.Time, p, c.Nonce)
	})
	m.Handle(cluster.CmdCreateCamera, func(c *cluster.Command) (any, error) {
		var p CreateCameraCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.CreateCameraCmd(c.Time, p, c.Legacy())
	})
	m.Handle(cluster.CmdUpdateStream, func(c *cluster.Command) (any, error) {
		var p UpdateStreamCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.UpdateStreamCmd(c.Time, p.ID, p.Patch)
	})
	m.Handle(cluster.CmdDeleteCamera, func(c *cluster.Command) (any, error) {
		var p DeleteCameraCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.DeleteCameraCmd(c.Time, p.ID, c.Nonce)
	})
	m.Handle(cluster.CmdDeleteStream, func(c *cluster.Command) (any, error) {
		var p DeleteStreamCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.DeleteStreamCmd(c.Time, p.ID, c.Nonce)
	})
	m.Handle(cluster.CmdDeleteAccount, func(c *cluster.Command) (any, error) {
		var p DeleteAccountCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.DeleteAccountCmd(c.Time, p.ID, c.Nonce, c.Legacy())
	})
	registerBridgeOps(m, st) // bridgeops.go
	return st
}

// CreateBridgePayload is the payload of cluster.CmdCreateBridge, for
// harnesses that build log entries themselves; its nonce is BridgeNonce
// (or, as earlier versions wrote, a token of ≥ 32 bytes).
func CreateBridgePayload(account string, b NewBridge) any {
	return CreateBridgeCmd{Account: account, Bridge: b}
}

// BridgeNonce is the nonce of cluster.CmdCreateBridge for token: its hash
// and Digest HA1, never the token itself.
func BridgeNonce(bridge, token string) string { return bridgeNonce(bridge, token) }

// CreateCameraPayload is the payload of cluster.CmdCreateCamera.
func CreateCameraPayload(bridge string, c NewCamera) any {
	return CreateCameraCmd{Bridge: bridge, Camera: c}
}
