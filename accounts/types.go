// Package accounts is the registry: accounts (resellers and their
// sub-accounts), bridges, cameras and streams, their settings history and
// deletion. It is a domain of the replicated state machine (package
// cluster): its state is a section, its writes are commands.
package accounts

import (
	"time"

	"github.com/vigilcloud/vigil/cluster"
)

// ErrNotFound is returned for an unknown (or deleted) account, bridge,
// camera or stream.
var ErrNotFound = cluster.ErrNotFound

// ErrConflict is returned when a create collides with a different existing
// object of the same id.
var ErrConflict = cluster.ErrConflict

// Defaults are an account's default stream settings.
type Defaults struct {
	Width         int `json:"width,omitempty"`
	Height        int `json:"height,omitempty"`
	RetentionDays int `json:"retention_days,omitempty"`
}

// ErrInvalid is returned (inside an *Error with a code) for a command whose
// content is invalid: a bad field, or a parent that does not exist.
var ErrInvalid = cluster.ErrInvalid

// Billing cycles.
const (
	CycleMonthly = "monthly"
	CycleAnnual  = "annual"
)

// Account is a reseller (no parent) or a sub-account.
type Account struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Parent       string    `json:"parent,omitempty"`
	Tier         string    `json:"tier,omitempty"` // "distributor" (a root account) or empty (tree.go)
	BillingCycle string    `json:"billing_cycle"`  // monthly | annual
	Defaults     Defaults  `json:"defaults"`
	CreatedAt    time.Time `json:"created_at"`

	LockBillingSettings   bool       `json:"lock_billing_settings,omitempty"`
	PrivacyModeAllowed    bool       `json:"privacy_mode_allowed,omitempty"`
	PrivacyMode           bool       `json:"privacy_mode,omitempty"`
	PrivacySuspendedUntil *time.Time `json:"privacy_suspended_until,omitempty"`
	// AutoActivateEntitlements: a new stream gets a unit of a matching
	// entitlement of the account, if one is left (package entitlement).
	AutoActivateEntitlements bool       `json:"auto_activate_entitlements,omitempty"`
	UpdatedAt                time.Time  `json:"updated_at"`
	DeletedAt                *time.Time `json:"deleted_at,omitempty"` // sub-accounts only
}

// Bridge is an on-premise uploader; its token is stored only hashed.
type Bridge struct {
	ID        string    `json:"id"`
	Account   string    `json:"account"`
	Name      string    `json:"name"`
	TokenHash string    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
}

// Camera belongs to a bridge.
type Camera struct {
	ID        string     `json:"id"`
	Bridge    string     `json:"bridge"`
	Account   string     `json:"account"`
	Name      string     `json:"name"`
	Streams   []string   `json:"streams"`
	CreatedAt time.Time  `json:"created_at"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
	PurgeID   string     `json:"purge_id,omitempty"` // set on deletion
}

// Stream is one billed video stream of a camera.
type Stream struct {
	ID            string     `json:"id"`
	Camera        string     `json:"camera"`
	Bridge        string     `json:"bridge"`
	Account       string     `json:"account"`
	Width         int        `json:"width"`
	Height        int        `json:"height"`
	RetentionDays int        `json:"retention_days"`
	Analytics     []string   `json:"analytics,omitempty"`
	RegisteredAt  time.Time  `json:"registered_at"`
	DeletedAt     *time.Time `json:"deleted_at,omitempty"`
}

// StreamSettings are the billing-relevant settings of a stream, resolved
// (account defaults applied).
type StreamSettings struct {
	Width         int      `json:"width"`
	Height        int      `json:"height"`
	RetentionDays int      `json:"retention_days"`
	Analytics     []string `json:"analytics,omitempty"`
}

// Settings returns s's resolved settings.
func (s Stream) Settings() StreamSettings {
	return StreamSettings{Width: s.Width, Height: s.Height, RetentionDays: s.RetentionDays,
		Analytics: append([]string(nil), s.Analytics...)}
}

// SettingsChange is one entry of a stream's settings history: the settings
// in force from At (a proposer-stamped time) until the next entry.
type SettingsChange struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"` // registered | updated | account_defaults
	StreamSettings
}

// DigestRealm is the realm of RTSP Digest authentication.
const DigestRealm = "vigil"
