package meter

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/internal/testutil"
)

// TestFSMDeletedAccountTakesNoChanges: after a sub-account's deletion every
// command naming it (or its bridges) is refused as not found and changes
// nothing; its id is not handed out again.
func TestFSMDeletedAccountTakesNoChanges(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.must(cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "C1", Streams: []NewStream{{ID: "x"}}}})
	var del AccountDeleteResult
	require.NoError(t, json.Unmarshal(h.must(cmdDeleteAccount, "del", "n", deleteAccount{ID: "s1"}), &del))
	h.must(cmdPurgeDone, "pd", "", purgeDone{ID: del.Purges["c1"]}) // so c1's id could be reused

	cases := []struct {
		name    string
		typ     string
		payload any
		wantErr error
		code    string
	}{
		{"patch", cmdUpdateAccount, updateAccount{ID: "s1", Patch: AccountPatch{Name: new("Renamed")}}, ErrNotFound, "not_found"},
		{"patch defaults", cmdUpdateAccount, updateAccount{ID: "s1", Patch: AccountPatch{Defaults: &DefaultsPatch{RetentionDays: ip(7)}}}, ErrNotFound, "not_found"},
		{"new bridge", cmdCreateBridge, createBridge{Account: "s1", Bridge: NewBridge{ID: "b9", Name: "B9"}}, ErrNotFound, "not_found"},
		{"existing bridge again", cmdCreateBridge, createBridge{Account: "s1", Bridge: NewBridge{ID: "b1", Name: "B1"}}, ErrNotFound, "not_found"},
		{"new camera", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c9", Name: "C", Streams: []NewStream{{ID: "x9"}}}}, ErrNotFound, "not_found"},
		{"purged camera id again", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "C1", Streams: []NewStream{{ID: "x"}}}}, ErrNotFound, "not_found"},
		{"stream", cmdUpdateStream, updateStream{ID: "x", Patch: StreamPatch{RetentionDays: ip(90)}}, ErrNotFound, "not_found"},
		{"delete again", cmdDeleteAccount, deleteAccount{ID: "s1"}, ErrNotFound, "not_found"},
		{"re-create", cmdCreateAccount, NewAccount{ID: "s1", Name: "Sub 1", Parent: "r1", Defaults: Defaults{RetentionDays: 7}}, ErrConflict, "deleted_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			applied := h.f.st.Applied
			before, err := encodeState(h.f.st)
			require.NoError(t, err)
			_, err = h.apply(tc.typ, "req-"+tc.name, bridgeNonce("b9", auth.NewToken()), tc.payload)
			require.ErrorIs(t, err, tc.wantErr)
			var e *Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, tc.code, e.Code)
			h.f.st.Applied = applied
			after, err := encodeState(h.f.st)
			require.NoError(t, err)
			require.Equal(t, before, after, "a refused command changes nothing")
		})
	}
	// The retry of the deletion itself is still answered from the first attempt.
	var again AccountDeleteResult
	require.NoError(t, json.Unmarshal(h.must(cmdDeleteAccount, "del", "n2", deleteAccount{ID: "s1"}), &again))
	require.Equal(t, del, again)

	// Reads: gone for live use.
	m := &Meter{fsm: h.f}
	_, err := m.Account(t.Context(), "s1")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = m.Bridge(t.Context(), "b1")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = m.Account(t.Context(), "s2")
	require.NoError(t, err, "other sub-accounts are untouched")
}

// TestFSMDefaultsChangeKeepsExistingStreams is the reseller repro: sub2
// inherits its reseller's D90; the reseller changes its defaults; the
// existing stream keeps its plan, a new one gets the new defaults.
func TestFSMDefaultsChangeKeepsExistingStreams(t *testing.T) {
	h := newHarness(t)
	h.must(cmdCreateAccount, "res1", "", NewAccount{ID: "res1", Name: "R", Defaults: Defaults{RetentionDays: 90}})
	h.must(cmdCreateAccount, "sub2", "", NewAccount{ID: "sub2", Name: "S", Parent: "res1"})
	h.must(cmdCreateBridge, "br", bridgeNonce("br", auth.NewToken()), createBridge{Account: "sub2", Bridge: NewBridge{ID: "br", Name: "B"}})
	h.must(cmdCreateCamera, "cam10", "", createCamera{Bridge: "br", Camera: NewCamera{ID: "cam10", Name: "C", Streams: []NewStream{{ID: "cam10-main"}}}})
	require.Equal(t, "HD1-D90", SKU(h.stream("cam10-main").Stream.Settings()))

	h.must(cmdUpdateAccount, "p1", "", updateAccount{ID: "res1", Patch: AccountPatch{Defaults: &DefaultsPatch{RetentionDays: ip(7), Width: ip(1920), Height: ip(1080)}}})
	h.must(cmdUpdateAccount, "p2", "", updateAccount{ID: "sub2", Patch: AccountPatch{Defaults: &DefaultsPatch{RetentionDays: ip(14)}}})
	s := h.stream("cam10-main")
	require.Equal(t, "HD1-D90", SKU(s.Stream.Settings()))
	require.Len(t, s.History, 1)

	h.must(cmdCreateCamera, "cam11", "", createCamera{Bridge: "br", Camera: NewCamera{ID: "cam11", Name: "C", Streams: []NewStream{{ID: "cam11-main"}}}})
	require.Equal(t, "HD2-D14", SKU(h.stream("cam11-main").Stream.Settings()))
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
	add := func(typ, rid, nonce string, payload any) int {
		p, err := json.Marshal(payload)
		require.NoError(t, err)
		at := t0.Add(time.Duration(len(entries)+1) * time.Minute)
		b, err := json.Marshal(map[string]any{"type": typ, "request_id": rid, "time": at, "nonce": nonce, "payload": json.RawMessage(p), "version": 1})
		require.NoError(t, err)
		entries = append(entries, b)
		return len(entries) // its index
	}
	add(cmdCreateCamera, "c3", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c3", Name: "C3", Streams: []NewStream{{ID: "new"}}}})
	marked := add(cmdUpdateAccount, "d3", "", updateAccount{ID: "r1", Patch: AccountPatch{Defaults: &DefaultsPatch{Width: ip(1920), Height: ip(1080), RetentionDays: ip(90)}}})
	add(cmdUpdateAccount, "d4", "", updateAccount{ID: "s1", Patch: AccountPatch{Defaults: &DefaultsPatch{RetentionDays: ip(0)}}})
	add(cmdCreateCamera, "c4", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c4", Name: "C4", Streams: []NewStream{{ID: "after"}}}})
	// A stream a legacy entry added follows the defaults; patching its
	// retention must not bring in the new default resolution.
	add(cmdUpdateStream, "u1", "", updateStream{ID: "inh", Patch: StreamPatch{RetentionDays: ip(45)}})
	add(cmdCreateBridge, "b4", bridgeNonce("b4", tokens[4]), createBridge{Account: "s1", Bridge: NewBridge{ID: "b4", Name: "B4"}})
	add(cmdUpdateAccount, "ren2", "", updateAccount{ID: "s2", Patch: AccountPatch{Name: new("Again")}})

	apply := func(f *fsm, from, to int) {
		for i := from; i < to; i++ {
			f.Apply(&raft.Log{Index: uint64(i + 1), Data: entries[i]})
		}
	}
	stateJSON := func(f *fsm) string {
		var b bytes.Buffer
		require.NoError(t, writeStateJSON(&b, f.st))
		return b.String()
	}
	restore := func(snap []byte) *fsm {
		f := newFSM(slog.New(slog.DiscardHandler))
		require.NoError(t, f.Restore(io.NopCloser(bytes.NewReader(snap))))
		return f
	}

	full := newFSM(slog.New(slog.DiscardHandler))
	apply(full, 0, len(entries))
	want := stateJSON(full)

	// The old version's entries replay to the old version's states.
	f := newFSM(slog.New(slog.DiscardHandler))
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
	g := newFSM(slog.New(slog.DiscardHandler))
	for k := 0; k <= len(entries); k++ {
		f := restore(persist(t, g))
		apply(f, k, len(entries))
		require.Equal(t, want, stateJSON(f), "restored this version's snapshot at %d", k)
		apply(g, k, min(k+1, len(entries)))
	}

	// The marked defaults changes moved no existing stream; a stream added
	// after them has the new defaults.
	before := newFSM(slog.New(slog.DiscardHandler))
	apply(before, 0, marked-1)
	require.Equal(t, ownSettings{}, before.st.Streams["inh"].Own, "a legacy create_camera leaves the stream following the defaults")
	for _, id := range []string{"half", "new"} {
		b, a := before.st.Streams[id], full.st.Streams[id]
		require.Equal(t, b.Stream, a.Stream, id)
		require.Equal(t, b.History, a.History, id)
	}
	require.Equal(t, "SD1-D14", SKU(full.st.Streams["new"].Stream.Settings()))
	require.Equal(t, "SD1-D30", SKU(full.st.Streams["half"].Stream.Settings()))
	inh := full.st.Streams["inh"]
	require.Equal(t, "SD1-D45", SKU(inh.Stream.Settings()), "640x480 kept, own retention")
	require.Len(t, inh.History, len(before.st.Streams["inh"].History)+1)
	require.Equal(t, "updated", inh.History[len(inh.History)-1].Reason)
	require.Equal(t, "HD2-D90", SKU(full.st.Streams["after"].Stream.Settings()))
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
	h := newHarness(t)
	seed(h)
	tok := auth.NewToken()
	nonce := bridgeNonce("b9", tok)
	require.NotContains(t, nonce, tok)
	res := h.must(cmdCreateBridge, "new", nonce, createBridge{Account: "s1", Bridge: NewBridge{ID: "b9", Name: "B9"}})
	require.NotContains(t, string(res), tok)
	m := &Meter{fsm: h.f}
	id, err := m.BridgeByTokenHash(t.Context(), auth.HashToken(tok))
	require.NoError(t, err)
	require.Equal(t, "b9", id)
	ha1, err := m.BridgeDigestHA1(t.Context(), "b9")
	require.NoError(t, err)
	require.Equal(t, auth.DigestHA1("b9", DigestRealm, tok), ha1)
	raw, err := decodeRawSnapshot(persist(t, h.f))
	require.NoError(t, err)
	require.NotContains(t, string(raw), tok)

	// The previous version's log entry: the plaintext token as nonce.
	oldTok := auth.NewToken()
	h.legacy = true
	res = h.must(cmdCreateBridge, "old", oldTok, createBridge{Account: "s1", Bridge: NewBridge{ID: "b8", Name: "B8"}})
	h.legacy = false
	require.Contains(t, string(res), oldTok, "the result the previous version recorded")
	id, err = m.BridgeByTokenHash(t.Context(), auth.HashToken(oldTok))
	require.NoError(t, err)
	require.Equal(t, "b8", id)

	// Restoring changes nothing, so the token is still there...
	snap := persist(t, h.f)
	f2 := newFSM(slog.New(slog.DiscardHandler))
	require.NoError(t, f2.Restore(io.NopCloser(bytes.NewReader(snap))))
	require.Equal(t, snap, persist(t, f2))
	// ...until the first versioned command, on every replica alike.
	h2 := &harness{t: t, f: f2, index: h.index, clock: h.clock}
	for _, h := range []*harness{h, h2} {
		h.must(cmdCreateAccount, "later", "", NewAccount{ID: "later", Name: "L"})
		raw, err = decodeRawSnapshot(persist(t, h.f))
		require.NoError(t, err)
		require.NotContains(t, string(raw), oldTok)
		require.NotContains(t, string(raw), tok)
		var r BridgeResult
		require.NoError(t, json.Unmarshal(h.must(cmdCreateBridge, "old", auth.NewToken(), createBridge{Account: "s1", Bridge: NewBridge{ID: "b8", Name: "B8"}}), &r))
		require.True(t, r.Created)
		require.Empty(t, r.TokenHash, "a retry of the old request finds no token")
	}
	require.Equal(t, persist(t, h.f), persist(t, h2.f))
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
	m := openMeter(t, dir, "127.0.0.1:0")
	defer m.Close()
	ctx := context.Background()
	_, err := m.CreateAccount(ctx, "a", NewAccount{ID: "a", Name: "A"})
	require.NoError(t, err)
	r1, err := m.CreateBridge(ctx, "rid", "a", NewBridge{ID: "b", Name: "B"})
	require.NoError(t, err)
	require.True(t, r1.Created)
	require.Len(t, r1.Token, 43)
	r2, err := m.CreateBridge(ctx, "rid", "a", NewBridge{ID: "b", Name: "B"})
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
