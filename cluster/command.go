package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Command is what goes through the raft log. Everything an apply function
// needs is in it: the proposer stamps Time (the state machine never reads a
// clock) and RequestID (a retried write whose first attempt committed is
// applied once), and puts values it generated (a bridge token's hash, a
// purge id) in Nonce, which is not part of the request's identity: a retry
// carries a fresh nonce, and the deduplicated replay returns the first
// attempt's result.
type Command struct {
	Type      string          `json:"type"`
	RequestID string          `json:"request_id"`
	Time      time.Time       `json:"time"`
	Nonce     string          `json:"nonce,omitempty"`
	Payload   json.RawMessage `json:"payload"`
	// Version is what the command means when applied (CommandVersion).
	Version int `json:"version,omitempty"`

	// Binary: Payload is in the binary form (msgpack), which the command's
	// apply function decodes itself.
	Binary bool `json:"-"`
}

// Command versions. A log entry keeps the meaning it had when it was first
// applied: replicas restore snapshots taken at different indexes and replay
// the rest, so an entry that meant something else to the version that
// wrote it would leave them with different states. A proposer stamps
// CommandVersion on every JSON command; entries without one (0) replay with
// the earlier meaning (docs/accounts.md, upgrade). The binary form (usage
// batches) carries none: its meaning has not changed.
const (
	// CommandV1: an account defaults change moves no existing stream (they
	// are pinned first), a new stream pins its settings, a deleted account
	// takes no change, a bridge result holds no token.
	CommandV1 = 1
	// CommandV2: update_account keeps privacy mode on when the reseller
	// withdraws privacy_mode_allowed, ends a suspension on
	// privacy_suspended_until null, and writes privacy changes to the
	// account's audit log.
	CommandV2      = 2
	CommandVersion = CommandV2
)

// Legacy reports whether c was written before CommandV1 and applies with
// the earlier meaning.
func (c *Command) Legacy() bool { return c.Version < CommandV1 }

// Before reports whether c was written before command version v and
// applies with the meaning it had then.
func (c *Command) Before(v int) bool { return c.Version < v }

// identity is what a request id stands for: a reused id with another
// identity is refused.
func (c *Command) identity() string {
	h := sha256.New()
	h.Write([]byte(c.Type))
	h.Write([]byte{0})
	h.Write(c.Payload)
	return hex.EncodeToString(h.Sum(nil))
}

// Decode decodes c's JSON payload into v, refusing unknown fields. A
// refusal is an invalid command (malformed_command).
func (c *Command) Decode(v any) error {
	if c.Binary {
		return Invalid("malformed_command", "%s: no binary form", c.Type)
	}
	d := json.NewDecoder(bytes.NewReader(c.Payload))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return Invalid("malformed_command", "%s: undecodable payload: %v", c.Type, err)
	}
	return nil
}

// Log entry encodings. Usage batches are the meter's volume: every voter
// decodes every batch, and with encoding/json the decoding was most of the
// cost of applying one. A payload that implements encoding.BinaryAppender
// is therefore proposed in a compact binary form: the byte binaryV1, then
// the command as msgpack (wire.go). Every other command, and every entry
// written before the binary form existed, is a JSON object (first byte
// '{') and still applies: the first byte tells them apart.
//
// A voter must understand the binary form before any proposer uses it:
// upgrade every meter voter before they take usage again.
const binaryV1 byte = 0x01

// EncodeCommand builds the log entry of a command, stamped at (the
// proposer's time).
func EncodeCommand(typ, requestID string, at time.Time, nonce string, payload any) ([]byte, error) {
	if ba, ok := payload.(encoding.BinaryAppender); ok {
		p, err := ba.AppendBinary(nil)
		if err != nil {
			return nil, err
		}
		c := wireCommand{Type: typ, RequestID: requestID, Time: at.UTC(), Nonce: nonce, Payload: p}
		return c.MarshalMsg(append(make([]byte, 0, 1+c.Msgsize()), binaryV1))
	}
	p, err := json.Marshal(payload)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Command{Type: typ, RequestID: requestID, Time: at.UTC(), Nonce: nonce, Payload: p, Version: CommandVersion})
}

// DecodeCommand decodes a log entry in either form.
func DecodeCommand(data []byte) (Command, error) {
	if len(data) == 0 || data[0] != binaryV1 {
		var c Command
		if err := json.Unmarshal(data, &c); err != nil {
			return Command{}, err
		}
		if c.Type == "" {
			return Command{}, errors.New("no command type")
		}
		return c, nil
	}
	var w wireCommand
	rest, err := w.UnmarshalMsg(data[1:])
	if err != nil {
		return Command{}, fmt.Errorf("binary command: %w", err)
	}
	if len(rest) > 0 {
		return Command{}, errors.New("binary command: trailing data")
	}
	if w.Type == "" {
		return Command{}, errors.New("binary command: no command type")
	}
	// msgp decodes times in the local zone; the state machine's are UTC.
	return Command{Type: w.Type, RequestID: w.RequestID, Time: w.Time.UTC(), Nonce: w.Nonce, Payload: w.Payload, Binary: true}, nil
}

// Error kinds of a refused command.
var (
	// ErrNotFound: an unknown (or deleted) object.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a create collides with a different object of the same id.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: a bad field, or a parent that does not exist.
	ErrInvalid = errors.New("invalid")
)

// Error is a refused command: Kind is ErrInvalid, ErrNotFound or
// ErrConflict, Code the contract's machine-readable error code. Refusals
// are recorded in results, so every replica and the proposer see the same.
type Error struct {
	Kind error
	Code string
	Msg  string
}

func (e *Error) Error() string { return "meter: " + e.Msg }

// Unwrap makes errors.Is(err, ErrNotFound) etc. work.
func (e *Error) Unwrap() error { return e.Kind }

// Invalid is a refusal of invalid content.
func Invalid(code, format string, args ...any) *Error {
	return &Error{Kind: ErrInvalid, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// NotFound is a refusal naming an unknown object.
func NotFound(format string, args ...any) *Error {
	return &Error{Kind: ErrNotFound, Code: "not_found", Msg: fmt.Sprintf(format, args...)}
}

// Conflict is a refusal of a colliding create.
func Conflict(code, format string, args ...any) *Error {
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

// Result is what the state machine's Apply returns to the proposer.
type Result struct {
	Data json.RawMessage
	Err  *wireError
}

// Error returns the refusal the result carries, nil if none.
func (r *Result) Error() error {
	if r.Err == nil {
		return nil
	}
	return r.Err.err()
}

// ApplyError returns the refusal a Machine's apply result carries, if any
// (for harnesses that run raft themselves).
func ApplyError(res any) error {
	r, ok := res.(*Result)
	if !ok {
		return fmt.Errorf("meter: unexpected apply result %T", res)
	}
	return r.Error()
}
