package meter

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// StateMachine exposes the meter's state machine to harnesses that run raft
// themselves (the meter benchmark builds a 3-voter cluster directly).
type StateMachine struct{ f *fsm }

// NewStateMachine returns an empty meter state machine.
func NewStateMachine(log *slog.Logger) *StateMachine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &StateMachine{f: newFSM(log)}
}

// FSM returns the raft.BatchingFSM to hand to raft.NewRaft.
func (s *StateMachine) FSM() raft.BatchingFSM { return s.f }

// BillingRun evaluates month (YYYY-MM) as final (cut-off at the month's end)
// or as a preview with cut-off now.
func (s *StateMachine) BillingRun(month string, final bool, now time.Time) (BillingRun, error) {
	m, err := ParseMonth(month)
	if err != nil {
		return BillingRun{}, err
	}
	return s.f.billingRun(m, final, now), nil
}

// EncodeCommand builds the log entry of a command. typ is one of the
// CommandType* constants.
func EncodeCommand(typ, requestID string, at time.Time, nonce string, payload any) ([]byte, error) {
	return encodeCommand(typ, requestID, at, nonce, payload)
}

// Command types for EncodeCommand, with their payloads.
const (
	CommandCreateAccount = cmdCreateAccount // NewAccount
	CommandUsageBatch    = cmdUsageBatch    // UsageBatch
)

// CreateBridgePayload and CreateCameraPayload build those commands'
// payloads (their types are internal).
func CreateBridgePayload(account string, b NewBridge) any {
	return createBridge{Account: account, Bridge: b}
}

// BridgeNonce is the nonce of CommandCreateBridge for token: its hash and
// Digest HA1, never the token itself.
func BridgeNonce(bridge, token string) string { return bridgeNonce(bridge, token) }

// CreateCameraPayload is the payload of CommandCreateCamera.
func CreateCameraPayload(bridge string, c NewCamera) any {
	return createCamera{Bridge: bridge, Camera: c}
}

// More command types for EncodeCommand.
const (
	CommandCreateBridge = cmdCreateBridge // CreateBridgePayload; nonce: BridgeNonce (or, as earlier versions wrote, a token of ≥ 32 bytes)
	CommandCreateCamera = cmdCreateCamera // CreateCameraPayload
)

// ApplyError returns the error a command's apply result carries, if any.
func ApplyError(res any) error {
	r, ok := res.(*applyResult)
	if !ok {
		return fmt.Errorf("meter: unexpected apply result %T", res)
	}
	if r.Err != nil {
		return r.Err.err()
	}
	return nil
}
