package main

import (
	"log/slog"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/entitlement"
	"github.com/vigilcloud/vigil/mail"
	"github.com/vigilcloud/vigil/replica"
)

// entitlementRegistry is the node's entitlement service: its notices go
// through the invitations' mail path (none without SMTP).
func entitlementRegistry(rep *replica.Replica, mailer access.Mailer, log *slog.Logger) *entitlement.Registry {
	cfg := entitlement.Config{Scope: rep.Accounts, Users: rep.Access, Log: log,
		Follower: func() bool { return !rep.Node().IsLeader() }}
	if inv, ok := mailer.(mail.Invitations); ok {
		cfg.Mail = inv
	}
	return entitlement.New(rep.Machine.Entitlements, rep.Peer, cfg)
}
