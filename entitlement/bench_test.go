package entitlement_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/entitlement"
	"github.com/vigilcloud/vigil/replica"
)

// BenchmarkBillingRunCovered is the March run of 100,000 streams of one end
// customer (JSON and CSV rendered), with none covered (the baseline) and
// with half of them covered by entitlement units.
func BenchmarkBillingRunCovered(b *testing.B) {
	const n = 100_000
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, covered := range []int{0, n / 2} {
		b.Run(fmt.Sprintf("covered=%d", covered), func(b *testing.B) {
			f := replica.NewMachine(nil)
			var idx uint64
			apply := func(typ, rid, nonce string, p any) {
				cmd, err := cluster.EncodeCommand(typ, rid, at, nonce, p)
				if err != nil {
					b.Fatal(err)
				}
				idx++
				if err := cluster.ApplyError(f.Apply(&raft.Log{Index: idx, Data: cmd})); err != nil {
					b.Fatal(err)
				}
			}
			apply(cluster.CmdCreateAccount, "r", "", accounts.NewAccount{ID: "r", Name: "r"})
			apply(cluster.CmdCreateAccount, "s", "", accounts.NewAccount{ID: "s", Name: "s", Parent: "r"})
			apply(cluster.CmdCreateBridge, "b", fmt.Sprintf("%032d", 1), accounts.CreateBridgeCmd{Account: "s", Bridge: accounts.NewBridge{ID: "b", Name: "b"}})
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
			if covered > 0 {
				apply(cluster.CmdCreateEntitlement, "e", "bench-root-entitlement", entitlement.CreateCmd{Account: "r", Product: "HD1-D30", Quantity: covered, TermMonths: 12})
				apply(cluster.CmdSplitEntitlement, "e2", "bench-customer-entitlement", entitlement.SplitCmd{ID: "bench-root-entitlement", Account: "s", Quantity: covered})
				for i := 0; i < covered; i += entitlement.MaxActivate {
					apply(cluster.CmdActivateEntitlement, fmt.Sprintf("a%d", i), "", entitlement.ActivateCmd{ID: "bench-customer-entitlement", Streams: ids[i : i+entitlement.MaxActivate]})
				}
			}
			m, _ := billing.ParseMonth("2026-03")
			bl := f.Billing()
			for b.Loop() {
				run, err := bl.Run("2026-03", true, billing.CutOff(m))
				if err != nil {
					b.Fatal(err)
				}
				if run.Summary.Covered != covered || run.Summary.Streams != n-covered {
					b.Fatalf("covered %d streams %d", run.Summary.Covered, run.Summary.Streams)
				}
				if _, _, err := billing.RenderBillingRun(&run, "json", ""); err != nil {
					b.Fatal(err)
				}
				if _, _, err := billing.RenderBillingRun(&run, "csv", "items"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
