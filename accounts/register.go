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
		var p updateAccount
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.updateAccount(c.Time, p.ID, p.Patch, c.Legacy())
	})
	m.Handle(cluster.CmdCreateBridge, func(c *cluster.Command) (any, error) {
		var p createBridge
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		if c.Legacy() {
			return st.createBridgeV0(c.Time, p, c.Nonce)
		}
		return st.createBridge(c.Time, p, c.Nonce)
	})
	m.Handle(cluster.CmdCreateCamera, func(c *cluster.Command) (any, error) {
		var p createCamera
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.createCamera(c.Time, p, c.Legacy())
	})
	m.Handle(cluster.CmdUpdateStream, func(c *cluster.Command) (any, error) {
		var p updateStream
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.updateStream(c.Time, p.ID, p.Patch)
	})
	m.Handle(cluster.CmdDeleteCamera, func(c *cluster.Command) (any, error) {
		var p deleteCamera
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.deleteCamera(c.Time, p.ID, c.Nonce)
	})
	m.Handle(cluster.CmdDeleteStream, func(c *cluster.Command) (any, error) {
		var p deleteStream
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.deleteStream(c.Time, p.ID, c.Nonce)
	})
	m.Handle(cluster.CmdDeleteAccount, func(c *cluster.Command) (any, error) {
		var p deleteAccount
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.deleteAccount(c.Time, p.ID, c.Nonce, c.Legacy())
	})
	return st
}

// CreateBridgePayload is the payload of cluster.CmdCreateBridge, for
// harnesses that build log entries themselves; its nonce is BridgeNonce
// (or, as earlier versions wrote, a token of ≥ 32 bytes).
func CreateBridgePayload(account string, b NewBridge) any {
	return createBridge{Account: account, Bridge: b}
}

// BridgeNonce is the nonce of cluster.CmdCreateBridge for token: its hash
// and Digest HA1, never the token itself.
func BridgeNonce(bridge, token string) string { return bridgeNonce(bridge, token) }

// CreateCameraPayload is the payload of cluster.CmdCreateCamera.
func CreateCameraPayload(bridge string, c NewCamera) any {
	return createCamera{Bridge: bridge, Camera: c}
}
