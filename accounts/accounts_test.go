package accounts_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/replica"

	"github.com/vigilcloud/vigil/accounts"

	"github.com/hashicorp/raft"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/purge"
)

// TestFSMDeletedAccountTakesNoChanges: after a sub-account's deletion every
// command naming it (or its bridges) is refused as not found and changes
// nothing; its id is not handed out again.
func TestFSMDeletedAccountTakesNoChanges(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.Must(cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}}}})
	var del accounts.AccountDeleteResult
	require.NoError(t, json.Unmarshal(h.Must(cluster.CmdDeleteAccount, "del", "n", accounts.DeleteAccountCmd{ID: "s1"}), &del))
	h.Must(cluster.CmdPurgeDone, "pd", "", purge.DoneCmd{ID: del.Purges["c1"]}) // so c1's id could be reused

	cases := []struct {
		name    string
		typ     string
		payload any
		wantErr error
		code    string
	}{
		{"patch", cluster.CmdUpdateAccount, accounts.UpdateAccountCmd{ID: "s1", Patch: accounts.AccountPatch{Name: new("Renamed")}}, accounts.ErrNotFound, "not_found"},
		{"patch defaults", cluster.CmdUpdateAccount, accounts.UpdateAccountCmd{ID: "s1", Patch: accounts.AccountPatch{Defaults: &accounts.DefaultsPatch{RetentionDays: machinetest.IP(7)}}}, accounts.ErrNotFound, "not_found"},
		{"new bridge", cluster.CmdCreateBridge, accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b9", Name: "B9"}}, accounts.ErrNotFound, "not_found"},
		{"existing bridge again", cluster.CmdCreateBridge, accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b1", Name: "B1"}}, accounts.ErrNotFound, "not_found"},
		{"new camera", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c9", Name: "C", Streams: []accounts.NewStream{{ID: "x9"}}}}, accounts.ErrNotFound, "not_found"},
		{"purged camera id again", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}}}}, accounts.ErrNotFound, "not_found"},
		{"stream", cluster.CmdUpdateStream, accounts.UpdateStreamCmd{ID: "x", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(90)}}, accounts.ErrNotFound, "not_found"},
		{"delete again", cluster.CmdDeleteAccount, accounts.DeleteAccountCmd{ID: "s1"}, accounts.ErrNotFound, "not_found"},
		{"re-create", cluster.CmdCreateAccount, accounts.NewAccount{ID: "s1", Name: "Sub 1", Parent: "r1", Defaults: accounts.Defaults{RetentionDays: 7}}, accounts.ErrConflict, "deleted_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			applied := h.M.Applied()
			before, err := machinetest.StateOf(t, h.M), error(nil)
			require.NoError(t, err)
			_, err = h.Apply(tc.typ, "req-"+tc.name, accounts.BridgeNonce("b9", auth.NewToken()), tc.payload)
			require.ErrorIs(t, err, tc.wantErr)
			var e *cluster.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, tc.code, e.Code)
			h.M.SetAppliedForTest(applied)
			after, err := machinetest.StateOf(t, h.M), error(nil)
			require.NoError(t, err)
			require.Equal(t, before, after, "a refused command changes nothing")
		})
	}
	// The retry of the deletion itself is still answered from the first attempt.
	var again accounts.AccountDeleteResult
	require.NoError(t, json.Unmarshal(h.Must(cluster.CmdDeleteAccount, "del", "n2", accounts.DeleteAccountCmd{ID: "s1"}), &again))
	require.Equal(t, del, again)

	// Reads: gone for live use.
	reg := accounts.New(h.M.Accounts, nil, nil)
	_, err := reg.Account(t.Context(), "s1")
	require.ErrorIs(t, err, accounts.ErrNotFound)
	_, err = reg.Bridge(t.Context(), "b1")
	require.ErrorIs(t, err, accounts.ErrNotFound)
	_, err = reg.Account(t.Context(), "s2")
	require.NoError(t, err, "other sub-accounts are untouched")
}

// TestFSMDefaultsChangeKeepsExistingStreams is the reseller repro: sub2
// inherits its reseller's D90; the reseller changes its defaults; the
// existing stream keeps its plan, a new one gets the new defaults.
func TestFSMDefaultsChangeKeepsExistingStreams(t *testing.T) {
	h := machinetest.New(t)
	h.Must(cluster.CmdCreateAccount, "res1", "", accounts.NewAccount{ID: "res1", Name: "R", Defaults: accounts.Defaults{RetentionDays: 90}})
	h.Must(cluster.CmdCreateAccount, "sub2", "", accounts.NewAccount{ID: "sub2", Name: "S", Parent: "res1"})
	h.Must(cluster.CmdCreateBridge, "br", accounts.BridgeNonce("br", auth.NewToken()), accounts.CreateBridgeCmd{Account: "sub2", Bridge: accounts.NewBridge{ID: "br", Name: "B"}})
	h.Must(cluster.CmdCreateCamera, "cam10", "", accounts.CreateCameraCmd{Bridge: "br", Camera: accounts.NewCamera{ID: "cam10", Name: "C", Streams: []accounts.NewStream{{ID: "cam10-main"}}}})
	require.Equal(t, "HD1-D90", accounts.SKU(streamOf(h, "cam10-main").Stream.Settings()))

	h.Must(cluster.CmdUpdateAccount, "p1", "", accounts.UpdateAccountCmd{ID: "res1", Patch: accounts.AccountPatch{Defaults: &accounts.DefaultsPatch{RetentionDays: machinetest.IP(7), Width: machinetest.IP(1920), Height: machinetest.IP(1080)}}})
	h.Must(cluster.CmdUpdateAccount, "p2", "", accounts.UpdateAccountCmd{ID: "sub2", Patch: accounts.AccountPatch{Defaults: &accounts.DefaultsPatch{RetentionDays: machinetest.IP(14)}}})
	s := streamOf(h, "cam10-main")
	require.Equal(t, "HD1-D90", accounts.SKU(s.Stream.Settings()))
	require.Len(t, s.History, 1)

	h.Must(cluster.CmdCreateCamera, "cam11", "", accounts.CreateCameraCmd{Bridge: "br", Camera: accounts.NewCamera{ID: "cam11", Name: "C", Streams: []accounts.NewStream{{ID: "cam11-main"}}}})
	require.Equal(t, "HD2-D14", accounts.SKU(streamOf(h, "cam11-main").Stream.Settings()))
}

// TestReplayFromAnySnapshotPoint: every replica restores its own latest
// snapshot and replays the log tail, so applying a log must give the same
// state from whichever index it starts. The log begins with entries of the
// version before command versions (testdata/accounts-v0-log.jsonl: a
// defaults change that moved streams, changes to a deleted account, a bridge
// result with its token) and goes on with versioned ones. The old
// version's state after each of its entries (accounts-v0-states.jsonl.gz,
// written by that version: it is what a replica that snapshotted before the
// upgrade restores) must be what this version reaches too, and a restore at
// any index (old snapshot or this version's) then the rest of the log must
// end byte-identical (the bytes the cluster's state digest hashes).
func TestReplayFromAnySnapshotPoint(t *testing.T) {
	v0 := readLines(t, "testdata/accounts-v0-log.jsonl", false)
	old := readLines(t, "testdata/accounts-v0-states.jsonl.gz", true)
	require.Len(t, old, len(v0))
	entries := slices.Clone(v0)
	tokens := []string{strings.Repeat("A", 43), strings.Repeat("B", 43), strings.Repeat("C", 43), strings.Repeat("D", 43), strings.Repeat("E", 43)}
	addV := func(version int, typ, rid, nonce string, payload any) int {
		p, err := json.Marshal(payload)
		require.NoError(t, err)
		at := machinetest.T0.Add(time.Duration(len(entries)+1) * time.Minute)
		b, err := json.Marshal(map[string]any{"type": typ, "request_id": rid, "time": at, "nonce": nonce, "payload": json.RawMessage(p), "version": version})
		require.NoError(t, err)
		entries = append(entries, b)
		return len(entries) // its index
	}
	add := func(typ, rid, nonce string, payload any) int {
		return addV(cluster.CommandV1, typ, rid, nonce, payload)
	}
	add(cluster.CmdCreateCamera, "c3", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c3", Name: "C3", Streams: []accounts.NewStream{{ID: "new"}}}})
	marked := add(cluster.CmdUpdateAccount, "d3", "", accounts.UpdateAccountCmd{ID: "r1", Patch: accounts.AccountPatch{Defaults: &accounts.DefaultsPatch{Width: machinetest.IP(1920), Height: machinetest.IP(1080), RetentionDays: machinetest.IP(90)}}})
	add(cluster.CmdUpdateAccount, "d4", "", accounts.UpdateAccountCmd{ID: "s1", Patch: accounts.AccountPatch{Defaults: &accounts.DefaultsPatch{RetentionDays: machinetest.IP(0)}}})
	add(cluster.CmdCreateCamera, "c4", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c4", Name: "C4", Streams: []accounts.NewStream{{ID: "after"}}}})
	// A stream a legacy entry added follows the defaults; patching its
	// retention must not bring in the new default resolution.
	add(cluster.CmdUpdateStream, "u1", "", accounts.UpdateStreamCmd{ID: "inh", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(45)}})
	add(cluster.CmdCreateBridge, "b4", accounts.BridgeNonce("b4", tokens[4]), accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b4", Name: "B4"}})
	add(cluster.CmdUpdateAccount, "ren2", "", accounts.UpdateAccountCmd{ID: "s2", Patch: accounts.AccountPatch{Name: new("Again")}})
	add(cluster.CmdCreateAccount, "s3", "", accounts.NewAccount{ID: "s3", Name: "S3", Parent: "r1"})
	// Privacy, as version 1 meant it (s3): withdrawing the allowance ends
	// privacy mode, a null suspension is ignored, nothing is audited.
	until := machinetest.T0.Add(30 * 24 * time.Hour)
	privacy := func(version int, rid, account string, p accounts.AccountPatch) {
		addV(version, cluster.CmdUpdateAccount, rid, "", accounts.UpdateAccountCmd{ID: account, Patch: p, Actor: "user:" + rid})
	}
	privacy(1, "p1", "s3", accounts.AccountPatch{PrivacyModeAllowed: new(true), PrivacyMode: new(true), PrivacySuspendedUntil: accounts.OptionalTime{Set: true, Time: &until}})
	privacy(1, "p2", "s3", accounts.AccountPatch{PrivacyModeAllowed: new(false), PrivacySuspendedUntil: accounts.OptionalTime{Set: true}})
	// ... and as version 2 means it (s1): the allowance's withdrawal leaves
	// it on, null ends the suspension, each change is audited.
	privacy(2, "q1", "s1", accounts.AccountPatch{PrivacyModeAllowed: new(true)})
	privacy(2, "q2", "s1", accounts.AccountPatch{PrivacyMode: new(true), PrivacySuspendedUntil: accounts.OptionalTime{Set: true, Time: &until}})
	privacy(2, "q3", "s1", accounts.AccountPatch{PrivacyModeAllowed: new(false)})
	privacy(2, "q4", "s1", accounts.AccountPatch{PrivacySuspendedUntil: accounts.OptionalTime{Set: true}})

	apply := func(f *replica.Machine, from, to int) {
		for i := from; i < to; i++ {
			f.Apply(&raft.Log{Index: uint64(i + 1), Data: entries[i]})
		}
	}
	stateJSON := func(f *replica.Machine) string {
		var b bytes.Buffer
		require.NoError(t, f.WriteJSON(&b))
		return b.String()
	}
	restore := func(snap []byte) *replica.Machine {
		f := replica.NewMachine(nil)
		require.NoError(t, f.Restore(io.NopCloser(bytes.NewReader(snap))))
		return f
	}

	full := replica.NewMachine(nil)
	apply(full, 0, len(entries))
	want := stateJSON(full)

	// The old version's entries replay to the old version's states.
	f := replica.NewMachine(nil)
	for i := range v0 {
		apply(f, i, i+1)
		require.Equal(t, string(old[i]), stateJSON(f), "state after entry %d differs from the old version's", i+1)
	}
	// A replica restoring an old version's snapshot, then the rest.
	for k := 1; k <= len(v0); k++ {
		f := restore(compress(t, old[k-1]))
		apply(f, k, len(entries))
		require.Equal(t, want, stateJSON(f), "restored the old version's snapshot at %d", k)
	}
	// A replica restoring this version's snapshot at any index, then the rest.
	g := replica.NewMachine(nil)
	for k := 0; k <= len(entries); k++ {
		f := restore(machinetest.Persist(t, g))
		apply(f, k, len(entries))
		require.Equal(t, want, stateJSON(f), "restored this version's snapshot at %d", k)
		apply(g, k, min(k+1, len(entries)))
	}

	v1, v2 := full.Accounts.Accounts["s3"], full.Accounts.Accounts["s1"]
	require.False(t, v1.PrivacyMode, "v1: withdrawing the allowance ended privacy mode")
	require.Equal(t, &until, v1.PrivacySuspendedUntil, "v1: null was ignored")
	require.True(t, v2.PrivacyMode, "v2: withdrawing the allowance does not end privacy mode")
	require.False(t, v2.PrivacyModeAllowed)
	require.Nil(t, v2.PrivacySuspendedUntil, "v2: null ends the suspension")
	require.Empty(t, full.Access.Audit["s3"], "v1 entries audit nothing")
	var audited []string
	for _, e := range full.Access.Audit["s1"] {
		audited = append(audited, e.Actor+" "+e.Action)
	}
	require.Equal(t, []string{"user:q1 privacy.allowed", "user:q2 privacy.on", "user:q2 privacy.suspended", "user:q3 privacy.disallowed", "user:q4 privacy.resumed"}, audited)

	// The marked defaults changes moved no existing stream; a stream added
	// after them has the new defaults.
	before := replica.NewMachine(nil)
	apply(before, 0, marked-1)
	require.Equal(t, accounts.OwnSettings{}, before.Accounts.Streams["inh"].Own, "a legacy create_camera leaves the stream following the defaults")
	for _, id := range []string{"half", "new"} {
		b, a := before.Accounts.Streams[id], full.Accounts.Streams[id]
		require.Equal(t, b.Stream, a.Stream, id)
		require.Equal(t, b.History, a.History, id)
	}
	require.Equal(t, "SD1-D14", accounts.SKU(full.Accounts.Streams["new"].Stream.Settings()))
	require.Equal(t, "SD1-D30", accounts.SKU(full.Accounts.Streams["half"].Stream.Settings()))
	inh := full.Accounts.Streams["inh"]
	require.Equal(t, "SD1-D45", accounts.SKU(inh.Stream.Settings()), "640x480 kept, own retention")
	require.Len(t, inh.History, len(before.Accounts.Streams["inh"].History)+1)
	require.Equal(t, "updated", inh.History[len(inh.History)-1].Reason)
	require.Equal(t, "HD2-D90", accounts.SKU(full.Accounts.Streams["after"].Stream.Settings()))
	// The first versioned command dropped the old results' tokens.
	for i, tok := range tokens {
		require.NotContains(t, want, tok, "token %d", i)
	}
}

// readLines returns the lines of a test file, gunzipped if gz.
func readLines(t *testing.T, name string, gz bool) [][]byte {
	t.Helper()
	b, err := os.ReadFile(name)
	require.NoError(t, err)
	if gz {
		r, err := gzip.NewReader(bytes.NewReader(b))
		require.NoError(t, err)
		b, err = io.ReadAll(r)
		require.NoError(t, err)
	}
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

// compress makes a snapshot of a state's JSON.
func compress(t *testing.T, raw []byte) []byte {
	t.Helper()
	e, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	defer e.Close()
	return e.EncodeAll(raw, nil)
}

// TestBridgeTokenNotInLogOrState: create_bridge carries only the token's
// hash and HA1; the result, the request table and the snapshot hold no
// token. A create_bridge written by the previous version (plaintext token
// as nonce, no command version) replays as it was first applied, result
// with the token included; a restore leaves it, and the first versioned
// command drops it.
func TestBridgeTokenNotInLogOrState(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	tok := auth.NewToken()
	nonce := accounts.BridgeNonce("b9", tok)
	require.NotContains(t, nonce, tok)
	res := h.Must(cluster.CmdCreateBridge, "new", nonce, accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b9", Name: "B9"}})
	require.NotContains(t, string(res), tok)
	reg := accounts.New(h.M.Accounts, nil, nil)
	id, err := reg.BridgeByTokenHash(t.Context(), auth.HashToken(tok))
	require.NoError(t, err)
	require.Equal(t, "b9", id)
	ha1, err := reg.BridgeDigestHA1(t.Context(), "b9")
	require.NoError(t, err)
	require.Equal(t, auth.DigestHA1("b9", accounts.DigestRealm, tok), ha1)
	raw, err := decodeRawSnapshot(machinetest.Persist(t, h.M))
	require.NoError(t, err)
	require.NotContains(t, string(raw), tok)

	// The previous version's log entry: the plaintext token as nonce.
	oldTok := auth.NewToken()
	h.Legacy = true
	res = h.Must(cluster.CmdCreateBridge, "old", oldTok, accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b8", Name: "B8"}})
	h.Legacy = false
	require.Contains(t, string(res), oldTok, "the result the previous version recorded")
	id, err = reg.BridgeByTokenHash(t.Context(), auth.HashToken(oldTok))
	require.NoError(t, err)
	require.Equal(t, "b8", id)

	// Restoring changes nothing, so the token is still there...
	snap := machinetest.Persist(t, h.M)
	f2 := replica.NewMachine(nil)
	require.NoError(t, f2.Restore(io.NopCloser(bytes.NewReader(snap))))
	require.Equal(t, snap, machinetest.Persist(t, f2))
	// ...until the first versioned command, on every replica alike.
	h2 := &machinetest.Harness{T: t, M: f2, Index: h.Index, Clock: h.Clock}
	for _, h := range []*machinetest.Harness{h, h2} {
		h.Must(cluster.CmdCreateAccount, "later", "", accounts.NewAccount{ID: "later", Name: "L"})
		raw, err = decodeRawSnapshot(machinetest.Persist(t, h.M))
		require.NoError(t, err)
		require.NotContains(t, string(raw), oldTok)
		require.NotContains(t, string(raw), tok)
		var r accounts.BridgeResult
		require.NoError(t, json.Unmarshal(h.Must(cluster.CmdCreateBridge, "old", auth.NewToken(), accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b8", Name: "B8"}}), &r))
		require.True(t, r.Created)
		require.Empty(t, r.TokenHash, "a retry of the old request finds no token")
	}
	require.Equal(t, machinetest.Persist(t, h.M), machinetest.Persist(t, h2.M))
}

// decodeRawSnapshot returns a snapshot's JSON as stored.
func decodeRawSnapshot(b []byte) ([]byte, error) {
	d, err := zstd.NewReader(nil)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.DecodeAll(b, nil)
}

// TestCreateBridgeOnDisk: through a real raft node, the token is in the
// first answer only; a retry gets none; nothing under the data directory
// (WAL, snapshot) holds it.
func TestCreateBridgeOnDisk(t *testing.T) {
	dir := t.TempDir()
	m := machinetest.OpenReplica(t, dir, "127.0.0.1:0", func() time.Time { return machinetest.T0 })
	defer m.Close()
	ctx := context.Background()
	_, err := m.Accounts.CreateAccount(ctx, "a", accounts.NewAccount{ID: "a", Name: "A"})
	require.NoError(t, err)
	r1, err := m.Accounts.CreateBridge(ctx, "rid", "a", accounts.NewBridge{ID: "b", Name: "B"})
	require.NoError(t, err)
	require.True(t, r1.Created)
	require.Len(t, r1.Token, 43)
	r2, err := m.Accounts.CreateBridge(ctx, "rid", "a", accounts.NewBridge{ID: "b", Name: "B"})
	require.NoError(t, err)
	require.False(t, r2.Created)
	require.Empty(t, r2.Token)
	require.NoError(t, m.Node().Snapshot())

	snapshots := 0
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, compressed, err := testutil.ReadFileDecompressed(p)
		require.NoError(t, err)
		if compressed && bytes.Contains(b, []byte(auth.HashToken(r1.Token))) {
			snapshots++ // the state, decompressed: the grep sees inside
		}
		require.False(t, bytes.Contains(b, []byte(r1.Token)), "token in %s", p)
		return nil
	})
	require.NoError(t, err)
	require.Positive(t, snapshots, "no snapshot with the bridge was searched")
}
