package accounts_test

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/replica"

	"github.com/stretchr/testify/require"
)

// rawBinary is a payload already in the binary form.
type rawBinary []byte

func (r rawBinary) AppendBinary(b []byte) ([]byte, error) { return append(b, r...), nil }

// requireSectionsAsJSON checks that every field of the state JSON js is what
// encoding/json writes for that field of its section.
func requireSectionsAsJSON(t *testing.T, js []byte, m *replica.Machine) {
	t.Helper()
	var got map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(js, &got))
	want := map[string]json.RawMessage{}
	for _, sec := range []any{m.Accounts, m.Purges, m.Leases, m.Usage} {
		b, err := json.Marshal(sec)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &want))
	}
	for k, v := range want {
		require.JSONEq(t, string(v), string(got[k]), k)
		require.Equal(t, string(v), string(got[k]), k)
	}
}

// binaryV1 is the first byte of a binary log entry.
const binaryV1 byte = 0x01

// binaryUsage applies a usage batch in the binary form, stamped at its To.
func binaryUsage(h *machinetest.Harness, b meter.UsageBatch) meter.UsageResult {
	h.T.Helper()
	cmd, err := cluster.EncodeCommand(cluster.CmdUsageBatch, "usage/"+b.ID, b.To, "", b)
	require.NoError(h.T, err)
	require.Equal(h.T, binaryV1, cmd[0])
	r := h.ApplyRaw(cmd)
	require.Nil(h.T, r.Err)
	var out meter.UsageResult
	require.NoError(h.T, json.Unmarshal(r.Data, &out))
	return out
}

// TestUsageEncodingsApplyAlike: a usage batch in the binary form and the
// same batch as a JSON entry (all entries written before the binary form
// existed) change the state alike, rejects and month boundaries included.
func TestUsageEncodingsApplyAlike(t *testing.T) {
	js, bin := machinetest.New(t), machinetest.New(t)
	for _, h := range []*machinetest.Harness{js, bin} {
		machinetest.Seed(h)
		h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "st"}, accounts.NewStream{ID: "st2"})})
		h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 1, 0), cluster.CmdCreateCamera, "c2", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c2", accounts.NewStream{ID: "gone"})})
		h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 2, 0), cluster.CmdDeleteCamera, "d2", "purge-x", accounts.DeleteCameraCmd{ID: "c2"})
	}
	batches := []meter.UsageBatch{
		{ID: "b1", From: machinetest.MS(2026, 3, 5, 23, 59, 59, 0), To: machinetest.MS(2026, 3, 6, 0, 0, 0, 0), Entries: []meter.UsageEntry{
			{Stream: "st", StoredBytes: 100, StoredObjects: 1, IngestedBytes: 100, Segments: 1, Width: 1280, Height: 720},
			{Stream: "nope", StoredBytes: 100, IngestedBytes: 100, Segments: 1},
			{Stream: "gone", StoredBytes: 100, IngestedBytes: 100, Segments: 1},
			{Stream: "st", IngestedBytes: -1},
			{Stream: "bad id!", Segments: 1},
			{Stream: "st2", StoredBytes: 1 << 40, StoredObjects: 3, IngestedBytes: 1 << 40, Segments: 3},
		}},
		{ID: "b2", To: machinetest.MS(2026, 4, 2, 12, 0, 0, 1), Entries: []meter.UsageEntry{
			{Stream: "st", StoredBytes: -50, StoredObjects: -1, Width: 1920, Height: 1080},
			{Stream: "gone", StoredBytes: -10, StoredObjects: -1},
		}},
		{ID: "b3", To: machinetest.MS(2026, 6, 1, 0, 0, 0, 0), Entries: []meter.UsageEntry{{Stream: "st2", StoredBytes: -(1 << 41)}}},
	}
	for _, b := range batches {
		var want meter.UsageResult
		require.NoError(t, json.Unmarshal(js.MustAt(b.To, cluster.CmdUsageBatch, "usage/"+b.ID, "", b), &want))
		bin.Clock = b.To
		require.Equal(t, want, binaryUsage(bin, b), b.ID)
	}
	// A retry of a binary batch is deduplicated like a JSON one.
	require.Equal(t, meter.UsageResult{Applied: 1}, binaryUsage(bin, batches[2]))

	wantUsage, err := json.Marshal(js.M.Usage.Usage)
	require.NoError(t, err)
	gotUsage, err := json.Marshal(bin.M.Usage.Usage)
	require.NoError(t, err)
	require.JSONEq(t, string(wantUsage), string(gotUsage))
	require.Equal(t, js.M.Usage.UsageStats, bin.M.Usage.UsageStats)
	require.Equal(t, js.M.Clock(), bin.M.Clock())
	for _, m := range []string{"2026-03", "2026-04", "2026-05"} {
		a, b := js.Final(m), bin.Final(m)
		ja, _, err := billing.RenderBillingRun(&a, "json", "")
		require.NoError(t, err)
		jb, _, err := billing.RenderBillingRun(&b, "json", "")
		require.NoError(t, err)
		require.Equal(t, string(ja), string(jb), m)
	}
}

// TestOldJSONUsageEntryReplays: a usage batch entry exactly as the meter
// wrote it before the binary form (a raft log being replayed) still applies.
func TestOldJSONUsageEntryReplays(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "st"})})
	old := `{"type":"usage_batch","request_id":"usage/u-0123456789abcdef-1","time":"2026-03-06T00:00:00Z",` +
		`"payload":{"id":"u-0123456789abcdef-1","from":"2026-03-05T23:59:59Z","to":"2026-03-06T00:00:00Z",` +
		`"entries":[{"s":"st","b":1000,"o":2,"i":1500,"n":2,"w":1920,"h":1080},{"s":"nope","b":1}]}}`
	r := h.ApplyRaw([]byte(old))
	require.Nil(t, r.Err)
	require.JSONEq(t, `{"applied":1,"rejected":[{"stream":"nope","reason":"unknown_stream"}]}`, string(r.Data))
	u := h.M.Usage.Usage["st"]
	require.Equal(t, int64(1000), u.StoredBytes)
	require.Equal(t, int64(2), u.StoredObjects)
	require.Equal(t, int64(1500), u.IngestedBytes)
	require.Equal(t, []meter.ObservedResolution{{At: machinetest.MS(2026, 3, 6, 0, 0, 0, 0), Width: 1920, Height: 1080}}, u.Observed)
	require.Equal(t, machinetest.MS(2026, 3, 6, 0, 0, 0, 0), h.M.Clock())
	// A batch in the binary form under the same request id is not applied
	// again (its identity differs, so it is refused).
	h.Clock = machinetest.MS(2026, 3, 6, 0, 0, 1, 0)
	cmd, err := cluster.EncodeCommand(cluster.CmdUsageBatch, "usage/u-0123456789abcdef-1", h.Clock, "", meter.UsageBatch{ID: "u-0123456789abcdef-1", Entries: []meter.UsageEntry{{Stream: "st", StoredBytes: 1000}}})
	require.NoError(t, err)
	r = h.ApplyRaw(cmd)
	require.NotNil(t, r.Err)
	require.Equal(t, int64(1000), h.M.Usage.Usage["st"].StoredBytes)
}

// TestBadBinaryCommands: damaged binary entries are refused as malformed,
// never applied and never a panic.
func TestBadBinaryCommands(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "st"})})
	good, err := cluster.EncodeCommand(cluster.CmdUsageBatch, "usage/x", machinetest.MS(2026, 3, 6, 0, 0, 0, 0), "", meter.UsageBatch{ID: "x", Entries: []meter.UsageEntry{{Stream: "st", StoredBytes: 5}}})
	require.NoError(t, err)
	// A binary envelope around a JSON-only command type.
	wrongType, err := cluster.EncodeCommand(cluster.CmdCreateAccount, "acct", machinetest.MS(2026, 3, 6, 0, 0, 0, 0), "", rawBinary(`{"id":"zz","name":"zz"}`))
	require.NoError(t, err)
	// A usage envelope whose payload is not a batch.
	badPayload, err := cluster.EncodeCommand(cluster.CmdUsageBatch, "usage/y", machinetest.MS(2026, 3, 6, 0, 0, 0, 0), "", rawBinary{0x93, 0x01})
	require.NoError(t, err)
	cases := map[string][]byte{
		"version byte only": {binaryV1},
		"truncated":         good[:len(good)/2],
		"trailing":          append(append([]byte{}, good...), 0xc0),
		"json-only type":    wrongType,
		"bad payload":       badPayload,
		"empty":             {},
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			before := h.M.Usage.UsageStats
			r := h.ApplyRaw(data)
			require.NotNil(t, r.Err)
			require.Equal(t, "malformed_command", r.Err.Code)
			require.Equal(t, before, h.M.Usage.UsageStats)
			require.Nil(t, h.M.Accounts.Accounts["zz"])
		})
	}
	r := h.ApplyRaw(good)
	require.Nil(t, r.Err)
	require.Equal(t, int64(5), h.M.Usage.Usage["st"].StoredBytes)
}

// TestRenderRunJSONMatchesMarshal: the run rendered per account is byte for
// byte json.Marshal of the run (plus a newline), whatever its shape.
func TestRenderRunJSONMatchesMarshal(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "st", Analytics: []string{"people", "lpr"}}, accounts.NewStream{ID: "st2"})})
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 1, 0), cluster.CmdCreateCamera, "c2", "", accounts.CreateCameraCmd{Bridge: "b2", Camera: machinetest.Cam("c2", accounts.NewStream{ID: "x"})})
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 2, 0), cluster.CmdCreateCamera, "c3", "", accounts.CreateCameraCmd{Bridge: "b3", Camera: machinetest.Cam("c3", accounts.NewStream{ID: "y"})})
	h.MustAt(machinetest.MS(2026, 3, 6, 0, 0, 0, 0), cluster.CmdUpdateAccount, "cyc", "", accounts.UpdateAccountCmd{ID: "s2", Patch: accounts.AccountPatch{BillingCycle: new(accounts.CycleAnnual)}})
	h.Usage(machinetest.MS(2026, 3, 7, 0, 0, 0, 0), "u1", meter.UsageEntry{Stream: "st", StoredBytes: 1 << 33, IngestedBytes: 1 << 33, Segments: 9})
	h.MustAt(machinetest.MS(2026, 5, 20, 0, 0, 0, 0), cluster.CmdDeleteCamera, "d", "purge-1", accounts.DeleteCameraCmd{ID: "c2"})
	preview := h.Run(machinetest.Month(t, "2026-06"), false, machinetest.MS(2026, 6, 2, 0, 0, 0, 0))
	runs := []billing.BillingRun{h.Final("2026-03"), h.Final("2026-05"), preview, h.Final("2026-01"),
		{Month: "2026-01"}, {Month: "2026-02", Resellers: []billing.ResellerRun{{ID: "r"}, {ID: "q", Accounts: []billing.AccountRun{}}}}}
	for _, run := range runs {
		want, err := json.Marshal(&run)
		require.NoError(t, err)
		got, ctype, err := billing.RenderBillingRun(&run, "json", "")
		require.NoError(t, err)
		require.Equal(t, "application/json", ctype)
		require.Equal(t, string(want)+"\n", string(got))
	}
	require.Len(t, machinetest.Items(runs[0]), 4)
}

// TestSnapshotStreamedLikeMarshal: the streamed snapshot JSON is exactly
// json.Marshal of the state (what StateDigest hashes), and a snapshot
// written before streaming (one zstd frame of json.Marshal) restores to
// the same state.
func TestSnapshotStreamedLikeMarshal(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 0, 0), cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: machinetest.Cam("c1", accounts.NewStream{ID: "st", Analytics: []string{"people"}}, accounts.NewStream{ID: "st2"})})
	h.MustAt(machinetest.MS(2026, 3, 5, 0, 0, 1, 0), cluster.CmdCreateCamera, "c2", "", accounts.CreateCameraCmd{Bridge: "b2", Camera: machinetest.Cam("c2", accounts.NewStream{ID: "x"})})
	h.Usage(machinetest.MS(2026, 3, 7, 0, 0, 0, 0), "u1", meter.UsageEntry{Stream: "st", StoredBytes: 1 << 33, IngestedBytes: 1 << 33, Segments: 9, Width: 640, Height: 480})
	h.MustAt(machinetest.MS(2026, 4, 2, 0, 0, 0, 0), cluster.CmdDeleteCamera, "d", "purge-1", accounts.DeleteCameraCmd{ID: "c2"})
	h.MustAt(machinetest.MS(2026, 4, 3, 0, 0, 0, 0), cluster.CmdSetNode, "n", "", cluster.SetNodeCmd{ID: "m1", HTTPAddr: "127.0.0.1:1"})
	h.MustAt(machinetest.MS(2026, 4, 4, 0, 0, 0, 0), cluster.CmdUpdateAccount, "p", "", accounts.UpdateAccountCmd{ID: "s1", Patch: accounts.AccountPatch{Name: new("<&> \u2028 é")}})

	// The streaming writer writes each section's fields as encoding/json
	// would write the section.
	var got bytes.Buffer
	require.NoError(t, h.M.WriteJSON(&got))
	want := bytes.Clone(got.Bytes())
	requireSectionsAsJSON(t, want, h.M)
	got.Reset()
	empty := replica.NewMachine(nil)
	require.NoError(t, empty.WriteJSON(&got))
	requireSectionsAsJSON(t, got.Bytes(), empty)

	old, err := encodeRaw(want) // the format before streaming
	require.NoError(t, err)
	f2 := replica.NewMachine(nil)
	require.NoError(t, f2.Restore(io.NopCloser(bytes.NewReader(old))))
	again := machinetest.StateOf(t, f2)
	require.Equal(t, string(want), string(again))
	require.Equal(t, machinetest.Persist(t, h.M), machinetest.Persist(t, f2))
	require.Equal(t, h.M.Accounts.Bridges["b1"].TokenHash, f2.Accounts.Bridges["b1"].TokenHash)
	ids, indexed := f2.RecentRequests()
	wantIDs, _ := h.M.RecentRequests()
	require.Equal(t, wantIDs, ids)
	require.Equal(t, len(wantIDs), indexed)

	// Unknown fields and trailing data are refused, as before.
	for name, js := range map[string]string{
		"unknown top-level": `{"accounts":{},"nope":1}`,
		"unknown in entry":  `{"accounts":{"a":{"id":"a","zz":1}}}`,
		"trailing":          string(want) + `{}`,
		"not an object":     `[1,2]`,
	} {
		b, err := encodeRaw([]byte(js))
		require.NoError(t, err)
		err = replica.NewMachine(nil).Restore(io.NopCloser(bytes.NewReader(b)))
		require.ErrorContains(t, err, "meter: restore snapshot", name)
	}
}
