package billing_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/replica"
)

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// benchFSM returns an FSM with n streams (one account, one bridge, cameras
// of 4 streams) and the stream ids.
func benchFSM(b *testing.B, n int) (*replica.Machine, []string) {
	b.Helper()
	f := replica.NewMachine(nil)
	var idx uint64
	apply := func(typ, rid, nonce string, p any) {
		cmd, err := cluster.EncodeCommand(typ, rid, start, nonce, p)
		if err != nil {
			b.Fatal(err)
		}
		idx++
		if err := cluster.ApplyError(f.Apply(&raft.Log{Index: idx, Data: cmd})); err != nil {
			b.Fatal(err)
		}
	}
	apply(cluster.CmdCreateAccount, "a", "", accounts.NewAccount{ID: "a", Name: "a"})
	apply(cluster.CmdCreateBridge, "b", fmt.Sprintf("%032d", 1), accounts.CreateBridgeCmd{Account: "a", Bridge: accounts.NewBridge{ID: "b", Name: "b"}})
	var ids []string
	for c := 0; c < n/4; c++ {
		nc := accounts.NewCamera{ID: fmt.Sprintf("c%d", c), Name: "c"}
		for k := range 4 {
			id := fmt.Sprintf("c%d-%d", c, k)
			nc.Streams = append(nc.Streams, accounts.NewStream{ID: id})
			ids = append(ids, id)
		}
		apply(cluster.CmdCreateCamera, nc.ID, "", accounts.CreateCameraCmd{Bridge: "b", Camera: nc})
	}
	return f, ids
}

// BenchmarkApplyUsageBatch is one follower's cost of a 1,000-entry batch:
// decode and apply (the proposer's encoding is outside the timer).
func BenchmarkApplyUsageBatch(b *testing.B) {
	f, ids := benchFSM(b, 10_000)
	const size = 1000
	cmds := make([][]byte, 64)
	for i := range cmds {
		at := start.Add(time.Duration(i+1) * time.Second)
		ub := meter.UsageBatch{ID: fmt.Sprintf("u%d", i), To: at}
		for k := range size {
			ub.Entries = append(ub.Entries, meter.UsageEntry{Stream: ids[(i*size+k)%len(ids)], StoredBytes: 1 << 20, StoredObjects: 1, IngestedBytes: 1 << 20, Segments: 1})
		}
		cmd, err := cluster.EncodeCommand(cluster.CmdUsageBatch, "usage/"+ub.ID, at, "", ub)
		if err != nil {
			b.Fatal(err)
		}
		cmds[i] = cmd
	}
	idx := uint64(1 << 20)
	// A repeated request id would be deduplicated: keep no table.
	f.SetMaxRequests(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx++
		// A fresh request id each time: a repeated one would be deduplicated.
		if err := cluster.ApplyError(f.Apply(&raft.Log{Index: idx, Data: cmds[i%len(cmds)]})); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkLargeState is the billing run, its rendering, the snapshot and
// the restore at 100,000 streams with usage in two months.
func BenchmarkLargeState(b *testing.B) {
	f, ids := benchFSM(b, 100_000)
	idx := uint64(1 << 20)
	for i, at := range []time.Time{start.Add(time.Hour), start.AddDate(0, 1, 0)} {
		ub := meter.UsageBatch{ID: fmt.Sprintf("load-%d", i), To: at}
		for _, id := range ids {
			ub.Entries = append(ub.Entries, meter.UsageEntry{Stream: id, StoredBytes: 1 << 20, StoredObjects: 1, IngestedBytes: 1 << 20, Segments: 1, Width: 1920, Height: 1080})
		}
		cmd, err := cluster.EncodeCommand(cluster.CmdUsageBatch, "usage/"+ub.ID, at, "", ub)
		if err != nil {
			b.Fatal(err)
		}
		idx++
		if err := cluster.ApplyError(f.Apply(&raft.Log{Index: idx, Data: cmd})); err != nil {
			b.Fatal(err)
		}
	}
	m, _ := billing.ParseMonth("2026-03")
	bl := f.Billing()
	b.Run("billing", func(b *testing.B) {
		for b.Loop() {
			run, err := bl.Run(meter.MonthName(m), true, billing.CutOff(m))
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := billing.RenderBillingRun(&run, "json", ""); err != nil {
				b.Fatal(err)
			}
			if _, _, err := billing.RenderBillingRun(&run, "csv", "items"); err != nil {
				b.Fatal(err)
			}
		}
	})
	var snap []byte
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			s, err := f.Snapshot()
			if err != nil {
				b.Fatal(err)
			}
			var sink benchSink
			if err := s.Persist(&sink); err != nil {
				b.Fatal(err)
			}
			snap = sink.Bytes()
		}
		b.ReportMetric(float64(len(snap)), "bytes")
	})
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			if err := replica.NewMachine(nil).Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type benchSink struct{ bytes.Buffer }

func (s *benchSink) ID() string    { return "bench" }
func (s *benchSink) Cancel() error { return nil }
func (s *benchSink) Close() error  { return nil }
