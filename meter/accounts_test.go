package meter

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/auth"
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

// TestRestorePinsInheritingStreams: a snapshot from before streams pinned
// their plan at creation (own settings zero: following a default) restores
// with every stream keeping the plan it had, deterministically, and a later
// defaults change moves none of them.
func TestRestorePinsInheritingStreams(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.must(cmdCreateCamera, "c1", "", createCamera{Bridge: "b2", Camera: NewCamera{ID: "c1", Name: "C", Streams: []NewStream{
		{ID: "inherits"}, {ID: "half", RetentionDays: ip(30)}}}})
	// What the previous version left: no own settings where it inherited.
	h.stream("inherits").Own = ownSettings{}
	h.stream("half").Own = ownSettings{RetentionDays: 30}
	old := persist(t, h.f)

	f2 := newFSM(slog.New(slog.DiscardHandler))
	require.NoError(t, f2.Restore(io.NopCloser(bytes.NewReader(old))))
	f3 := newFSM(slog.New(slog.DiscardHandler))
	require.NoError(t, f3.Restore(io.NopCloser(bytes.NewReader(old))))
	require.Equal(t, persist(t, f2), persist(t, f3), "every replica pins the same way")
	require.Equal(t, ownSettings{Width: 1920, Height: 1080, RetentionDays: 60}, f2.st.Streams["inherits"].Own)
	require.Equal(t, ownSettings{Width: 1920, Height: 1080, RetentionDays: 30}, f2.st.Streams["half"].Own)

	h2 := &harness{t: t, f: f2, index: h.index, clock: h.clock}
	h2.must(cmdUpdateAccount, "p", "", updateAccount{ID: "r1", Patch: AccountPatch{Defaults: &DefaultsPatch{Width: ip(640), Height: ip(480), RetentionDays: ip(7)}}})
	for id, sku := range map[string]string{"inherits": "HD2-D60", "half": "HD2-D30"} {
		s := f2.st.Streams[id]
		require.Equal(t, sku, SKU(s.Stream.Settings()), id)
		require.Len(t, s.History, 1, id)
	}
}

// TestBridgeTokenNotInLogOrState: create_bridge carries only the token's
// hash and HA1; the result, the request table and the snapshot hold no
// token. A create_bridge written by the previous version (plaintext token
// as nonce) still replays, and its result no longer keeps the token; a
// snapshot from the previous version is scrubbed on restore.
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

	// The previous version's log entry: the plaintext token as nonce.
	oldTok := auth.NewToken()
	res = h.must(cmdCreateBridge, "old", oldTok, createBridge{Account: "s1", Bridge: NewBridge{ID: "b8", Name: "B8"}})
	require.NotContains(t, string(res), oldTok)
	id, err = m.BridgeByTokenHash(t.Context(), auth.HashToken(oldTok))
	require.NoError(t, err)
	require.Equal(t, "b8", id)

	snap := persist(t, h.f)
	raw, err := decodeRawSnapshot(snap)
	require.NoError(t, err)
	require.NotContains(t, string(raw), tok)
	require.NotContains(t, string(raw), oldTok)

	// The previous version's snapshot: a bridge result with the token in
	// the request table.
	h.f.st.reqs["old"].Result = json.RawMessage(`{"bridge":{"id":"b8"},"token":"` + oldTok + `","created":true}`)
	f2 := newFSM(slog.New(slog.DiscardHandler))
	require.NoError(t, f2.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))))
	raw, err = decodeRawSnapshot(persist(t, f2))
	require.NoError(t, err)
	require.NotContains(t, string(raw), oldTok)
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

	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.False(t, bytes.Contains(b, []byte(r1.Token)), "token in %s", p)
		return nil
	})
	require.NoError(t, err)
}
