package accounts

import (
	"slices"
	"time"

	"github.com/vigilcloud/vigil/storage"
)

// Retention bounds (DESIGN.md section 3) and the system default plan HD1-D30.
const (
	MinRetentionDays     = 1
	MaxRetentionDays     = 3650
	DefaultRetentionDays = 30
	DefaultWidth         = 1280
	DefaultHeight        = 720
	MaxDimension         = 100_000 // far beyond any camera; keeps w×h sane
	maxNameLen           = 256
	maxStreamsPerCamera  = 64
	maxAnalytics         = 64
)

// NewAccount creates a reseller (no Parent) or a sub-account of a reseller.
type NewAccount struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Parent       string   `json:"parent,omitempty"`
	Tier         string   `json:"tier,omitempty"`          // "distributor": a root above resellers
	BillingCycle string   `json:"billing_cycle,omitempty"` // default monthly
	Defaults     Defaults `json:"defaults,omitzero"`
}

func (a *NewAccount) normalize() {
	if a.BillingCycle == "" {
		a.BillingCycle = CycleMonthly
	}
}

func (a *NewAccount) validate() error {
	if !storage.ValidID(a.ID) {
		return invalid("invalid_id", "invalid account id %q", a.ID)
	}
	if a.Parent != "" && !storage.ValidID(a.Parent) {
		return invalid("unknown_parent", "invalid parent id %q", a.Parent)
	}
	switch {
	case a.Tier != "" && a.Tier != TierDistributor:
		return invalid("invalid_tier", "tier is %q or absent, not %q", TierDistributor, a.Tier)
	case a.Tier != "" && a.Parent != "":
		return invalid("invalid_tier", "a distributor is a root account: it has no parent")
	}
	if err := validName(a.Name); err != nil {
		return err
	}
	if err := validCycle(a.BillingCycle); err != nil {
		return err
	}
	return a.Defaults.validate()
}

func validName(n string) error {
	if n == "" || len(n) > maxNameLen {
		return invalid("invalid_name", "name must be 1 to %d bytes", maxNameLen)
	}
	return nil
}

func validCycle(c string) error {
	if c != CycleMonthly && c != CycleAnnual {
		return invalid("invalid_billing_cycle", "billing_cycle must be %q or %q, not %q", CycleMonthly, CycleAnnual, c)
	}
	return nil
}

func validRetention(d int) error {
	if d < MinRetentionDays || d > MaxRetentionDays {
		return invalid("invalid_retention", "retention_days must be %d to %d, not %d", MinRetentionDays, MaxRetentionDays, d)
	}
	return nil
}

func validResolution(w, h int) error {
	if w <= 0 || h <= 0 || w > MaxDimension || h > MaxDimension {
		return invalid("invalid_resolution", "width and height must be 1 to %d, not %dx%d", MaxDimension, w, h)
	}
	return nil
}

// validate checks account defaults: zero means "not set, inherit"; width
// and height are set together.
func (d Defaults) validate() error {
	if d.Width != 0 || d.Height != 0 {
		if err := validResolution(d.Width, d.Height); err != nil {
			return invalid("invalid_defaults", "defaults: width and height are set together and positive, not %dx%d", d.Width, d.Height)
		}
	}
	if d.RetentionDays != 0 {
		if err := validRetention(d.RetentionDays); err != nil {
			return invalid("invalid_defaults", "defaults: retention_days must be %d to %d (0: inherit), not %d", MinRetentionDays, MaxRetentionDays, d.RetentionDays)
		}
	}
	return nil
}

// DefaultsPatch changes account defaults: a nil field is left alone, a 0
// clears it (the account inherits again).
type DefaultsPatch struct {
	Width         *int `json:"width,omitempty"`
	Height        *int `json:"height,omitempty"`
	RetentionDays *int `json:"retention_days,omitempty"`
}

// AccountPatch is PATCH /v1/accounts/{id}; nil (absent) fields are left
// alone. PrivacySuspendedUntil tells null (end the suspension) from absent.
type AccountPatch struct {
	Name                  *string        `json:"name,omitempty"`
	BillingCycle          *string        `json:"billing_cycle,omitempty"`
	Defaults              *DefaultsPatch `json:"defaults,omitempty"`
	LockBillingSettings   *bool          `json:"lock_billing_settings,omitempty"`
	PrivacyModeAllowed    *bool          `json:"privacy_mode_allowed,omitempty"`
	PrivacyMode           *bool          `json:"privacy_mode,omitempty"`
	PrivacySuspendedUntil OptionalTime   `json:"privacy_suspended_until,omitzero"`
	// AutoActivateEntitlements: new streams of the account take a unit of
	// a matching entitlement it owns (package entitlement).
	AutoActivateEntitlements *bool `json:"auto_activate_entitlements,omitempty"`
}

// billing reports whether p changes billing settings: the defaults or the
// billing cycle (what lock_billing_settings locks).
func (p *AccountPatch) billing() bool { return p.Defaults != nil || p.BillingCycle != nil }

// resellerOnly reports whether p sets what only the reseller of a
// sub-account sets.
func (p *AccountPatch) resellerOnly() bool {
	return p.LockBillingSettings != nil || p.PrivacyModeAllowed != nil || p.BillingCycle != nil
}

// privacy reports whether p switches privacy mode or its suspension, which
// only the account's own admin does.
func (p *AccountPatch) privacy() bool { return p.PrivacyMode != nil || p.PrivacySuspendedUntil.Set }

// OptionalTime is a JSON time that tells null (Set, Time nil) from absent
// (not Set): a patch field where null means "clear".
type OptionalTime struct {
	Set  bool
	Time *time.Time
}

// IsZero reports absence, so that omitzero leaves an absent field out.
func (t OptionalTime) IsZero() bool { return !t.Set }

// MarshalJSON writes the time or null.
func (t OptionalTime) MarshalJSON() ([]byte, error) {
	if t.Time == nil {
		return []byte("null"), nil
	}
	return t.Time.MarshalJSON()
}

// UnmarshalJSON is called for a present field, null included.
func (t *OptionalTime) UnmarshalJSON(b []byte) error {
	t.Set, t.Time = true, nil
	if string(b) == "null" {
		return nil
	}
	var v time.Time
	if err := v.UnmarshalJSON(b); err != nil {
		return err
	}
	t.Time = &v
	return nil
}

// UpdateAccountCmd is the payload of cluster.CmdUpdateAccount. Actor names
// who made the change, for the audit log (empty in entries written before
// cluster.CommandV2).
type UpdateAccountCmd struct {
	ID    string       `json:"id"`
	Patch AccountPatch `json:"patch"`
	Actor string       `json:"actor,omitempty"`
}

// NewBridge creates a bridge in an account.
type NewBridge struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (b *NewBridge) validate() error {
	if !storage.ValidID(b.ID) {
		return invalid("invalid_id", "invalid bridge id %q", b.ID)
	}
	return validName(b.Name)
}

// CreateBridgeCmd is the payload of cluster.CmdCreateBridge.
type CreateBridgeCmd struct {
	Account string    `json:"account"`
	Bridge  NewBridge `json:"bridge"`
}

// NewStream is one stream of a new camera. Width and Height are given
// together or not at all (then the account defaults apply); RetentionDays
// nil means inherit.
type NewStream struct {
	ID            string   `json:"id"`
	Width         *int     `json:"width,omitempty"`
	Height        *int     `json:"height,omitempty"`
	RetentionDays *int     `json:"retention_days,omitempty"`
	Analytics     []string `json:"analytics,omitempty"`
}

// NewCamera creates a camera with its streams under a bridge.
type NewCamera struct {
	ID      string      `json:"id"`
	Name    string      `json:"name"`
	Streams []NewStream `json:"streams"`
}

func normAnalytics(a []string) ([]string, error) {
	if len(a) > maxAnalytics {
		return nil, invalid("invalid_analytics", "at most %d analytics", maxAnalytics)
	}
	for _, x := range a {
		if !storage.ValidID(x) {
			return nil, invalid("invalid_analytics", "invalid analytic %q", x)
		}
	}
	if len(a) == 0 {
		return nil, nil
	}
	out := slices.Clone(a)
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (c *NewCamera) normalizeValidate() error {
	if !storage.ValidID(c.ID) {
		return invalid("invalid_id", "invalid camera id %q", c.ID)
	}
	if err := validName(c.Name); err != nil {
		return err
	}
	if len(c.Streams) == 0 || len(c.Streams) > maxStreamsPerCamera {
		return invalid("invalid_streams", "a camera has 1 to %d streams", maxStreamsPerCamera)
	}
	seen := map[string]bool{}
	for i := range c.Streams {
		s := &c.Streams[i]
		if !storage.ValidID(s.ID) {
			return invalid("invalid_id", "invalid stream id %q", s.ID)
		}
		if seen[s.ID] {
			return invalid("invalid_streams", "stream id %q given twice", s.ID)
		}
		seen[s.ID] = true
		if (s.Width == nil) != (s.Height == nil) {
			return invalid("invalid_resolution", "stream %s: width and height are given together", s.ID)
		}
		if s.Width != nil {
			if err := validResolution(*s.Width, *s.Height); err != nil {
				return err
			}
		}
		if s.RetentionDays != nil {
			if err := validRetention(*s.RetentionDays); err != nil {
				return err
			}
		}
		a, err := normAnalytics(s.Analytics)
		if err != nil {
			return err
		}
		s.Analytics = a
	}
	return nil
}

// CreateCameraCmd is the payload of cluster.CmdCreateCamera.
type CreateCameraCmd struct {
	Bridge string    `json:"bridge"`
	Camera NewCamera `json:"camera"`
}

// StreamPatch is PATCH /v1/streams/{id}; nil fields are left alone. Setting
// only one of width and height keeps the other at its current value.
type StreamPatch struct {
	Width         *int      `json:"width,omitempty"`
	Height        *int      `json:"height,omitempty"`
	RetentionDays *int      `json:"retention_days,omitempty"`
	Analytics     *[]string `json:"analytics,omitempty"`
}

func (p *StreamPatch) normalizeValidate() error {
	for _, v := range []*int{p.Width, p.Height} {
		if v != nil && (*v <= 0 || *v > MaxDimension) {
			return invalid("invalid_resolution", "width and height must be 1 to %d, not %d", MaxDimension, *v)
		}
	}
	if p.RetentionDays != nil {
		if err := validRetention(*p.RetentionDays); err != nil {
			return err
		}
	}
	if p.Analytics != nil {
		a, err := normAnalytics(*p.Analytics)
		if err != nil {
			return err
		}
		if a == nil {
			a = []string{}
		}
		p.Analytics = &a
	}
	return nil
}

// UpdateStreamCmd is the payload of cluster.CmdUpdateStream.
type UpdateStreamCmd struct {
	ID    string      `json:"id"`
	Patch StreamPatch `json:"patch"`
}

// DeleteCameraCmd is the payload of cluster.CmdDeleteCamera.
type DeleteCameraCmd struct {
	ID string `json:"id"`
}
