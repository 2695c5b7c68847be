package cluster

// The command table: every command type the replicated state machine
// applies, and the domain package that registers its apply function. A log
// entry of a type not listed here is refused as malformed_command; a
// machine missing the apply function of a listed type does not start
// (Machine.Check). A type, once written to a log, keeps its name and its
// meaning for ever (see CommandVersion): add new types, never rename one.
const (
	// accounts: the registry of accounts, bridges, cameras and streams.
	CmdCreateAccount = "create_account"
	CmdUpdateAccount = "update_account"
	CmdCreateBridge  = "create_bridge"
	CmdCreateCamera  = "create_camera"
	CmdUpdateStream  = "update_stream"
	// CmdDeleteBridge deletes a bridge without live cameras; its tokens
	// stop working.
	CmdDeleteBridge = "delete_bridge"
	// CmdRotateBridgeToken gives a bridge a new token; the previous one
	// stays valid until a proposer-stamped expiry.
	CmdRotateBridgeToken = "rotate_bridge_token"

	// purge: deletions and the purge jobs that free their video.
	CmdDeleteCamera  = "delete_camera"
	CmdDeleteStream  = "delete_stream"
	CmdDeleteAccount = "delete_account"
	CmdPurgeProgress = "purge_progress"
	CmdPurgeDone     = "purge_done"

	// lease: leases for work one node at a time must do.
	CmdLeaseAcquire = "lease_acquire"
	CmdLeaseRelease = "lease_release"

	// meter: usage batches, observed resolutions and the clock tick that
	// seals a month for billing.
	CmdUsageBatch        = "usage_batch"
	CmdObserveResolution = "observe_resolution"
	CmdUsageTick         = "usage_tick"

	// access: users, their invitations, sessions and API tokens, billing
	// tokens, and the per-account audit log.
	CmdCreateUser       = "create_user"
	CmdAcceptInvitation = "accept_invitation"
	CmdRemoveUser       = "remove_user"
	CmdCreateToken      = "create_token"
	CmdRevokeToken      = "revoke_token"
	CmdAudit            = "audit"

	// entitlement: prepaid licences down the sales chain (issue 16).
	CmdCreateEntitlement   = "create_entitlement"
	CmdSplitEntitlement    = "split_entitlement"
	CmdReturnEntitlement   = "return_entitlement"
	CmdActivateEntitlement = "activate_entitlement"

	// cluster: each node's HTTP address, for leader forwarding.
	CmdSetNode = "set_node"
)

// commandTypes lists the constants above.
var commandTypes = []string{
	CmdCreateAccount, CmdUpdateAccount, CmdCreateBridge, CmdCreateCamera, CmdUpdateStream,
	CmdDeleteBridge, CmdRotateBridgeToken,
	CmdDeleteCamera, CmdDeleteStream, CmdDeleteAccount, CmdPurgeProgress, CmdPurgeDone,
	CmdLeaseAcquire, CmdLeaseRelease,
	CmdUsageBatch, CmdObserveResolution, CmdUsageTick,
	CmdCreateUser, CmdAcceptInvitation, CmdRemoveUser, CmdCreateToken, CmdRevokeToken, CmdAudit,
	CmdCreateEntitlement, CmdSplitEntitlement, CmdReturnEntitlement, CmdActivateEntitlement,
	CmdSetNode,
}

// digestOrder is the order of the state's fields in its digest: the order
// in which the release before sectioned snapshots wrote them, so that a
// data directory it wrote keeps its digest (GET /v1/cluster?digest=1).
// Fields added since come after these, by name.
var digestOrder = []string{
	"accounts", "bridges", "token_index", "cameras", "streams", // accounts
	"requests",                      // cluster
	"purges",                        // purge
	"retired",                       // accounts
	"leases",                        // lease
	"applied_index",                 // cluster
	"clock",                         // cluster
	"usage",                         // meter
	"account_history",               // accounts
	"usage_stats", "usage_journals", // meter
	"nodes", // cluster
}
