package accounts_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/replica"

	"github.com/vigilcloud/vigil/accounts"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
)

func streamOf(h *machinetest.Harness, id string) *accounts.StreamRec { return h.M.Accounts.Streams[id] }

func TestFSMCommands(t *testing.T) {
	cases := []struct {
		name    string
		typ     string
		payload any
		wantErr error
		code    string
	}{
		{"account ok", cluster.CmdCreateAccount, accounts.NewAccount{ID: "a9", Name: "A"}, nil, ""},
		{"account same fields again", cluster.CmdCreateAccount, accounts.NewAccount{ID: "s1", Name: "Sub 1", Parent: "r1", Defaults: accounts.Defaults{RetentionDays: 7}}, nil, ""},
		{"account different fields", cluster.CmdCreateAccount, accounts.NewAccount{ID: "s1", Name: "Other"}, accounts.ErrConflict, "conflict"},
		{"account unknown parent", cluster.CmdCreateAccount, accounts.NewAccount{ID: "a9", Name: "A", Parent: "nope"}, accounts.ErrInvalid, "unknown_parent"},
		{"account grandchild", cluster.CmdCreateAccount, accounts.NewAccount{ID: "a9", Name: "A", Parent: "s1"}, accounts.ErrInvalid, "invalid_parent"},
		{"account bad id", cluster.CmdCreateAccount, accounts.NewAccount{ID: "a/9", Name: "A"}, accounts.ErrInvalid, "invalid_id"},
		{"account bad cycle", cluster.CmdCreateAccount, accounts.NewAccount{ID: "a9", Name: "A", BillingCycle: "weekly"}, accounts.ErrInvalid, "invalid_billing_cycle"},
		{"account bad default retention", cluster.CmdCreateAccount, accounts.NewAccount{ID: "a9", Name: "A", Defaults: accounts.Defaults{RetentionDays: 3651}}, accounts.ErrInvalid, "invalid_defaults"},
		{"account half resolution default", cluster.CmdCreateAccount, accounts.NewAccount{ID: "a9", Name: "A", Defaults: accounts.Defaults{Width: 1920}}, accounts.ErrInvalid, "invalid_defaults"},
		{"bridge unknown account", cluster.CmdCreateBridge, accounts.CreateBridgeCmd{Account: "nope", Bridge: accounts.NewBridge{ID: "b9", Name: "B"}}, accounts.ErrNotFound, "not_found"},
		{"bridge malformed token hash", cluster.CmdCreateBridge, accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b9", Name: "B"}}, accounts.ErrInvalid, "malformed_command"},
		{"bridge different fields", cluster.CmdCreateBridge, accounts.CreateBridgeCmd{Account: "s2", Bridge: accounts.NewBridge{ID: "b1", Name: "B1"}}, accounts.ErrConflict, "conflict"},
		{"camera unknown bridge", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "nope", Camera: accounts.NewCamera{ID: "c9", Name: "C", Streams: []accounts.NewStream{{ID: "x9"}}}}, accounts.ErrInvalid, "unknown_bridge"},
		{"camera no streams", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c9", Name: "C"}}, accounts.ErrInvalid, "invalid_streams"},
		{"camera retention 0", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c9", Name: "C", Streams: []accounts.NewStream{{ID: "x9", RetentionDays: machinetest.IP(0)}}}}, accounts.ErrInvalid, "invalid_retention"},
		{"camera retention 3651", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c9", Name: "C", Streams: []accounts.NewStream{{ID: "x9", RetentionDays: machinetest.IP(3651)}}}}, accounts.ErrInvalid, "invalid_retention"},
		{"camera width 0", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c9", Name: "C", Streams: []accounts.NewStream{{ID: "x9", Width: machinetest.IP(0), Height: machinetest.IP(720)}}}}, accounts.ErrInvalid, "invalid_resolution"},
		{"camera height negative", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c9", Name: "C", Streams: []accounts.NewStream{{ID: "x9", Width: machinetest.IP(1280), Height: machinetest.IP(-1)}}}}, accounts.ErrInvalid, "invalid_resolution"},
		{"camera stream id taken", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c9", Name: "C", Streams: []accounts.NewStream{{ID: "st1"}}}}, accounts.ErrConflict, "conflict"},
		{"camera same fields again", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "Cam", Streams: []accounts.NewStream{{ID: "st1"}}}}, nil, ""},
		{"camera different fields", cluster.CmdCreateCamera, accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "Renamed", Streams: []accounts.NewStream{{ID: "st1"}}}}, accounts.ErrConflict, "conflict"},
		{"update unknown stream", cluster.CmdUpdateStream, accounts.UpdateStreamCmd{ID: "nope", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(7)}}, accounts.ErrNotFound, "not_found"},
		{"update bad retention", cluster.CmdUpdateStream, accounts.UpdateStreamCmd{ID: "st1", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(0)}}, accounts.ErrInvalid, "invalid_retention"},
		{"update account unknown", cluster.CmdUpdateAccount, accounts.UpdateAccountCmd{ID: "nope"}, accounts.ErrNotFound, "not_found"},
		{"privacy not allowed", cluster.CmdUpdateAccount, accounts.UpdateAccountCmd{ID: "s1", Patch: accounts.AccountPatch{PrivacyMode: new(true)}}, accounts.ErrInvalid, "privacy_mode_not_allowed"},
		{"delete unknown camera", cluster.CmdDeleteCamera, accounts.DeleteCameraCmd{ID: "nope"}, accounts.ErrNotFound, "not_found"},
		{"unknown type", "explode", struct{}{}, accounts.ErrInvalid, "malformed_command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := machinetest.New(t)
			machinetest.Seed(h)
			h.Must(cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "Cam", Streams: []accounts.NewStream{{ID: "st1"}}}})
			before, err := machinetest.StateOf(t, h.M), error(nil)
			require.NoError(t, err)
			nonce := auth.NewToken()
			if tc.name == "bridge malformed token hash" {
				nonce = "abc:def"
			}
			_, err = h.Apply(tc.typ, "req-"+tc.name, nonce, tc.payload)
			if tc.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.wantErr)
			var e *cluster.Error
			require.True(t, errors.As(err, &e))
			require.Equal(t, tc.code, e.Code)
			// A refused command changes nothing but the applied index.
			h.M.SetAppliedForTest(h.M.Applied() - 1)
			after, err := machinetest.StateOf(t, h.M), error(nil)
			require.NoError(t, err)
			require.Equal(t, before, after)
		})
	}
}

func TestFSMDedupe(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	tok1, tok2 := auth.NewToken(), auth.NewToken()
	first := h.Must(cluster.CmdCreateBridge, "rid-1", accounts.BridgeNonce("b9", tok1), accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b9", Name: "B9"}})
	// A retry carries a fresh token; it must replay the first result, which
	// names the first token's hash and holds no token.
	again := h.Must(cluster.CmdCreateBridge, "rid-1", accounts.BridgeNonce("b9", tok2), accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b9", Name: "B9"}})
	require.Equal(t, first, again)
	require.NotContains(t, string(again), tok1)
	var r accounts.BridgeResult
	require.NoError(t, json.Unmarshal(again, &r))
	require.Equal(t, auth.HashToken(tok1), r.TokenHash)
	require.Empty(t, r.Token)
	require.True(t, r.Created)
	require.Equal(t, "b9", h.M.Accounts.TokenIndex[auth.HashToken(tok1)])
	require.NotContains(t, h.M.Accounts.TokenIndex, auth.HashToken(tok2))

	// Another request id for the same bridge: success, but no token.
	other := h.Must(cluster.CmdCreateBridge, "rid-2", accounts.BridgeNonce("b9", tok2), accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b9", Name: "B9"}})
	var r2 accounts.BridgeResult
	require.NoError(t, json.Unmarshal(other, &r2))
	require.False(t, r2.Created)
	require.Empty(t, r2.TokenHash)

	// The same request id for a different request is refused.
	_, err := h.Apply(cluster.CmdCreateBridge, "rid-1", tok2, accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b10", Name: "B10"}})
	require.ErrorIs(t, err, accounts.ErrConflict)

	// Settings updates: a replay must not add a second history entry.
	h.Must(cluster.CmdCreateCamera, "cam", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "Cam", Streams: []accounts.NewStream{{ID: "st1"}}}})
	h.Must(cluster.CmdUpdateStream, "up", "", accounts.UpdateStreamCmd{ID: "st1", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(90)}})
	h.Must(cluster.CmdUpdateStream, "up", "", accounts.UpdateStreamCmd{ID: "st1", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(90)}})
	require.Len(t, streamOf(h, "st1").History, 2)
	// The same change under another id changes nothing either.
	h.Must(cluster.CmdUpdateStream, "up2", "", accounts.UpdateStreamCmd{ID: "st1", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(90)}})
	require.Len(t, streamOf(h, "st1").History, 2)
}

func TestFSMRequestTableBounded(t *testing.T) {
	h := machinetest.New(t)
	h.M.SetMaxRequests(5)
	for i := range 20 {
		h.Must(cluster.CmdCreateAccount, fmt.Sprintf("rid-%d", i), "", accounts.NewAccount{ID: fmt.Sprintf("a%d", i), Name: "A"})
	}
	ids, indexed := h.M.RecentRequests()
	require.Len(t, ids, 5)
	require.Equal(t, 5, indexed)
	require.Equal(t, "rid-15", ids[0])

	// Age: entries older than the TTL (in command time, 24 h) go.
	h.Clock = h.Clock.Add(24*time.Hour + time.Hour)
	h.Must(cluster.CmdCreateAccount, "late", "", accounts.NewAccount{ID: "late", Name: "A"})
	ids, _ = h.M.RecentRequests()
	require.Len(t, ids, 1)
}

func TestFSMDefaultsResolution(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.Must(cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{
		{ID: "own", Width: machinetest.IP(3840), Height: machinetest.IP(2160), RetentionDays: machinetest.IP(90), Analytics: []string{"people", "lpr", "people"}},
		{ID: "sub", Width: machinetest.IP(1280), Height: machinetest.IP(720)},
	}}})
	h.Must(cluster.CmdCreateCamera, "c2", "", accounts.CreateCameraCmd{Bridge: "b2", Camera: accounts.NewCamera{ID: "c2", Name: "C2", Streams: []accounts.NewStream{{ID: "reseller"}}}})
	h.Must(cluster.CmdCreateCamera, "c3", "", accounts.CreateCameraCmd{Bridge: "b3", Camera: accounts.NewCamera{ID: "c3", Name: "C3", Streams: []accounts.NewStream{{ID: "system"}}}})

	cases := []struct {
		stream    string
		w, h, ret int
		sku       string
	}{
		{"own", 3840, 2160, 90, "HD10-D90"},     // the stream's own settings
		{"sub", 1280, 720, 7, "HD1-D7"},         // sub-account retention, reseller resolution would be overridden by own
		{"reseller", 1920, 1080, 60, "HD2-D60"}, // sub-account has no defaults: the reseller's
		{"system", 1280, 720, 30, "HD1-D30"},    // nobody sets anything: HD1-D30
	}
	for _, c := range cases {
		s := streamOf(h, c.stream).Stream
		require.Equal(t, []int{c.w, c.h, c.ret}, []int{s.Width, s.Height, s.RetentionDays}, c.stream)
		require.Equal(t, c.sku, accounts.SKU(s.Settings()), c.stream)
	}
	require.Equal(t, []string{"lpr", "people"}, streamOf(h, "own").Stream.Analytics)

	// accounts.Defaults change (DESIGN section 1): existing streams keep their plan
	// and history; streams added afterwards get the new defaults, and a
	// cleared sub-account default falls back to the reseller's.
	h.Must(cluster.CmdUpdateAccount, "u1", "", accounts.UpdateAccountCmd{ID: "s1", Patch: accounts.AccountPatch{Defaults: &accounts.DefaultsPatch{RetentionDays: machinetest.IP(14)}}})
	h.Must(cluster.CmdCreateCamera, "c4", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c4", Name: "C4", Streams: []accounts.NewStream{{ID: "sub14"}}}})
	h.Must(cluster.CmdUpdateAccount, "u2", "", accounts.UpdateAccountCmd{ID: "s1", Patch: accounts.AccountPatch{Defaults: &accounts.DefaultsPatch{RetentionDays: machinetest.IP(0)}}})
	h.Must(cluster.CmdUpdateAccount, "u3", "", accounts.UpdateAccountCmd{ID: "r1", Patch: accounts.AccountPatch{Defaults: &accounts.DefaultsPatch{Width: machinetest.IP(2560), Height: machinetest.IP(1440), RetentionDays: machinetest.IP(7)}}})
	h.Must(cluster.CmdCreateCamera, "c5", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c5", Name: "C5", Streams: []accounts.NewStream{{ID: "sub7"}}}})
	for _, c := range cases {
		s := streamOf(h, c.stream)
		require.Equal(t, c.sku, accounts.SKU(s.Stream.Settings()), c.stream)
		require.Len(t, s.History, 1, c.stream)
	}
	require.Equal(t, "HD2-D14", accounts.SKU(streamOf(h, "sub14").Stream.Settings()))
	require.Equal(t, "HD4-D7", accounts.SKU(streamOf(h, "sub7").Stream.Settings()))

	// Patching one side of the resolution keeps the other.
	h.Must(cluster.CmdUpdateStream, "u4", "", accounts.UpdateStreamCmd{ID: "reseller", Patch: accounts.StreamPatch{Height: machinetest.IP(1440)}})
	s := streamOf(h, "reseller").Stream
	require.Equal(t, []int{1920, 1440}, []int{s.Width, s.Height})
	hist := streamOf(h, "reseller").History
	require.Equal(t, "updated", hist[len(hist)-1].Reason)
	require.Equal(t, h.Clock, hist[len(hist)-1].At) // proposer time, not a clock in the FSM

	// Analytics cleared.
	h.Must(cluster.CmdUpdateStream, "u5", "", accounts.UpdateStreamCmd{ID: "own", Patch: accounts.StreamPatch{Analytics: &[]string{}}})
	require.Empty(t, streamOf(h, "own").Stream.Analytics)
	require.Len(t, streamOf(h, "own").History, 2)
}

func TestFSMDeleteCamera(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.Must(cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}, {ID: "y"}}}})
	d := h.Must(cluster.CmdDeleteCamera, "d1", "purge-1", accounts.DeleteCameraCmd{ID: "c1"})
	var r accounts.DeleteResult
	require.NoError(t, json.Unmarshal(d, &r))
	require.Equal(t, "purge-1", r.PurgeID)
	require.Equal(t, h.Clock, r.DeletedAt)
	for _, id := range []string{"x", "y"} {
		require.NotNil(t, streamOf(h, id).Stream.DeletedAt, "kept for billing, marked deleted")
	}
	// Deleting again (another request) gives the same purge.
	d = h.Must(cluster.CmdDeleteCamera, "d2", "purge-2", accounts.DeleteCameraCmd{ID: "c1"})
	require.NoError(t, json.Unmarshal(d, &r))
	require.Equal(t, "purge-1", r.PurgeID)
	// A deleted stream cannot be updated; a deleted id cannot be reused.
	_, err := h.Apply(cluster.CmdUpdateStream, "u", "", accounts.UpdateStreamCmd{ID: "x", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(7)}})
	require.ErrorIs(t, err, accounts.ErrNotFound)
	_, err = h.Apply(cluster.CmdCreateCamera, "c1b", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}, {ID: "y"}}}})
	require.ErrorIs(t, err, accounts.ErrConflict)
}

func TestSnapshotRoundTripByteIdentical(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.Must(cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x", Analytics: []string{"people"}}}}})
	h.Must(cluster.CmdUpdateStream, "u", "", accounts.UpdateStreamCmd{ID: "x", Patch: accounts.StreamPatch{RetentionDays: machinetest.IP(7)}})
	h.Must(cluster.CmdUpdateAccount, "p", "", accounts.UpdateAccountCmd{ID: "s1", Patch: accounts.AccountPatch{PrivacyModeAllowed: new(true), PrivacyMode: new(true), PrivacySuspendedUntil: accounts.OptionalTime{Set: true, Time: &machinetest.T0}}})
	h.Must(cluster.CmdDeleteCamera, "d", "purge-1", accounts.DeleteCameraCmd{ID: "c1"})

	b1 := machinetest.Persist(t, h.M)
	f2 := replica.NewMachine(nil)
	require.NoError(t, f2.Restore(io.NopCloser(bytes.NewReader(b1))))
	b2 := machinetest.Persist(t, f2)
	require.Equal(t, b1, b2)

	// The restored state works: dedupe table and token index included.
	h2 := &machinetest.Harness{T: t, M: f2, Index: h.Index, Clock: h.Clock}
	for id, b := range h.M.Accounts.Bridges {
		require.Equal(t, b.TokenHash, f2.Accounts.Bridges[id].TokenHash)
		require.NotEmpty(t, b.TokenHash)
		require.Equal(t, b.DigestHA1, f2.Accounts.Bridges[id].DigestHA1)
		require.Len(t, b.DigestHA1, 32)
	}
	d := h2.Must(cluster.CmdDeleteCamera, "d", "purge-other", accounts.DeleteCameraCmd{ID: "c1"})
	var r accounts.DeleteResult
	require.NoError(t, json.Unmarshal(d, &r))
	require.Equal(t, "purge-1", r.PurgeID)
}

func TestRestoreDamagedSnapshot(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	good := machinetest.Persist(t, h.M)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0xff
	notJSON, err := encodeRaw([]byte("{\"accounts\": [1,2"))
	require.NoError(t, err)
	cases := map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)/2],
		"corrupt":   flipped,
		"not zstd":  []byte("hello world, this is not a snapshot"),
		"bad json":  notJSON,
	}
	before := h.State()
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			f := replica.NewMachine(nil)
			err := f.Restore(io.NopCloser(bytes.NewReader(b)))
			require.Error(t, err)
			require.Contains(t, err.Error(), "meter: restore snapshot")
			// A snapshot that does not decode changes nothing.
			require.Error(t, h.M.Restore(io.NopCloser(bytes.NewReader(b))))
			require.Equal(t, string(before), string(h.State()))
		})
	}
}

func encodeRaw(b []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil), nil
}

func TestBridgeDigestHA1(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	tok := auth.NewToken()
	h.Must(cluster.CmdCreateBridge, "b9", tok, accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b9", Name: "B9"}})
	reg := accounts.New(h.M.Accounts, nil, nil)
	ha1, err := reg.BridgeDigestHA1(t.Context(), "b9")
	require.NoError(t, err)
	require.Equal(t, auth.DigestHA1("b9", accounts.DigestRealm, tok), ha1)
	_, err = reg.BridgeDigestHA1(t.Context(), "nobody")
	require.ErrorIs(t, err, accounts.ErrNotFound)
}
