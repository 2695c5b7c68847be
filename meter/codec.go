package meter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Log entry encodings. Usage batches are the meter's volume: every voter
// decodes every batch, and with encoding/json the decoding was most of the
// cost of applying one. They are therefore proposed in a compact binary
// form: the byte cmdBinaryV1, then the command as msgpack (wire.go). Every
// other command, and every entry written before the binary form existed,
// is a JSON object (first byte '{') and still applies: the first byte
// tells them apart.
//
// A voter must understand the binary form before any proposer uses it:
// upgrade every meter voter before they take usage again.
const cmdBinaryV1 byte = 0x01

// binaryPayload reports whether commands of type typ are proposed in the
// binary form.
func binaryPayload(typ string) bool { return typ == cmdUsageBatch }

// encodeCommand builds the log entry of a command, stamped at (the
// proposer's time).
func encodeCommand(typ, requestID string, at time.Time, nonce string, payload any) ([]byte, error) {
	if !binaryPayload(typ) {
		p, err := json.Marshal(payload)
		if err != nil {
			return nil, err
		}
		return json.Marshal(Command{Type: typ, RequestID: requestID, Time: at.UTC(), Nonce: nonce, Payload: p, Version: cmdVersion})
	}
	var wb wireUsageBatch
	switch b := payload.(type) {
	case UsageBatch:
		wb = toWireBatch(&b)
	case *UsageBatch:
		wb = toWireBatch(b)
	default:
		return nil, fmt.Errorf("meter: %s: no binary form for %T", typ, payload)
	}
	p, err := wb.MarshalMsg(nil)
	if err != nil {
		return nil, err
	}
	c := wireCommand{Type: typ, RequestID: requestID, Time: at.UTC(), Nonce: nonce, Payload: p}
	return c.MarshalMsg(append(make([]byte, 0, 1+c.Msgsize()), cmdBinaryV1))
}

func toWireBatch(b *UsageBatch) wireUsageBatch {
	w := wireUsageBatch{ID: b.ID, From: b.From.UTC(), To: b.To.UTC(), Entries: make([]wireUsageEntry, len(b.Entries))}
	for i, e := range b.Entries {
		w.Entries[i] = wireUsageEntry(e)
	}
	return w
}

// decodeCommand decodes a log entry in either form.
func decodeCommand(data []byte) (Command, error) {
	if len(data) == 0 || data[0] != cmdBinaryV1 {
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
	// msgp decodes times in the local zone; the meter's are UTC.
	return Command{Type: w.Type, RequestID: w.RequestID, Time: w.Time.UTC(), Nonce: w.Nonce, Payload: w.Payload, binary: true}, nil
}

// decodePayload decodes c's payload into v; JSON refuses unknown fields.
func (c *Command) decodePayload(v any) error {
	if !c.binary {
		d := json.NewDecoder(bytes.NewReader(c.Payload))
		d.DisallowUnknownFields()
		return d.Decode(v)
	}
	b, ok := v.(*UsageBatch)
	if !ok || !binaryPayload(c.Type) {
		return fmt.Errorf("no binary form for %s", c.Type)
	}
	var w wireUsageBatch
	rest, err := w.UnmarshalMsg(c.Payload)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return errors.New("trailing data after the payload")
	}
	*b = UsageBatch{ID: w.ID, From: w.From.UTC(), To: w.To.UTC(), Entries: make([]UsageEntry, len(w.Entries))}
	for i, e := range w.Entries {
		b.Entries[i] = UsageEntry(e)
	}
	return nil
}
