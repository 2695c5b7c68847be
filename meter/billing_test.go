package meter

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/auth"
)

// applyAt applies a command stamped exactly at t.
func (h *harness) applyAt(t time.Time, typ, rid, nonce string, payload any) (json.RawMessage, error) {
	h.t.Helper()
	h.clock = t.Add(-time.Minute)
	return h.apply(typ, rid, nonce, payload)
}

func (h *harness) mustAt(t time.Time, typ, rid, nonce string, payload any) json.RawMessage {
	h.t.Helper()
	d, err := h.applyAt(t, typ, rid, nonce, payload)
	require.NoError(h.t, err)
	return d
}

func (h *harness) usage(t time.Time, id string, entries ...UsageEntry) UsageResult {
	h.t.Helper()
	var r UsageResult
	require.NoError(h.t, json.Unmarshal(h.mustAt(t, cmdUsageBatch, "usage/"+id, "", UsageBatch{ID: id, To: t, Entries: entries}), &r))
	return r
}

func ms(y int, m time.Month, d, hh, mm, ss, milli int) time.Time {
	return time.Date(y, m, d, hh, mm, ss, milli*1e6, time.UTC)
}

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

func (h *harness) final(month string) BillingRun {
	h.t.Helper()
	m, err := ParseMonth(month)
	require.NoError(h.t, err)
	return h.f.billingRun(m, true, CutOff(m))
}

func cam(id string, streams ...NewStream) NewCamera {
	return NewCamera{ID: id, Name: id, Streams: streams}
}

func TestParseMonth(t *testing.T) {
	for _, bad := range []string{"2026-13", "abc", "2026-00", "2026-1", "26-01", "2026-01-01", "", "1999-12", "２０２６-01"} {
		_, err := ParseMonth(bad)
		require.ErrorIs(t, err, ErrInvalid, bad)
	}
	m, err := ParseMonth("2028-02")
	require.NoError(t, err)
	require.Equal(t, ms(2028, 3, 1, 0, 0, 0, 0), CutOff(m))
	m, _ = ParseMonth("2026-12")
	require.Equal(t, ms(2027, 1, 1, 0, 0, 0, 0), CutOff(m))
}

// TestBillingRegistrationAtCutOff: the state at the cut-off instant,
// including events stamped exactly at it, decides, to the millisecond.
func TestBillingRegistrationAtCutOff(t *testing.T) {
	cut := ms(2026, 4, 1, 0, 0, 0, 0) // March 2026's cut-off
	cases := []struct {
		name          string
		reg, del      time.Time // zero del: not deleted
		billed        bool
		registeredMar bool
	}{
		{"registered last ms of the month", cut.Add(-time.Millisecond), time.Time{}, true, true},
		{"registered exactly at the cut-off", cut, time.Time{}, true, false},
		{"registered 1 ms after the cut-off", cut.Add(time.Millisecond), time.Time{}, false, false},
		{"deleted exactly at the cut-off", ms(2026, 3, 2, 0, 0, 0, 0), cut, false, true},
		{"deleted 1 ms before the cut-off", ms(2026, 3, 2, 0, 0, 0, 0), cut.Add(-time.Millisecond), false, true},
		{"deleted 1 ms after the cut-off", ms(2026, 3, 2, 0, 0, 0, 0), cut.Add(time.Millisecond), true, true},
		{"added and deleted within the month", ms(2026, 3, 10, 0, 0, 0, 0), ms(2026, 3, 20, 0, 0, 0, 0), false, true},
		{"registered in an earlier month, never deleted", ms(2026, 1, 5, 0, 0, 0, 0), time.Time{}, true, true},
		{"deleted in an earlier month", ms(2026, 1, 5, 0, 0, 0, 0), ms(2026, 2, 5, 0, 0, 0, 0), false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.clock = time.Time{}
			start := ms(2025, 12, 1, 0, 0, 0, 0)
			h.mustAt(start, cmdCreateAccount, "r", "", NewAccount{ID: "r", Name: "R"})
			h.mustAt(start.Add(time.Second), cmdCreateAccount, "s", "", NewAccount{ID: "s", Name: "S", Parent: "r"})
			h.mustAt(start.Add(2*time.Second), cmdCreateBridge, "b", auth.NewToken(), createBridge{Account: "s", Bridge: NewBridge{ID: "b", Name: "B"}})
			h.mustAt(tc.reg, cmdCreateCamera, "c", "", createCamera{Bridge: "b", Camera: cam("c", NewStream{ID: "st"})})
			if !tc.del.IsZero() {
				h.mustAt(tc.del, cmdDeleteCamera, "d", "purge-1", deleteCamera{ID: "c"})
			}
			h.mustAt(cut.Add(time.Hour), cmdUsageTick, "tick", "", struct{}{}) // seal March
			_, billed := items(h.final("2026-03"))["st"]
			require.Equal(t, tc.billed, billed)
		})
	}
}

func TestBillingSettingsAndSubscriptions(t *testing.T) {
	h := newHarness(t)
	seed(h) // r1 (1920x1080 D60) → s1 (D7), s2; r2 bare; bridges b1 (s1), b2 (s2), b3 (r2)
	cut := ms(2026, 4, 1, 0, 0, 0, 0)
	h.mustAt(ms(2026, 3, 5, 0, 0, 0, 0), cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: cam("c1",
		NewStream{ID: "c1-a"}, // inherits: r1's 1920x1080, s1's D7 → HD2-D7
		NewStream{ID: "c1-b", Width: ip(640), Height: ip(480), Analytics: []string{"people", "lpr"}},
		NewStream{ID: "c1-c", Width: ip(2560), Height: ip(1440), RetentionDays: ip(30)},
		NewStream{ID: "c1-d", Width: ip(3840), Height: ip(2160), RetentionDays: ip(90)})})
	h.mustAt(ms(2026, 3, 5, 0, 1, 0, 0), cmdCreateCamera, "c2", "", createCamera{Bridge: "b2", Camera: cam("c2", NewStream{ID: "c2-a"})}) // r1 defaults: HD2-D60
	h.mustAt(ms(2026, 3, 5, 0, 2, 0, 0), cmdCreateCamera, "c3", "", createCamera{Bridge: "b3", Camera: cam("c3", NewStream{ID: "c3-a"})}) // system: HD1-D30
	// A correction 1 ms before the cut-off counts; one 1 ms after does not.
	h.mustAt(cut.Add(-time.Millisecond), cmdUpdateStream, "u1", "", updateStream{ID: "c1-c", Patch: StreamPatch{RetentionDays: ip(60)}})
	// A defaults change applies to streams added later, never to c2-a.
	h.mustAt(cut.Add(-time.Hour), cmdUpdateAccount, "d1", "", updateAccount{ID: "s2", Patch: AccountPatch{Defaults: &DefaultsPatch{RetentionDays: ip(14)}}})
	h.mustAt(cut.Add(time.Millisecond), cmdUpdateStream, "u2", "", updateStream{ID: "c1-d", Patch: StreamPatch{RetentionDays: ip(7)}})

	run := h.final("2026-03")
	require.True(t, run.Final)
	it := items(run)
	require.Len(t, it, 6, "a multi-stream camera is billed per stream")
	want := map[string]string{"c1-a": "HD2-D7", "c1-b": "SD1-D7", "c1-c": "HD4-D60", "c1-d": "HD10-D90", "c2-a": "HD2-D60", "c3-a": "HD1-D30"}
	for id, sku := range want {
		require.Equal(t, sku, it[id].SKU, id)
		require.Equal(t, CycleMonthly, it[id].Cycle)
		require.Empty(t, it[id].Change)
	}
	require.Equal(t, []string{"lpr", "people"}, it["c1-b"].Analytics)
	// Summaries: one subscription per stream and per analytic.
	require.Len(t, run.Resellers, 2)
	require.Equal(t, "r1", run.Resellers[0].ID)
	s1 := run.Resellers[0].Accounts[0]
	require.Equal(t, "s1", s1.ID)
	require.Equal(t, Summary{Streams: 4, Subscriptions: 6, SKUs: map[string]int{"HD2-D7": 1, "SD1-D7": 1, "HD4-D60": 1, "HD10-D90": 1},
		Analytics: map[string]int{"lpr": 1, "people": 1}}, s1.Summary)
	require.Equal(t, 8, run.Summary.Subscriptions)
	require.Equal(t, "r2", run.Resellers[1].Accounts[0].ID, "a reseller's own streams are under its own account")

	require.Len(t, h.f.st.AccountHist["s2"].Defaults, 2)
}

// TestBillingSwitchedOffStillBilled: a stream that stops uploading (camera
// switched off) keeps being billed, with its stored video.
func TestBillingSwitchedOffStillBilled(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.mustAt(ms(2026, 3, 5, 0, 0, 0, 0), cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: cam("c1", NewStream{ID: "st"})})
	h.usage(ms(2026, 3, 6, 0, 0, 0, 0), "u1", UsageEntry{Stream: "st", StoredBytes: 5000, StoredObjects: 5, IngestedBytes: 5000, Segments: 5})
	// No uploads for three months.
	h.mustAt(ms(2026, 7, 1, 1, 0, 0, 0), cmdUsageTick, "tick", "", struct{}{})
	it := items(h.final("2026-06"))["st"]
	require.Equal(t, "HD2-D7", it.SKU)
	require.Equal(t, int64(5000), it.StorageBytes)
	require.Equal(t, int64(0), it.IngestedBytes)
	require.Equal(t, json.Number("3600000.000"), it.StoredByteHours) // 5000 B × 30 days × 24 h
}

// TestUsageIntegration: stored byte-hours are integrated exactly and split
// at month boundaries, including a leap February.
func TestUsageIntegration(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.mustAt(ms(2028, 1, 20, 0, 0, 0, 0), cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: cam("c1", NewStream{ID: "st"})})
	h.usage(ms(2028, 1, 31, 0, 0, 0, 0), "u1", UsageEntry{Stream: "st", StoredBytes: 1000, StoredObjects: 1, IngestedBytes: 1000, Segments: 1})
	h.usage(ms(2028, 2, 15, 12, 0, 0, 0), "u2", UsageEntry{Stream: "st", StoredBytes: 3000, StoredObjects: 1, IngestedBytes: 3000, Segments: 1})
	h.usage(ms(2028, 3, 1, 0, 0, 0, 1), "u3", UsageEntry{Stream: "st", StoredBytes: -500, StoredObjects: -1}) // freed 1 ms into March

	jan := items(h.final("2028-01"))["st"]
	require.Equal(t, int64(1000), jan.StorageBytes)
	require.Equal(t, int64(1000), jan.IngestedBytes)
	require.Equal(t, json.Number("24000.000"), jan.StoredByteHours) // 1000 B × 24 h

	feb := items(h.final("2028-02"))["st"]
	require.Equal(t, int64(4000), feb.StorageBytes, "storage at the cut-off, before March's free")
	require.Equal(t, int64(3000), feb.IngestedBytes)
	// 1000 B × 14.5 days + 4000 B × 14.5 days (Feb 2028 has 29 days).
	require.Equal(t, json.Number("1740000.000"), feb.StoredByteHours)

	// March so far: 4000 B × 1 ms then 3500 B; preview at March 2, 00:00.
	m, _ := ParseMonth("2028-03")
	pre := items(h.f.billingRun(m, false, ms(2028, 3, 2, 0, 0, 0, 1)))["st"]
	require.Equal(t, int64(3500), pre.StorageBytes)
	// (4000×1 + 3500×(86,400,000)) B·ms / 3.6e6 = 84000.001…
	require.Equal(t, json.Number("84000.001"), pre.StoredByteHours)

	// Exactness far beyond int64 byte-ms: 1 PB for 300 days.
	require.Equal(t, json.Number("7200000000000000000000.000"), mul(1e18, 300*24*3600*1000).ByteHours())
}

func TestUsageBatchDedupeAndRejects(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.mustAt(ms(2026, 3, 5, 0, 0, 0, 0), cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: cam("c1", NewStream{ID: "st"})})
	h.mustAt(ms(2026, 3, 5, 0, 0, 1, 0), cmdCreateCamera, "c2", "", createCamera{Bridge: "b1", Camera: cam("c2", NewStream{ID: "gone"})})
	h.mustAt(ms(2026, 3, 5, 0, 0, 2, 0), cmdDeleteCamera, "d2", "purge-x", deleteCamera{ID: "c2"})
	b := UsageBatch{ID: "batch-1", To: ms(2026, 3, 6, 0, 0, 0, 0), Entries: []UsageEntry{
		{Stream: "st", StoredBytes: 100, StoredObjects: 1, IngestedBytes: 100, Segments: 1, Width: 1280, Height: 720},
		{Stream: "nope", StoredBytes: 100, IngestedBytes: 100, Segments: 1},
		{Stream: "gone", StoredBytes: 100, IngestedBytes: 100, Segments: 1},
		{Stream: "st", IngestedBytes: -1},
	}}
	var r1, r2 UsageResult
	require.NoError(t, json.Unmarshal(h.mustAt(b.To, cmdUsageBatch, "usage/batch-1", "", b), &r1))
	require.Equal(t, 1, r1.Applied)
	require.Equal(t, []RejectedEntry{{"nope", "unknown_stream"}, {"gone", "deleted_stream"}, {"st", "invalid_entry"}}, r1.Rejected)
	// The retry (a later stamp, same id and payload) changes nothing.
	before, err := encodeState(h.f.st)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(h.mustAt(b.To.Add(time.Second), cmdUsageBatch, "usage/batch-1", "", b), &r2))
	require.Equal(t, r1, r2)
	h.f.st.Applied--
	after, err := encodeState(h.f.st)
	require.NoError(t, err)
	require.Equal(t, before, after)

	u := h.f.st.Usage["st"]
	require.Equal(t, int64(100), u.StoredBytes)
	require.Equal(t, []ObservedResolution{{At: b.To, Width: 1280, Height: 720}}, u.Observed)
	require.Nil(t, h.f.st.Usage["gone"])
	require.Equal(t, usageStats{Batches: 1, Entries: 4, Rejected: 3, RejectedUnknown: 1, RejectedDeleted: 1, RejectedInvalid: 1}, h.f.st.UsageStats)
	// A purge may still free a deleted stream's storage.
	r := h.usage(ms(2026, 3, 7, 0, 0, 0, 0), "batch-2", UsageEntry{Stream: "gone", StoredBytes: -10, StoredObjects: -1})
	require.Equal(t, 1, r.Applied)
	// Freeing more than stored clamps at zero and is counted.
	h.usage(ms(2026, 3, 8, 0, 0, 0, 0), "batch-3", UsageEntry{Stream: "st", StoredBytes: -1000})
	require.Equal(t, int64(0), h.f.st.Usage["st"].StoredBytes)
	require.Equal(t, int64(2), h.f.st.UsageStats.Clamped)
}

// TestClockMonotonicSealsMonth: a batch stamped before the cut-off that is
// applied after a later command counts at the meter clock, so a sealed
// month never changes.
func TestClockMonotonicSealsMonth(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.mustAt(ms(2026, 3, 5, 0, 0, 0, 0), cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: cam("c1", NewStream{ID: "st"})})
	h.usage(ms(2026, 3, 6, 0, 0, 0, 0), "u1", UsageEntry{Stream: "st", StoredBytes: 100, IngestedBytes: 100, Segments: 1})
	h.mustAt(ms(2026, 4, 1, 0, 0, 1, 0), cmdUsageTick, "tick", "", struct{}{})
	mar := h.final("2026-03")
	b1, _, _ := RenderBillingRun(&mar, "json", "")
	c1, _, _ := RenderBillingRun(&mar, "csv", "items")

	// Late batch stamped in March, a deletion, a settings change, a new camera.
	h.usage(ms(2026, 3, 31, 23, 59, 59, 999), "late", UsageEntry{Stream: "st", StoredBytes: 50, IngestedBytes: 50, Segments: 1})
	require.Equal(t, ms(2026, 4, 1, 0, 0, 1, 0), h.f.st.Usage["st"].LastAt, "clamped to the meter clock")
	h.mustAt(ms(2026, 3, 31, 0, 0, 0, 0), cmdUpdateStream, "u", "", updateStream{ID: "st", Patch: StreamPatch{RetentionDays: ip(90)}})
	h.mustAt(ms(2026, 3, 30, 0, 0, 0, 0), cmdCreateCamera, "c9", "", createCamera{Bridge: "b1", Camera: cam("c9", NewStream{ID: "late-cam"})})
	h.mustAt(ms(2026, 4, 2, 0, 0, 0, 0), cmdDeleteCamera, "d", "purge-2", deleteCamera{ID: "c1"})
	h.usage(ms(2026, 5, 2, 0, 0, 0, 0), "may", UsageEntry{Stream: "late-cam", StoredBytes: 1})

	again := h.final("2026-03")
	b2, _, _ := RenderBillingRun(&again, "json", "")
	c2, _, _ := RenderBillingRun(&again, "csv", "items")
	require.Equal(t, string(b1), string(b2))
	require.Equal(t, string(c1), string(c2))
	// And a snapshot round trip does not change it either.
	f2 := newFSM(h.f.log)
	require.NoError(t, f2.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))))
	again2 := f2.billingRun(mustMonth(t, "2026-03"), true, ms(2026, 6, 1, 0, 0, 0, 0))
	b3, _, _ := RenderBillingRun(&again2, "json", "")
	require.Equal(t, string(b1), string(b3))
	// April saw the late batch and the deletion (deleted after April's start).
	apr := items(h.final("2026-04"))
	require.NotContains(t, apr, "st")
	require.Contains(t, apr, "late-cam")
}

func mustMonth(t *testing.T, s string) int {
	m, err := ParseMonth(s)
	require.NoError(t, err)
	return m
}

// TestCycleTimeline: a switch to annual ordered by the 15th takes effect
// next month; after the 15th the month after; back to monthly at cycle end.
func TestCycleTimeline(t *testing.T) {
	created := ms(2026, 1, 10, 0, 0, 0, 0)
	cases := []struct {
		name      string
		hist      []CycleChange
		month     string
		cycle     string
		start     string
		monthsTil int
	}{
		{"monthly", []CycleChange{{created, CycleMonthly}}, "2026-05", CycleMonthly, "2026-05", 0},
		{"annual from creation", []CycleChange{{created, CycleAnnual}}, "2026-01", CycleAnnual, "2026-01", 12},
		{"annual, last month of the cycle", []CycleChange{{created, CycleAnnual}}, "2026-12", CycleAnnual, "2026-01", 1},
		{"annual, second cycle", []CycleChange{{created, CycleAnnual}}, "2027-01", CycleAnnual, "2027-01", 12},
		{"ordered on the 15th 23:59:59.999: next month", []CycleChange{{created, CycleMonthly}, {ms(2026, 3, 15, 23, 59, 59, 999), CycleAnnual}}, "2026-04", CycleAnnual, "2026-04", 12},
		{"ordered on the 15th: not the same month", []CycleChange{{created, CycleMonthly}, {ms(2026, 3, 15, 12, 0, 0, 0), CycleAnnual}}, "2026-03", CycleMonthly, "2026-03", 0},
		{"ordered on the 16th 00:00: the month after next", []CycleChange{{created, CycleMonthly}, {ms(2026, 3, 16, 0, 0, 0, 0), CycleAnnual}}, "2026-04", CycleMonthly, "2026-04", 0},
		{"ordered on the 16th: annual from May", []CycleChange{{created, CycleMonthly}, {ms(2026, 3, 16, 0, 0, 0, 0), CycleAnnual}}, "2026-05", CycleAnnual, "2026-05", 12},
		{"back to monthly waits for the cycle end", []CycleChange{{created, CycleAnnual}, {ms(2026, 6, 1, 0, 0, 0, 0), CycleMonthly}}, "2026-12", CycleAnnual, "2026-01", 1},
		{"back to monthly after the cycle", []CycleChange{{created, CycleAnnual}, {ms(2026, 6, 1, 0, 0, 0, 0), CycleMonthly}}, "2027-01", CycleMonthly, "2027-01", 0},
		{"a pending switch is replaced", []CycleChange{{created, CycleMonthly}, {ms(2026, 3, 20, 0, 0, 0, 0), CycleAnnual}, {ms(2026, 4, 2, 0, 0, 0, 0), CycleMonthly}}, "2026-05", CycleMonthly, "2026-05", 0},
		{"an order after the cut-off is ignored", []CycleChange{{created, CycleMonthly}, {ms(2026, 5, 1, 0, 0, 0, 1), CycleAnnual}}, "2026-04", CycleMonthly, "2026-04", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustMonth(t, tc.month)
			cycle, start := cycleAt(tc.hist, m, CutOff(m))
			require.Equal(t, tc.cycle, cycle)
			require.Equal(t, tc.start, monthName(start))
			if cycle == CycleAnnual {
				require.Equal(t, tc.monthsTil, 12-(m-start))
			}
		})
	}
}

// TestBillingAnnual: increases flagged with the months left, decreases and
// deletions billed as booked until the cycle ends.
func TestBillingAnnual(t *testing.T) {
	h := newHarness(t)
	h.clock = time.Time{}
	h.mustAt(ms(2026, 1, 2, 0, 0, 0, 0), cmdCreateAccount, "r", "", NewAccount{ID: "r", Name: "R"})
	h.mustAt(ms(2026, 1, 2, 0, 0, 1, 0), cmdCreateAccount, "s", "", NewAccount{ID: "s", Name: "S", Parent: "r", BillingCycle: CycleAnnual})
	h.mustAt(ms(2026, 1, 2, 0, 0, 2, 0), cmdCreateBridge, "b", auth.NewToken(), createBridge{Account: "s", Bridge: NewBridge{ID: "b", Name: "B"}})
	h.mustAt(ms(2026, 1, 3, 0, 0, 0, 0), cmdCreateCamera, "c1", "", createCamera{Bridge: "b", Camera: cam("c1",
		NewStream{ID: "up", Width: ip(1280), Height: ip(720)},
		NewStream{ID: "down", Width: ip(1920), Height: ip(1080), RetentionDays: ip(90)},
		NewStream{ID: "same"})})
	h.mustAt(ms(2026, 1, 3, 0, 0, 1, 0), cmdCreateCamera, "c2", "", createCamera{Bridge: "b", Camera: cam("c2", NewStream{ID: "del"})})
	jan := items(h.final("2026-01"))
	for _, id := range []string{"up", "down", "same", "del"} {
		require.Equal(t, ChangeBooked, jan[id].Change, id)
		require.Equal(t, 12, jan[id].MonthsLeft)
		require.Equal(t, CycleAnnual, jan[id].Cycle)
	}
	// In March: one more analytic on "up", shorter retention on "down",
	// camera c2 deleted, a new camera.
	h.mustAt(ms(2026, 3, 3, 0, 0, 0, 0), cmdUpdateStream, "u1", "", updateStream{ID: "up", Patch: StreamPatch{Analytics: &[]string{"people"}}})
	h.mustAt(ms(2026, 3, 3, 0, 0, 1, 0), cmdUpdateStream, "u2", "", updateStream{ID: "down", Patch: StreamPatch{RetentionDays: ip(7), Width: ip(640), Height: ip(480)}})
	h.mustAt(ms(2026, 3, 3, 0, 0, 2, 0), cmdDeleteCamera, "d", "purge-3", deleteCamera{ID: "c2"})
	h.mustAt(ms(2026, 3, 3, 0, 0, 3, 0), cmdCreateCamera, "c3", "", createCamera{Bridge: "b", Camera: cam("c3", NewStream{ID: "new"})})
	mar := items(h.final("2026-03"))
	require.Equal(t, ChangeIncrease, mar["up"].Change)
	require.Equal(t, 10, mar["up"].MonthsLeft)
	require.Equal(t, []string{"people"}, mar["up"].Analytics)
	require.Equal(t, "HD1-D30", mar["up"].BookedSKU)
	require.Equal(t, ChangeDecrease, mar["down"].Change)
	require.Equal(t, "HD2-D90", mar["down"].SKU, "no credit: billed as booked")
	require.Equal(t, ChangeDeleted, mar["del"].Change)
	require.Equal(t, "HD1-D30", mar["del"].SKU)
	require.NotNil(t, mar["del"].DeletedAt)
	require.Equal(t, ChangeNew, mar["new"].Change)
	require.Equal(t, ChangeUnchanged, mar["same"].Change)
	// In April the increase is booked; the decrease is still deferred.
	apr := items(h.final("2026-04"))
	require.Equal(t, ChangeUnchanged, apr["up"].Change)
	require.Equal(t, "HD1-D30", apr["up"].SKU)
	require.Equal(t, []string{"people"}, apr["up"].Analytics)
	require.Equal(t, ChangeDecrease, apr["down"].Change)
	// Next cycle: the decrease takes effect, the deleted stream is gone.
	jan27 := items(h.final("2027-01"))
	require.Equal(t, ChangeBooked, jan27["down"].Change)
	require.Equal(t, "SD1-D7", jan27["down"].SKU)
	require.NotContains(t, jan27, "del")
}

func TestApplyBatchSkipsConfiguration(t *testing.T) {
	h := newHarness(t)
	seed(h)
	cmd, _ := json.Marshal(Command{Type: cmdUsageTick, RequestID: "t", Time: t0.Add(time.Hour), Payload: json.RawMessage(`{}`)})
	out := h.f.ApplyBatch([]*raft.Log{{Index: 100, Type: raft.LogConfiguration, Data: []byte("x")}, {Index: 101, Type: raft.LogCommand, Data: cmd}})
	require.Nil(t, out[0])
	require.Nil(t, out[1].(*applyResult).Err)
	require.Equal(t, t0.Add(time.Hour), h.f.st.Clock)
}
