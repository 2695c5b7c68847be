package meter

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vigilcloud/vigil/storage"
)

// Command is what goes through the raft log. Everything the FSM needs is in
// it: the proposer stamps Time (the FSM never reads a clock) and RequestID
// (a retried write whose first attempt committed is applied once), and puts
// values it generated (a bridge token, a purge id) in Nonce, which is not
// part of the request's identity: a retry carries a fresh nonce, and the
// deduplicated replay returns the first attempt's result.
type Command struct {
	Type      string          `json:"type"`
	RequestID string          `json:"request_id"`
	Time      time.Time       `json:"time"`
	Nonce     string          `json:"nonce,omitempty"`
	Payload   json.RawMessage `json:"payload"`
	// Version is what the command means when applied (cmdVersion).
	Version int `json:"version,omitempty"`

	binary bool // Payload is msgpack (codec.go), not JSON
}

// Command versions. A log entry keeps the meaning it had when it was first
// applied: replicas restore snapshots taken at different indexes and replay
// the rest, so an entry that meant something else to the version that
// wrote it would leave them with different states. A proposer stamps
// cmdVersion on every JSON command; entries without one (0) replay with the
// earlier meaning (docs/accounts.md, upgrade). The binary form (usage
// batches, codec.go) carries none: its meaning has not changed.
const (
	// cmdV1: an account defaults change moves no existing stream (they are
	// pinned first), a new stream pins its settings, a deleted account
	// takes no change, a bridge result holds no token.
	cmdV1      = 1
	cmdVersion = cmdV1
)

// legacy reports whether c was written before cmdV1 and applies with the
// earlier meaning.
func (c *Command) legacy() bool { return c.Version < cmdV1 }

// Command types.
const (
	cmdCreateAccount = "create_account"
	cmdUpdateAccount = "update_account"
	cmdCreateBridge  = "create_bridge"
	cmdCreateCamera  = "create_camera"
	cmdUpdateStream  = "update_stream"
	cmdDeleteCamera  = "delete_camera"
)

// identity is what a request id stands for: a reused id with another
// identity is refused.
func (c *Command) identity() string {
	h := sha256.New()
	h.Write([]byte(c.Type))
	h.Write([]byte{0})
	h.Write(c.Payload)
	return hex.EncodeToString(h.Sum(nil))
}

// Error is a refused command: Kind is ErrInvalid, ErrNotFound or
// ErrConflict, Code the contract's machine-readable error code.
type Error struct {
	Kind error
	Code string
	Msg  string
}

func (e *Error) Error() string { return "meter: " + e.Msg }

// Unwrap makes errors.Is(err, ErrNotFound) etc. work.
func (e *Error) Unwrap() error { return e.Kind }

func invalid(code, format string, args ...any) *Error {
	return &Error{Kind: ErrInvalid, Code: code, Msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *Error {
	return &Error{Kind: ErrNotFound, Code: "not_found", Msg: fmt.Sprintf(format, args...)}
}

func conflict(code, format string, args ...any) *Error {
	return &Error{Kind: ErrConflict, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// wireError is an *Error as it is recorded in results.
type wireError struct {
	Kind string `json:"kind"`
	Code string `json:"code"`
	Msg  string `json:"msg"`
}

func toWire(err error) *wireError {
	var e *Error
	if !errors.As(err, &e) {
		return &wireError{Kind: "internal", Code: "internal", Msg: err.Error()}
	}
	k := "invalid"
	switch {
	case errors.Is(e.Kind, ErrNotFound):
		k = "not_found"
	case errors.Is(e.Kind, ErrConflict):
		k = "conflict"
	}
	return &wireError{Kind: k, Code: e.Code, Msg: e.Msg}
}

func (w *wireError) err() error {
	var kind error
	switch w.Kind {
	case "not_found":
		kind = ErrNotFound
	case "conflict":
		kind = ErrConflict
	case "invalid":
		kind = ErrInvalid
	default:
		return errors.New("meter: " + w.Msg)
	}
	return &Error{Kind: kind, Code: w.Code, Msg: w.Msg}
}

// Retention bounds (DESIGN.md section 3) and the system default plan HD1-D30.
const (
	MinRetentionDays     = 1
	MaxRetentionDays     = 3650
	DefaultRetentionDays = 30
	DefaultWidth         = 1280
	DefaultHeight        = 720
	maxDimension         = 100_000 // far beyond any camera; keeps w×h sane
	maxNameLen           = 256
	maxStreamsPerCamera  = 64
	maxAnalytics         = 64
)

// NewAccount creates a reseller (no Parent) or a sub-account of a reseller.
type NewAccount struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Parent       string   `json:"parent,omitempty"`
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
	if w <= 0 || h <= 0 || w > maxDimension || h > maxDimension {
		return invalid("invalid_resolution", "width and height must be 1 to %d, not %dx%d", maxDimension, w, h)
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

// AccountPatch is PATCH /v1/accounts/{id}; nil fields are left alone.
type AccountPatch struct {
	Name                  *string        `json:"name,omitempty"`
	BillingCycle          *string        `json:"billing_cycle,omitempty"`
	Defaults              *DefaultsPatch `json:"defaults,omitempty"`
	LockBillingSettings   *bool          `json:"lock_billing_settings,omitempty"`
	PrivacyModeAllowed    *bool          `json:"privacy_mode_allowed,omitempty"`
	PrivacyMode           *bool          `json:"privacy_mode,omitempty"`
	PrivacySuspendedUntil *time.Time     `json:"privacy_suspended_until,omitempty"`
}

type updateAccount struct {
	ID    string       `json:"id"`
	Patch AccountPatch `json:"patch"`
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

type createBridge struct {
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

type createCamera struct {
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
		if v != nil && (*v <= 0 || *v > maxDimension) {
			return invalid("invalid_resolution", "width and height must be 1 to %d, not %d", maxDimension, *v)
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

type updateStream struct {
	ID    string      `json:"id"`
	Patch StreamPatch `json:"patch"`
}

type deleteCamera struct {
	ID string `json:"id"`
}
