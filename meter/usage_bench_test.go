package meter

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// benchFSM returns an FSM with n streams (one account, one bridge, cameras
// of 4 streams) and the stream ids.
func benchFSM(b *testing.B, n int) (*fsm, []string) {
	b.Helper()
	f := newFSM(slog.New(slog.DiscardHandler))
	var idx uint64
	apply := func(typ, rid, nonce string, p any) {
		cmd, err := EncodeCommand(typ, rid, t0, nonce, p)
		if err != nil {
			b.Fatal(err)
		}
		idx++
		if err := ApplyError(f.Apply(&raft.Log{Index: idx, Data: cmd})); err != nil {
			b.Fatal(err)
		}
	}
	apply(cmdCreateAccount, "a", "", NewAccount{ID: "a", Name: "a"})
	apply(cmdCreateBridge, "b", fmt.Sprintf("%032d", 1), createBridge{Account: "a", Bridge: NewBridge{ID: "b", Name: "b"}})
	var ids []string
	for c := 0; c < n/4; c++ {
		nc := NewCamera{ID: fmt.Sprintf("c%d", c), Name: "c"}
		for k := range 4 {
			id := fmt.Sprintf("c%d-%d", c, k)
			nc.Streams = append(nc.Streams, NewStream{ID: id})
			ids = append(ids, id)
		}
		apply(cmdCreateCamera, nc.ID, "", createCamera{Bridge: "b", Camera: nc})
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
		at := t0.Add(time.Duration(i+1) * time.Second)
		ub := UsageBatch{ID: fmt.Sprintf("u%d", i), To: at}
		for k := range size {
			ub.Entries = append(ub.Entries, UsageEntry{Stream: ids[(i*size+k)%len(ids)], StoredBytes: 1 << 20, StoredObjects: 1, IngestedBytes: 1 << 20, Segments: 1})
		}
		cmd, err := EncodeCommand(cmdUsageBatch, usageRequestIDPrefix+ub.ID, at, "", ub)
		if err != nil {
			b.Fatal(err)
		}
		cmds[i] = cmd
	}
	idx := uint64(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx++
		// A fresh request id each time: a repeated one would be deduplicated.
		f.mu.Lock()
		clear(f.st.reqs)
		f.st.Requests = f.st.Requests[:0]
		f.mu.Unlock()
		if err := ApplyError(f.Apply(&raft.Log{Index: idx, Data: cmds[i%len(cmds)]})); err != nil {
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
	for i, at := range []time.Time{t0.Add(time.Hour), t0.AddDate(0, 1, 0)} {
		ub := UsageBatch{ID: fmt.Sprintf("load-%d", i), To: at}
		for _, id := range ids {
			ub.Entries = append(ub.Entries, UsageEntry{Stream: id, StoredBytes: 1 << 20, StoredObjects: 1, IngestedBytes: 1 << 20, Segments: 1, Width: 1920, Height: 1080})
		}
		cmd, err := EncodeCommand(cmdUsageBatch, usageRequestIDPrefix+ub.ID, at, "", ub)
		if err != nil {
			b.Fatal(err)
		}
		idx++
		if err := ApplyError(f.Apply(&raft.Log{Index: idx, Data: cmd})); err != nil {
			b.Fatal(err)
		}
	}
	m, _ := ParseMonth("2026-03")
	b.Run("billing", func(b *testing.B) {
		for b.Loop() {
			run := f.billingRun(m, true, CutOff(m))
			if _, _, err := RenderBillingRun(&run, "json", ""); err != nil {
				b.Fatal(err)
			}
			if _, _, err := RenderBillingRun(&run, "csv", "items"); err != nil {
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
			if err := newFSM(f.log).Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type benchSink struct{ bytes.Buffer }

func (s *benchSink) ID() string    { return "bench" }
func (s *benchSink) Cancel() error { return nil }
func (s *benchSink) Close() error  { return nil }
