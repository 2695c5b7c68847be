package billing

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/meter"
)

// TestEvaluateView evaluates March 2026 on a hand-built view, without
// raft: reseller r (monthly) and its sub-account s (annual since January).
// items returns the run's line items by stream id.
func items(run BillingRun) map[string]LineItem {
	out := map[string]LineItem{}
	for _, r := range run.Resellers {
		for _, a := range r.Accounts {
			for _, it := range a.Items {
				out[it.Stream] = it
			}
		}
	}
	return out
}

func TestEvaluateView(t *testing.T) {
	hd := func(at time.Time, days int, analytics ...string) accounts.SettingsChange {
		return accounts.SettingsChange{At: at, StreamSettings: accounts.StreamSettings{Width: 1920, Height: 1080, RetentionDays: days, Analytics: analytics}}
	}
	hd1 := func(at time.Time, days int) accounts.SettingsChange {
		return accounts.SettingsChange{At: at, StreamSettings: accounts.StreamSettings{Width: 1280, Height: 720, RetentionDays: days}}
	}
	jan5 := ms(2026, 1, 5, 0, 0, 0, 0)
	deleted := ms(2026, 3, 20, 0, 0, 0, 0)
	accts := map[string]*billAccount{
		"r": {ID: "r", Cycles: []accounts.CycleChange{{At: ms(2025, 12, 1, 0, 0, 0, 0), Cycle: accounts.CycleMonthly}}},
		"s": {ID: "s", Parent: "r", Cycles: []accounts.CycleChange{{At: ms(2026, 1, 2, 0, 0, 0, 0), Cycle: accounts.CycleAnnual}}},
	}
	stream := func(id, account string, reg time.Time, del *time.Time, u meter.MonthUsage, h ...accounts.SettingsChange) *billStream {
		return &billStream{ID: id, Camera: "cam-" + id, Bridge: "b-" + account, Account: account,
			RegisteredAt: reg, DeletedAt: del, History: h, Usage: u}
	}
	zero := meter.MonthUsage{StoredByteHours: "0.000"}
	streams := []*billStream{
		// Monthly account.
		stream("mid", "r", ms(2026, 3, 10, 0, 0, 0, 0), nil,
			meter.MonthUsage{StoredBytes: 100, IngestedBytes: 200, StoredByteHours: "3.500"},
			hd(ms(2026, 3, 10, 0, 0, 0, 0), 30)),
		stream("gone", "r", jan5, &deleted, zero, hd(jan5, 30)),
		stream("changed", "r", jan5, nil, zero,
			hd1(jan5, 30),
			hd(ms(2026, 3, 15, 0, 0, 0, 0), 60, "people"),
			hd1(ms(2026, 4, 1, 0, 0, 0, 1), 7)), // after the cut-off
		stream("later", "r", ms(2026, 4, 1, 0, 0, 0, 1), nil, zero, hd(ms(2026, 4, 1, 0, 0, 0, 1), 30)),
		// Annual account, March: the cycle's third month.
		stream("down", "s", jan5, nil, zero, hd(jan5, 90), hd1(ms(2026, 3, 10, 0, 0, 0, 0), 7)),
		stream("up", "s", jan5, nil, zero, hd1(jan5, 30), hd(ms(2026, 3, 10, 0, 0, 0, 0), 30)),
		stream("ann-gone", "s", jan5, &deleted, zero, hd(jan5, 30)),
		stream("ann-mid", "s", ms(2026, 3, 10, 0, 0, 0, 0), nil, zero, hd1(ms(2026, 3, 10, 0, 0, 0, 0), 30)),
	}
	m := mustMonth(t, "2026-03")
	run := evaluate(m, CutOff(m), accts, streams)
	it := items(run)

	// Registered mid-month: billed for the month, with its usage figures.
	require.Equal(t, LineItem{Reseller: "r", Account: "r", Bridge: "b-r", Camera: "cam-mid", Stream: "mid",
		SKU: "HD2-D30", Analytics: []string{}, Width: 1920, Height: 1080, RetentionDays: 30,
		RegisteredAt: ms(2026, 3, 10, 0, 0, 0, 0), Cycle: accounts.CycleMonthly,
		StorageBytes: 100, IngestedBytes: 200, StoredByteHours: json.Number("3.500")}, it["mid"])
	// Deleted mid-month on a monthly account: not billed; billed the month before.
	require.NotContains(t, it, "gone")
	require.NotContains(t, it, "later", "registered after the cut-off")
	feb := items(evaluate(m-1, CutOff(m-1), accts, streams))
	require.Equal(t, "HD2-D30", feb["gone"].SKU)
	require.Nil(t, feb["gone"].DeletedAt)
	require.NotContains(t, feb, "mid")
	// Settings changed mid-month: billed as in force at the cut-off.
	require.Equal(t, "HD2-D60", it["changed"].SKU)
	require.Equal(t, []string{"people"}, it["changed"].Analytics)
	require.Equal(t, "HD1-D30", feb["changed"].SKU)

	// Annual account outside its renewal month: as booked, increases flagged.
	for _, id := range []string{"down", "up", "ann-gone", "ann-mid"} {
		require.Equal(t, accounts.CycleAnnual, it[id].Cycle, id)
		require.Equal(t, 10, it[id].MonthsLeft, id)
		require.Equal(t, "r", it[id].Reseller, id)
	}
	require.Equal(t, ChangeDecrease, it["down"].Change)
	require.Equal(t, "HD2-D90", it["down"].SKU, "no credit before the cycle ends")
	require.Equal(t, "HD2-D90", it["down"].BookedSKU)
	require.Equal(t, ChangeIncrease, it["up"].Change)
	require.Equal(t, "HD2-D30", it["up"].SKU)
	require.Equal(t, "HD1-D30", it["up"].BookedSKU)
	require.Equal(t, ChangeDeleted, it["ann-gone"].Change)
	require.Equal(t, "HD2-D30", it["ann-gone"].SKU)
	require.Equal(t, &deleted, it["ann-gone"].DeletedAt)
	require.Equal(t, ChangeNew, it["ann-mid"].Change)
	require.Empty(t, it["ann-mid"].BookedSKU)

	// Roll-up: the reseller's own account first, then its sub-account.
	require.Len(t, run.Resellers, 1)
	r := run.Resellers[0]
	require.Equal(t, "r", r.ID)
	require.Len(t, r.Accounts, 2)
	require.Equal(t, AccountRun{ID: "r", Cycle: accounts.CycleMonthly, Items: r.Accounts[0].Items,
		Summary: Summary{Streams: 2, Subscriptions: 3, SKUs: map[string]int{"HD2-D30": 1, "HD2-D60": 1}, Analytics: map[string]int{"people": 1}}},
		r.Accounts[0])
	require.Equal(t, []string{"changed", "mid"}, []string{r.Accounts[0].Items[0].Stream, r.Accounts[0].Items[1].Stream}, "in item order")
	s := r.Accounts[1]
	require.Equal(t, "s", s.ID)
	require.Equal(t, "2026-01", s.CycleStart)
	require.Equal(t, 10, s.MonthsLeft)
	require.Equal(t, 4, s.Summary.Streams)
	require.Equal(t, 6, run.Summary.Streams)
	require.Equal(t, r.Summary, run.Summary)
}
