package entitlement_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/entitlement"
	"github.com/vigilcloud/vigil/internal/machinetest"
)

// TestBillingAcrossTerm: a covered stream is listed with its activation
// ID and not charged in every run whose cut-off falls within the term; the
// run of the month in which the term ends charges it again, and the run
// before that lists the unit as expiring. An activation stamped exactly at
// a month's end counts for that month's run, like every event at the
// cut-off (docs/billing.md).
func TestBillingAcrossTerm(t *testing.T) {
	h := machinetest.New(t)
	tree(h) // streams registered 2026-03-01
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		return v
	}
	mk := func(name, product string, q, term int, when string) {
		h.MustAt(at(when), cluster.CmdCreateEntitlement, "c-"+name, aid(name), entitlement.CreateCmd{Account: "d1", Product: product, Quantity: q, TermMonths: term, Actor: "operator"})
		h.Must(cluster.CmdSplitEntitlement, "s-"+name, aid(name+"-r"), entitlement.SplitCmd{ID: aid(name), Account: "r1", Quantity: q, Actor: "operator"})
		h.Must(cluster.CmdSplitEntitlement, "s2-"+name, aid(name+"-s"), entitlement.SplitCmd{ID: aid(name + "-r"), Account: "s1", Quantity: q, Actor: "operator"})
	}
	mk("three", "HD1-D30", 1, 3, "2026-03-05T00:00:00Z")
	h.MustAt(at("2026-03-10T00:00:00Z"), cluster.CmdActivateEntitlement, "a-three", "", entitlement.ActivateCmd{ID: aid("three-s"), Streams: []string{"hd1a"}, Actor: "operator"})
	// One month, activated at the very end of March: covers April.
	mk("one", "HD1-D30", 1, 1, "2026-03-31T00:00:00Z")
	h.MustAt(at("2026-04-01T00:00:00Z"), cluster.CmdActivateEntitlement, "a-one", "", entitlement.ActivateCmd{ID: aid("one-s"), Streams: []string{"hd1b"}, Actor: "operator"})
	// The people counting of hd1b, for a year.
	mk("pc", "people_counting", 1, 12, "2026-04-02T00:00:00Z")
	h.Must(cluster.CmdActivateEntitlement, "a-pc", "", entitlement.ActivateCmd{ID: aid("pc-s"), Streams: []string{"hd1b"}, Actor: "operator"})
	h.MustAt(at("2026-08-01T00:00:00Z"), cluster.CmdUsageTick, "", "", struct{}{})

	three, one, pc := aid("three-s"), aid("one-s"), aid("pc-s")
	type want struct {
		a, b     string // covered: hd1a, hd1b ("" = charged)
		pc       string // hd1b's people counting covered by
		expiring []string
	}
	for month, w := range map[string]want{
		"2026-03": {a: three, b: one, expiring: []string{one}}, // ends 2026-05-01T00:00, the cut-off of April
		"2026-04": {a: three, pc: pc},
		"2026-05": {a: three, pc: pc, expiring: []string{three}}, // ends 2026-06-10
		"2026-06": {pc: pc},
		"2026-07": {pc: pc},
	} {
		run := h.Final(month)
		it := machinetest.Items(run)
		require.Equal(t, w.a, it["hd1a"].Covered, "%s hd1a", month)
		require.Equal(t, w.b, it["hd1b"].Covered, "%s hd1b", month)
		require.Equal(t, w.pc, it["hd1b"].CoveredAnalytics["people_counting"], "%s people counting", month)
		require.Empty(t, it["hd2"].Covered)
		// Charged: what is not covered; the summary counts only that.
		s1 := account(t, run, "r1", "s1")
		charged := 3
		for _, c := range []string{w.a, w.b} {
			if c != "" {
				charged--
			}
		}
		require.Equal(t, charged, s1.Summary.Streams, month)
		require.Equal(t, charged, s1.Summary.SKUs["HD1-D30"]+s1.Summary.SKUs["HD2-D30"], month)
		covered := 3 - charged
		if w.pc != "" {
			covered++
			require.Zero(t, s1.Summary.Analytics["people_counting"], month)
		} else {
			require.Equal(t, 1, s1.Summary.Analytics["people_counting"], month)
		}
		require.Equal(t, covered, s1.Summary.Covered, month)
		var exp []string
		for _, e := range s1.Expiring {
			exp = append(exp, e.Activation)
		}
		require.Equal(t, w.expiring, exp, month)
	}

	// The run groups by the whole chain: r1 under d1, r0 on its own.
	run := h.Final("2026-05")
	require.Len(t, run.Distributors, 1)
	require.Equal(t, "d1", run.Distributors[0].ID)
	require.Equal(t, []string{"r1"}, run.Distributors[0].Resellers)
	for _, r := range run.Resellers {
		switch r.ID {
		case "r1":
			require.Equal(t, "d1", r.Distributor)
		case "r0":
			require.Empty(t, r.Distributor)
		default:
			t.Fatalf("reseller %s in the run", r.ID)
		}
	}
	require.Equal(t, "d1", machinetest.Items(run)["hd1a"].Distributor)
	body, _, err := billing.RenderBillingRun(&run, "csv", "items")
	require.NoError(t, err)
	lines := strings.Split(string(body), "\n")
	require.True(t, strings.HasSuffix(lines[0], ",distributor,covered,covered_analytics"), lines[0])
	require.Contains(t, string(body), ",d1,"+three+",")
	require.Contains(t, string(body), "people_counting="+pc)
}

func account(t *testing.T, run billing.BillingRun, reseller, id string) billing.AccountRun {
	t.Helper()
	for _, r := range run.Resellers {
		for _, a := range r.Accounts {
			if r.ID == reseller && a.ID == id {
				return a
			}
		}
	}
	t.Fatalf("no account %s under %s in run %s", id, reseller, run.Month)
	return billing.AccountRun{}
}

// TestBillingAnnualAfterTerm: an annual customer books nothing for a month
// an entitlement covered; when the term ends the stream enters the running
// cycle as new, charged for the rest of it.
func TestBillingAnnualAfterTerm(t *testing.T) {
	h := machinetest.New(t) // 2026-03-01
	tree(h)
	h.Must(cluster.CmdCreateAccount, "acct-y", "", accounts.NewAccount{ID: "y", Name: "Annual", Parent: "r1", BillingCycle: accounts.CycleAnnual})
	h.Must(cluster.CmdCreateBridge, "b-y", auth.NewToken(), accounts.CreateBridgeCmd{Account: "y", Bridge: accounts.NewBridge{ID: "b-y", Name: "B"}})
	h.Must(cluster.CmdCreateCamera, "cam-y", "", accounts.CreateCameraCmd{Bridge: "b-y", Camera: machinetest.Cam("cam-y",
		accounts.NewStream{ID: "y1", Width: machinetest.IP(1280), Height: machinetest.IP(720), RetentionDays: machinetest.IP(30)})})
	h.Must(cluster.CmdCreateEntitlement, "c-y", aid("y"), entitlement.CreateCmd{Account: "d1", Product: "HD1-D30", Quantity: 1, TermMonths: 1, Actor: "operator"})
	h.Must(cluster.CmdSplitEntitlement, "s-y", aid("y-r"), entitlement.SplitCmd{ID: aid("y"), Account: "r1", Quantity: 1, Actor: "operator"})
	h.Must(cluster.CmdSplitEntitlement, "s2-y", aid("y-s"), entitlement.SplitCmd{ID: aid("y-r"), Account: "y", Quantity: 1, Actor: "operator"})
	h.Must(cluster.CmdActivateEntitlement, "a-y", "", entitlement.ActivateCmd{ID: aid("y-s"), Streams: []string{"y1"}, Actor: "operator"})
	h.MustAt(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), cluster.CmdUsageTick, "", "", struct{}{})

	mar := machinetest.Items(h.Final("2026-03"))["y1"]
	require.Equal(t, aid("y-s"), mar.Covered)
	apr := machinetest.Items(h.Final("2026-04"))["y1"]
	require.Empty(t, apr.Covered)
	require.Equal(t, billing.ChangeNew, apr.Change, "the covered month booked nothing")
	require.Equal(t, 11, apr.MonthsLeft)
	require.Equal(t, "HD1-D30", apr.SKU)
}
