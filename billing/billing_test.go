package billing_test

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/replica"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/auth"
)

func TestParseMonth(t *testing.T) {
	for _, bad := range []string{"2026-13", "abc", "2026-00", "2026-1", "26-01", "2026-01-01", "", "1999-12", "２０２６-01"} {
		_, err := billing.ParseMonth(bad)
		require.ErrorIs(t, err, accounts.ErrInvalid, bad)
	}
	m, err := billing.ParseMonth("2028-02")
	require.NoError(t, err)
	require.Equal(t, machinetest.MS(2028, 3, 1, 0, 0, 0, 0), billing.CutOff(m))
	m, _ = billing.ParseMonth("2026-12")
	require.Equal(t, machinetest.MS(2027, 1, 1, 0, 0, 0, 0), billing.CutOff(m))
}

// TestBillingRegistrationAtCutOff: the state at the cut-off instant,
// including events stamped exactly at it, decides, to the millisecond.
func TestBillingRegistrationAtCutOff(t *testing.T) {
	cut := machinetest.MS(2026, 4, 1, 0, 0, 0, 0) // March 2026's cut-off
	cases := []struct {
		name          string
		reg, del      time.Time // zero del: not deleted
		billed        bool
		registeredMar bool
	}{
		{"registered last ms of the month", cut.Add(-time.Millisecond), time.Time{}, true, true},
		{"registered exactly at the cut-off", cut, time.Time{}, true, false},
		{"registered 1 ms after the cut-off", cut.Add(time.Millisecond), time.Time{}, false, false},
		{"deleted exactly at the cut-off", machinetest.MS(2026, 3, 2, 0, 0, 0, 0), cut, false, true},
		{"deleted 1 ms before the cut-off", machinetest.MS(2026, 3, 2, 0, 0, 0, 0), cut.Add(-time.Millisecond), false, true},
		{"deleted 1 ms after the cut-off", machinetest.MS(2026, 3, 2, 0, 0, 0, 0), cut.Add(time.Millisecond), true, true},
		{"added and deleted within the month", machinetest.MS(2026, 3, 10, 0, 0, 0, 0), machinetest.MS(2026, 3, 20, 0, 0, 0, 0), false, true},
		{"registered in an earlier month, never deleted", machinetest.MS(2026, 1, 5, 0, 0, 0, 0), time.Time{}, true, true},
		{"deleted in an earlier month", machinetest.MS(2026, 1, 5, 0, 0, 0, 0), machinetest.MS(2026, 2, 5, 0, 0, 0, 0), false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := machinetest.New(t)
			h.Clock = time.Time{}
			start := machinetest.MS(2025, 12, 1, 0, 0, 0, 0)
			h.MustAt(start, cluster.CmdCreateAccount, "r", "", accounts.NewAccount{ID: "r", Name: "R"})
			h.MustAt(start.Add(time.Second), cluster.CmdCreateAccount, "s", "", accounts.NewAccount{ID: "s", Name: "S", Parent: "r"})
			h.MustAt(start.Add(2*time.Second), cluster.CmdCreateBridge, "b", auth.NewToken(), accounts.CreateBridgeCmd{Account: "s", Bridge: accounts.NewBridge{ID: "b", Name: "B"}})
			h.MustAt(tc.reg, cluster.CmdCreateCamera, "c", "", accounts.CreateCameraCmd{Bridge: "b", Camera: machinetest.Cam("c", accounts.NewStream{ID: "st"})})
			if !tc.del.IsZero() {
				h.MustAt(tc.del, cluster.CmdDeleteCamera, "d", "purge-1", accounts.DeleteCameraCmd{ID: "c"})
			}
			h.MustAt(cut.Add(time.Hour), cluster.CmdUsageTick, "tick", "", struct{}{}) // seal March
			_, billed := machinetest.Items(h.Final("2026-03"))["st"]
			require.Equal(t, tc.billed, billed)
		})
	}
}

func TestBillingSettingsAndSubscriptions(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h) // r1 (1920x1080 D60) → s1 (D7), s2; r2 bare; bridges b1 (s1), b2 (s2), b3 (r2)
	cut := machinetest.MS(2026, 4, 1, 0, 0, 0, 0)
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1",
		accounts.NewStream{ID: "c1-a"}, // inherits: r1's 1920x1080, s1's D7 → HD2-D7
		accounts.NewStream{ID: "c1-b", Width: machinetest.IP(640), Height: machinetest.IP(480), Analytics: []string{"people", "lpr"}},
		accounts.NewStream{ID: "c1-c", Width: machinetest.IP(2560), Height: machinetest.IP(1440), RetentionDays: machinetest.IP(30)},
		accounts.NewStream{ID: "c1-d", Width: machinetest.IP(3840), Height: machinetest.IP(2160), RetentionDays: machinetest.IP(90)})})
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 1, 0, 0), cluster.CmdCreateCamera, "c2", "", accounts.CreateCameraCmd{Bridge: "b2", Camera: machinetest.Cam("c2", accounts.NewStream{ID: "c2-a"})}) // r1 defaults: HD2-D60
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 2, 0, 0), cluster.CmdCreateCamera, "c3", "", accounts.CreateCameraCmd{Bridge: "b3", Camera: machinetest.Cam("c3", accounts.NewStream{ID: "c3-a"})}) // system: HD1-D30
	// A correction 1 ms before the cut-off counts; one 1 ms after does not.
	h.MustAt(cut.Add(-time.Millisecond), cluster.CmdUpdateStream, "u1", "", accounts.UpdateStreamCmd{ID: "c1-c", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(60)}})
	// A defaults change applies to streams added later, never to c2-a.
	h.MustAt(cut.Add(-time.Hour), cluster.CmdUpdateAccount, "d1", "", accounts.UpdateAccountCmd{ID: "s2", Patch: accounts.AccountPatch{Defaults: &accounts.DefaultsPatch{RetentionDays: machinetest.IP(14)}}})
	h.MustAt(cut.Add(time.Millisecond), cluster.CmdUpdateStream, "u2", "", accounts.UpdateStreamCmd{ID: "c1-d", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(7)}})

	run := h.Final("2026-03")
	require.True(t, run.Final)
	it := machinetest.Items(run)
	require.Len(t, it, 6, "a multi-stream camera is billed per stream")
	want := map[string]string{"c1-a": "HD2-D7", "c1-b": "SD1-D7", "c1-c": "HD4-D60", "c1-d": "HD10-D90", "c2-a": "HD2-D60", "c3-a": "HD1-D30"}
	for id, sku := range want {
		require.Equal(t, sku, it[id].SKU, id)
		require.Equal(t, accounts.CycleMonthly, it[id].Cycle)
		require.Empty(t, it[id].Change)
	}
	require.Equal(t, []string{"lpr", "people"}, it["c1-b"].Analytics)
	// Summaries: one subscription per stream and per analytic.
	require.Len(t, run.Resellers, 2)
	require.Equal(t, "r1", run.Resellers[0].ID)
	s1 := run.Resellers[0].Accounts[0]
	require.Equal(t, "s1", s1.ID)
	require.Equal(t, billing.Summary{Streams: 4, Subscriptions: 6, SKUs: map[string]int{"HD2-D7": 1, "SD1-D7": 1, "HD4-D60": 1, "HD10-D90": 1},
		Analytics: map[string]int{"lpr": 1, "people": 1}}, s1.Summary)
	require.Equal(t, 8, run.Summary.Subscriptions)
	require.Equal(t, "r2", run.Resellers[1].Accounts[0].ID, "a reseller's own streams are under its own account")

	require.Len(t, h.M.Accounts.AccountHist["s2"].Defaults, 2)
}

// TestBillingSwitchedOffStillBilled: a stream that stops uploading (camera
// switched off) keeps being billed, with its stored video.
func TestBillingSwitchedOffStillBilled(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "st"})})
	h.Usage(machinetest.MS(2026, 3, 6, 0, 0, 0, 0), "u1", meter.UsageEntry{Stream: "st", StoredBytes: 5000, StoredObjects: 5, IngestedBytes: 5000, Segments: 5})
	// No uploads for three months.
	h.MustAt(machinetest.MS(2026, 7, 1, 1, 0, 0, 0), cluster.CmdUsageTick, "tick", "", struct{}{})
	it := machinetest.Items(h.Final("2026-06"))["st"]
	require.Equal(t, "HD2-D7", it.SKU)
	require.Equal(t, int64(5000), it.StorageBytes)
	require.Equal(t, int64(0), it.IngestedBytes)
	require.Equal(t, json.Number("3600000.000"), it.StoredByteHours) // 5000 B × 30 days × 24 h
}

// TestUsageIntegration: stored byte-hours are integrated exactly and split
// at month boundaries, including a leap February.
func TestUsageIntegration(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.MustAt(machinetest.MS(2028, 1, 20, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "st"})})
	h.Usage(machinetest.MS(2028, 1, 31, 0, 0, 0, 0), "u1", meter.UsageEntry{Stream: "st", StoredBytes: 1000, StoredObjects: 1, IngestedBytes: 1000, Segments: 1})
	h.Usage(machinetest.MS(2028, 2, 15, 12, 0, 0, 0), "u2", meter.UsageEntry{Stream: "st", StoredBytes: 3000, StoredObjects: 1, IngestedBytes: 3000, Segments: 1})
	h.Usage(machinetest.MS(2028, 3, 1, 0, 0, 0, 1), "u3", meter.UsageEntry{Stream: "st", StoredBytes: -500, StoredObjects: -1}) // freed 1 ms into March

	jan := machinetest.Items(h.Final("2028-01"))["st"]
	require.Equal(t, int64(1000), jan.StorageBytes)
	require.Equal(t, int64(1000), jan.IngestedBytes)
	require.Equal(t, json.Number("24000.000"), jan.StoredByteHours) // 1000 B × 24 h

	feb := machinetest.Items(h.Final("2028-02"))["st"]
	require.Equal(t, int64(4000), feb.StorageBytes, "storage at the cut-off, before March's free")
	require.Equal(t, int64(3000), feb.IngestedBytes)
	// 1000 B × 14.5 days + 4000 B × 14.5 days (Feb 2028 has 29 days).
	require.Equal(t, json.Number("1740000.000"), feb.StoredByteHours)

	// March so far: 4000 B × 1 ms then 3500 B; preview at March 2, 00:00.
	m, _ := billing.ParseMonth("2028-03")
	pre := machinetest.Items(h.Run(m, false, machinetest.MS(2028, 3, 2, 0, 0, 0, 1)))["st"]
	require.Equal(t, int64(3500), pre.StorageBytes)
	// (4000×1 + 3500×(86,400,000)) B·ms / 3.6e6 = 84000.001…
	require.Equal(t, json.Number("84000.001"), pre.StoredByteHours)

	// Exactness far beyond int64 byte-ms: 1 PB for 300 days.
	require.Equal(t, json.Number("7200000000000000000000.000"), meter.ByteHours(1e18, 300*24*3600*1000))
}

func TestUsageBatchDedupeAndRejects(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "st"})})
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 1, 0), cluster.CmdCreateCamera, "c2", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c2", accounts.NewStream{ID: "gone"})})
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 2, 0), cluster.CmdDeleteCamera, "d2", "purge-x", accounts.DeleteCameraCmd{ID: "c2"})
	b := meter.UsageBatch{ID: "batch-1", To: machinetest.MS(2026, 3, 6, 0, 0, 0, 0), Entries: []meter.UsageEntry{
		{Stream: "st", StoredBytes: 100, StoredObjects: 1, IngestedBytes: 100, Segments: 1, Width: 1280, Height: 720},
		{Stream: "nope", StoredBytes: 100, IngestedBytes: 100, Segments: 1},
		{Stream: "gone", StoredBytes: 100, IngestedBytes: 100, Segments: 1},
		{Stream: "st", IngestedBytes: -1},
	}}
	var r1, r2 meter.UsageResult
	require.NoError(t, json.Unmarshal(h.MustAt(b.To, cluster.CmdUsageBatch, "usage/batch-1", "", b), &r1))
	require.Equal(t, 1, r1.Applied)
	require.Equal(t, []meter.RejectedEntry{{Stream: "nope", Reason: "unknown_stream"}, {Stream: "gone", Reason: "deleted_stream"}, {Stream: "st", Reason: "invalid_entry"}}, r1.Rejected)
	// The retry (a later stamp, same id and payload) changes nothing.
	before, err := machinetest.StateOf(t, h.M), error(nil)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(h.MustAt(b.To.Add(time.Second), cluster.CmdUsageBatch, "usage/batch-1", "", b), &r2))
	require.Equal(t, r1, r2)
	h.M.SetAppliedForTest(h.M.Applied() - 1)
	after, err := machinetest.StateOf(t, h.M), error(nil)
	require.NoError(t, err)
	require.Equal(t, before, after)

	u := h.M.Usage.Usage["st"]
	require.Equal(t, int64(100), u.StoredBytes)
	require.Equal(t, []meter.ObservedResolution{{At: b.To, Width: 1280, Height: 720}}, u.Observed)
	require.Nil(t, h.M.Usage.Usage["gone"])
	require.Equal(t, meter.Stats{Batches: 1, Entries: 4, Rejected: 3, RejectedUnknown: 1, RejectedDeleted: 1, RejectedInvalid: 1}, h.M.Usage.UsageStats)
	// A purge may still free a deleted stream's storage.
	r := h.Usage(machinetest.MS(2026, 3, 7, 0, 0, 0, 0), "batch-2", meter.UsageEntry{Stream: "gone", StoredBytes: -10, StoredObjects: -1})
	require.Equal(t, 1, r.Applied)
	// Freeing more than stored clamps at zero and is counted.
	h.Usage(machinetest.MS(2026, 3, 8, 0, 0, 0, 0), "batch-3", meter.UsageEntry{Stream: "st", StoredBytes: -1000})
	require.Equal(t, int64(0), h.M.Usage.Usage["st"].StoredBytes)
	require.Equal(t, int64(2), h.M.Usage.UsageStats.Clamped)
}

// TestClockMonotonicSealsMonth: a batch stamped before the cut-off that is
// applied after a later command counts at the meter clock, so a sealed
// month never changes.
func TestClockMonotonicSealsMonth(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "st"})})
	h.Usage(machinetest.MS(2026, 3, 6, 0, 0, 0, 0), "u1", meter.UsageEntry{Stream: "st", StoredBytes: 100, IngestedBytes: 100, Segments: 1})
	h.MustAt(machinetest.MS(2026, 4, 1, 0, 0, 1, 0), cluster.CmdUsageTick, "tick", "", struct{}{})
	mar := h.Final("2026-03")
	b1, _, _ := billing.RenderBillingRun(&mar, "json", "")
	c1, _, _ := billing.RenderBillingRun(&mar, "csv", "items")

	// Late batch stamped in March, a deletion, a settings change, a new camera.
	h.Usage(machinetest.MS(2026, 3, 31, 23, 59, 59, 999), "late", meter.UsageEntry{Stream: "st", StoredBytes: 50, IngestedBytes: 50, Segments: 1})
	require.Equal(t, machinetest.MS(2026, 4, 1, 0, 0, 1, 0), h.M.Usage.Usage["st"].LastAt, "clamped to the meter clock")
	h.MustAt(machinetest.MS(2026, 3, 31, 0, 0, 0, 0), cluster.CmdUpdateStream, "u", "", accounts.UpdateStreamCmd{ID: "st", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(90)}})
	h.MustAt(machinetest.MS(2026, 3, 30, 0, 0, 0, 0), cluster.CmdCreateCamera, "c9", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c9", accounts.NewStream{ID: "late-cam"})})
	h.MustAt(machinetest.MS(2026, 4, 2, 0, 0, 0, 0), cluster.CmdDeleteCamera, "d", "purge-2", accounts.DeleteCameraCmd{ID: "c1"})
	h.Usage(machinetest.MS(2026, 5, 2, 0, 0, 0, 0), "may", meter.UsageEntry{Stream: "late-cam", StoredBytes: 1})

	again := h.Final("2026-03")
	b2, _, _ := billing.RenderBillingRun(&again, "json", "")
	c2, _, _ := billing.RenderBillingRun(&again, "csv", "items")
	require.Equal(t, string(b1), string(b2))
	require.Equal(t, string(c1), string(c2))
	// And a snapshot round trip does not change it either.
	f2 := replica.NewMachine(nil)
	require.NoError(t, f2.Restore(io.NopCloser(bytes.NewReader(machinetest.Persist(t, h.M)))))
	again2 := (&machinetest.Harness{T: t, M: f2}).Run(machinetest.Month(t, "2026-03"), true, machinetest.MS(2026, 6, 1, 0, 0, 0, 0))
	b3, _, _ := billing.RenderBillingRun(&again2, "json", "")
	require.Equal(t, string(b1), string(b3))
	// April saw the late batch and the deletion (deleted after April's start).
	apr := machinetest.Items(h.Final("2026-04"))
	require.NotContains(t, apr, "st")
	require.Contains(t, apr, "late-cam")
}

// TestCycleTimeline: a switch to annual ordered by the 15th takes effect
// next month; after the 15th the month after; back to monthly at cycle end.
func TestBillingAnnual(t *testing.T) {
	h := machinetest.New(t)
	h.Clock = time.Time{}
	h.MustAt(machinetest.MS(2026, 1, 2, 0, 0, 0, 0), cluster.CmdCreateAccount, "r", "", accounts.NewAccount{ID: "r", Name: "R"})
	h.MustAt(machinetest.MS(2026, 1, 2, 0, 0, 1, 0), cluster.CmdCreateAccount, "s", "", accounts.NewAccount{ID: "s", Name: "S", Parent: "r", BillingCycle: accounts.CycleAnnual})
	h.MustAt(machinetest.MS(2026, 1, 2, 0, 0, 2, 0), cluster.CmdCreateBridge, "b", auth.NewToken(), accounts.CreateBridgeCmd{Account: "s", Bridge: accounts.NewBridge{ID: "b", Name: "B"}})
	h.MustAt(machinetest.MS(2026, 1, 3, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b", Camera: machinetest.Cam("c1",
		accounts.NewStream{ID: "up", Width: machinetest.IP(1280), Height: machinetest.IP(720)},
		accounts.NewStream{ID: "down", Width: machinetest.IP(1920), Height: machinetest.IP(1080), RetentionDays: machinetest.IP(90)},
		accounts.NewStream{ID: "same"})})
	h.MustAt(machinetest.MS(2026, 1, 3, 0, 0, 1, 0), cluster.CmdCreateCamera, "c2", "", accounts.CreateCameraCmd{Bridge: "b", Camera: machinetest.Cam("c2", accounts.NewStream{ID: "del"})})
	jan := machinetest.Items(h.Final("2026-01"))
	for _, id := range []string{"up", "down", "same", "del"} {
		require.Equal(t, billing.ChangeBooked, jan[id].Change, id)
		require.Equal(t, 12, jan[id].MonthsLeft)
		require.Equal(t, accounts.CycleAnnual, jan[id].Cycle)
	}
	// In March: one more analytic on "up", shorter retention on "down",
	// camera c2 deleted, a new camera.
	h.MustAt(machinetest.MS(2026, 3, 3, 0, 0, 0, 0), cluster.CmdUpdateStream, "u1", "", accounts.UpdateStreamCmd{ID: "up", Patch: accounts.StreamPatch{Analytics: &[]string{"people"}}})
	h.MustAt(machinetest.MS(2026, 3, 3, 0, 0, 1, 0), cluster.CmdUpdateStream, "u2", "", accounts.UpdateStreamCmd{ID: "down", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(7), Width: machinetest.IP(640), Height: machinetest.IP(480)}})
	h.MustAt(machinetest.MS(2026, 3, 3, 0, 0, 2, 0), cluster.CmdDeleteCamera, "d", "purge-3", accounts.DeleteCameraCmd{ID: "c2"})
	h.MustAt(machinetest.MS(2026, 3, 3, 0, 0, 3, 0), cluster.CmdCreateCamera, "c3", "", accounts.CreateCameraCmd{Bridge: "b", Camera: machinetest.Cam("c3", accounts.NewStream{ID: "new"})})
	mar := machinetest.Items(h.Final("2026-03"))
	require.Equal(t, billing.ChangeIncrease, mar["up"].Change)
	require.Equal(t, 10, mar["up"].MonthsLeft)
	require.Equal(t, []string{"people"}, mar["up"].Analytics)
	require.Equal(t, "HD1-D30", mar["up"].BookedSKU)
	require.Equal(t, billing.ChangeDecrease, mar["down"].Change)
	require.Equal(t, "HD2-D90", mar["down"].SKU, "no credit: billed as booked")
	require.Equal(t, billing.ChangeDeleted, mar["del"].Change)
	require.Equal(t, "HD1-D30", mar["del"].SKU)
	require.NotNil(t, mar["del"].DeletedAt)
	require.Equal(t, billing.ChangeNew, mar["new"].Change)
	require.Equal(t, billing.ChangeUnchanged, mar["same"].Change)
	// In April the increase is booked; the decrease is still deferred.
	apr := machinetest.Items(h.Final("2026-04"))
	require.Equal(t, billing.ChangeUnchanged, apr["up"].Change)
	require.Equal(t, "HD1-D30", apr["up"].SKU)
	require.Equal(t, []string{"people"}, apr["up"].Analytics)
	require.Equal(t, billing.ChangeDecrease, apr["down"].Change)
	// Next cycle: the decrease takes effect, the deleted stream is gone.
	jan27 := machinetest.Items(h.Final("2027-01"))
	require.Equal(t, billing.ChangeBooked, jan27["down"].Change)
	require.Equal(t, "SD1-D7", jan27["down"].SKU)
	require.NotContains(t, jan27, "del")
}

func TestApplyBatchSkipsConfiguration(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	cmd, _ := json.Marshal(cluster.Command{Type: cluster.CmdUsageTick, RequestID: "t", Time: machinetest.T0.Add(time.Hour), Payload: json.RawMessage(`{}`)})
	out := h.M.ApplyBatch([]*raft.Log{{Index: 100, Type: raft.LogConfiguration, Data: []byte("x")}, {Index: 101, Type: raft.LogCommand, Data: cmd}})
	require.Nil(t, out[0])
	require.Nil(t, out[1].(*cluster.Result).Err)
	require.Equal(t, machinetest.T0.Add(time.Hour), h.M.Clock())
}
