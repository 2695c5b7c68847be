package storage_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/fs"
)

func TestInstrumentCountsOperationsByResult(t *testing.T) {
	b, err := fs.New(t.TempDir())
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	ib := storage.Instrument(b, reg)
	_ = storage.Instrument(b, reg) // a second backend on the same registry shares the metric
	ctx := context.Background()

	_, err = ib.Put(ctx, "a/b", bytes.NewReader([]byte("x")), 1, storage.PutOptions{IfAbsent: true})
	require.NoError(t, err)
	_, err = ib.Put(ctx, "a/b", bytes.NewReader([]byte("x")), 1, storage.PutOptions{IfAbsent: true})
	require.True(t, errors.Is(err, storage.ErrExists))
	_, err = ib.Stat(ctx, "a/missing")
	require.Error(t, err)

	counts := map[string]uint64{}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "vigil_storage_operation_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + " "
			}
			counts[key] = m.GetHistogram().GetSampleCount()
		}
	}
	// Errors are exported at 0 before the first one.
	for _, op := range []string{"put", "get", "stat", "list", "delete", "ping"} {
		key := "op=" + op + " result=error "
		c, ok := counts[key]
		assert.True(t, ok && c == 0, key)
		delete(counts, key)
	}
	assert.Equal(t, map[string]uint64{
		"op=put result=ok ":         1,
		"op=put result=exists ":     1,
		"op=stat result=not_found ": 1,
	}, counts)
}
