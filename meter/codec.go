package meter

import (
	"errors"

	"github.com/vigilcloud/vigil/cluster"
)

// Usage batches are proposed in the binary form (cluster.EncodeCommand,
// wire.go): every voter decodes every batch, and with encoding/json the
// decoding was most of the cost of applying one. Batches written before
// the binary form are JSON and still apply.

// AppendBinary implements encoding.BinaryAppender: the batch's binary form.
func (b UsageBatch) AppendBinary(buf []byte) ([]byte, error) {
	w := wireUsageBatch{ID: b.ID, From: b.From.UTC(), To: b.To.UTC(), Entries: make([]wireUsageEntry, len(b.Entries))}
	for i, e := range b.Entries {
		w.Entries[i] = wireUsageEntry(e)
	}
	return w.MarshalMsg(buf)
}

// DecodeBatch decodes a usage_batch payload in either form.
func DecodeBatch(c *cluster.Command, b *UsageBatch) error {
	if !c.Binary {
		return c.Decode(b)
	}
	var w wireUsageBatch
	rest, err := w.UnmarshalMsg(c.Payload)
	if err == nil && len(rest) > 0 {
		err = errors.New("trailing data after the payload")
	}
	if err != nil {
		return cluster.Invalid("malformed_command", "%s: undecodable payload: %v", c.Type, err)
	}
	*b = UsageBatch{ID: w.ID, From: w.From.UTC(), To: w.To.UTC(), Entries: make([]UsageEntry, len(w.Entries))}
	for i, e := range w.Entries {
		b.Entries[i] = UsageEntry(e)
	}
	return nil
}
