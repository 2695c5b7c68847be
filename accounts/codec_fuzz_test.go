package accounts_test

import (
	"testing"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/replica"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// FuzzDecodeCommand: any log entry decodes or fails cleanly; a binary usage
// batch that decodes encodes back to the same batch.
func FuzzDecodeCommand(f *testing.F) {
	at := time.Date(2026, 3, 6, 0, 0, 0, 0, time.UTC)
	bin, err := cluster.EncodeCommand(cluster.CmdUsageBatch, "usage/x", at, "", meter.UsageBatch{ID: "x", From: at.Add(-time.Second), To: at,
		Entries: []meter.UsageEntry{{Stream: "st", StoredBytes: -5, StoredObjects: 1, IngestedBytes: 7, Segments: 1, Width: 640, Height: 480}}})
	require.NoError(f, err)
	js, err := cluster.EncodeCommand(cluster.CmdCreateAccount, "a", at, "", accounts.NewAccount{ID: "a", Name: "A"})
	require.NoError(f, err)
	f.Add(bin)
	f.Add(js)
	f.Add([]byte{0x01, 0x95}) // the binary form's first byte
	f.Add([]byte(`{"type":"usage_batch","payload":{"entries":[{"s":"a"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := cluster.DecodeCommand(data)
		if err != nil || !c.Binary {
			return
		}
		var b meter.UsageBatch
		if meter.DecodeBatch(&c, &b) != nil {
			return
		}
		again, err := cluster.EncodeCommand(c.Type, c.RequestID, c.Time, c.Nonce, b)
		require.NoError(t, err)
		c2, err := cluster.DecodeCommand(again)
		require.NoError(t, err)
		var b2 meter.UsageBatch
		require.NoError(t, meter.DecodeBatch(&c2, &b2))
		require.Equal(t, b, b2)
		require.True(t, c.Time.Equal(c2.Time))
		// The FSM takes it without a panic.
		replica.NewMachine(nil).Apply(&raft.Log{Index: 1, Data: data})
	})
}
