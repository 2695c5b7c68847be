package meter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/auth"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ip(v int) *int { return &v }

// harness applies commands to a bare FSM, as raft would.
type harness struct {
	t     *testing.T
	f     *fsm
	index uint64
	clock time.Time
	// legacy applies commands as the version before command versions
	// wrote them (no version).
	legacy bool
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, f: newFSM(slog.New(slog.DiscardHandler)), clock: t0}
}

func (h *harness) apply(typ, rid, nonce string, payload any) (json.RawMessage, error) {
	h.t.Helper()
	p, err := json.Marshal(payload)
	require.NoError(h.t, err)
	h.clock = h.clock.Add(time.Minute)
	c := Command{Type: typ, RequestID: rid, Time: h.clock, Nonce: nonce, Payload: p, Version: cmdVersion}
	if h.legacy {
		c.Version = 0
	}
	b, err := json.Marshal(c)
	require.NoError(h.t, err)
	h.index++
	r := h.f.Apply(&raft.Log{Index: h.index, Data: b}).(*applyResult)
	if r.Err != nil {
		return nil, r.Err.err()
	}
	return r.Data, nil
}

func (h *harness) must(typ, rid, nonce string, payload any) json.RawMessage {
	h.t.Helper()
	d, err := h.apply(typ, rid, nonce, payload)
	require.NoError(h.t, err)
	return d
}

func (h *harness) stream(id string) *streamRec { return h.f.st.Streams[id] }

// seed: reseller r1 (defaults 1920x1080 D60), sub-account s1 (D7), sub s2
// (no defaults), bridge b1 in s1, bridge b2 in s2.
func seed(h *harness) {
	h.must(cmdCreateAccount, "r1", "", NewAccount{ID: "r1", Name: "Reseller", Defaults: Defaults{Width: 1920, Height: 1080, RetentionDays: 60}})
	h.must(cmdCreateAccount, "s1", "", NewAccount{ID: "s1", Name: "Sub 1", Parent: "r1", Defaults: Defaults{RetentionDays: 7}})
	h.must(cmdCreateAccount, "s2", "", NewAccount{ID: "s2", Name: "Sub 2", Parent: "r1"})
	h.must(cmdCreateAccount, "r2", "", NewAccount{ID: "r2", Name: "Bare reseller"})
	h.must(cmdCreateBridge, "b1", auth.NewToken(), createBridge{Account: "s1", Bridge: NewBridge{ID: "b1", Name: "B1"}})
	h.must(cmdCreateBridge, "b2", auth.NewToken(), createBridge{Account: "s2", Bridge: NewBridge{ID: "b2", Name: "B2"}})
	h.must(cmdCreateBridge, "b3", auth.NewToken(), createBridge{Account: "r2", Bridge: NewBridge{ID: "b3", Name: "B3"}})
}

func TestFSMCommands(t *testing.T) {
	cases := []struct {
		name    string
		typ     string
		payload any
		wantErr error
		code    string
	}{
		{"account ok", cmdCreateAccount, NewAccount{ID: "a9", Name: "A"}, nil, ""},
		{"account same fields again", cmdCreateAccount, NewAccount{ID: "s1", Name: "Sub 1", Parent: "r1", Defaults: Defaults{RetentionDays: 7}}, nil, ""},
		{"account different fields", cmdCreateAccount, NewAccount{ID: "s1", Name: "Other"}, ErrConflict, "conflict"},
		{"account unknown parent", cmdCreateAccount, NewAccount{ID: "a9", Name: "A", Parent: "nope"}, ErrInvalid, "unknown_parent"},
		{"account grandchild", cmdCreateAccount, NewAccount{ID: "a9", Name: "A", Parent: "s1"}, ErrInvalid, "invalid_parent"},
		{"account bad id", cmdCreateAccount, NewAccount{ID: "a/9", Name: "A"}, ErrInvalid, "invalid_id"},
		{"account bad cycle", cmdCreateAccount, NewAccount{ID: "a9", Name: "A", BillingCycle: "weekly"}, ErrInvalid, "invalid_billing_cycle"},
		{"account bad default retention", cmdCreateAccount, NewAccount{ID: "a9", Name: "A", Defaults: Defaults{RetentionDays: 3651}}, ErrInvalid, "invalid_defaults"},
		{"account half resolution default", cmdCreateAccount, NewAccount{ID: "a9", Name: "A", Defaults: Defaults{Width: 1920}}, ErrInvalid, "invalid_defaults"},
		{"bridge unknown account", cmdCreateBridge, createBridge{Account: "nope", Bridge: NewBridge{ID: "b9", Name: "B"}}, ErrNotFound, "not_found"},
		{"bridge malformed token hash", cmdCreateBridge, createBridge{Account: "s1", Bridge: NewBridge{ID: "b9", Name: "B"}}, ErrInvalid, "malformed_command"},
		{"bridge different fields", cmdCreateBridge, createBridge{Account: "s2", Bridge: NewBridge{ID: "b1", Name: "B1"}}, ErrConflict, "conflict"},
		{"camera unknown bridge", cmdCreateCamera, createCamera{Bridge: "nope", Camera: NewCamera{ID: "c9", Name: "C", Streams: []NewStream{{ID: "x9"}}}}, ErrInvalid, "unknown_bridge"},
		{"camera no streams", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c9", Name: "C"}}, ErrInvalid, "invalid_streams"},
		{"camera retention 0", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c9", Name: "C", Streams: []NewStream{{ID: "x9", RetentionDays: ip(0)}}}}, ErrInvalid, "invalid_retention"},
		{"camera retention 3651", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c9", Name: "C", Streams: []NewStream{{ID: "x9", RetentionDays: ip(3651)}}}}, ErrInvalid, "invalid_retention"},
		{"camera width 0", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c9", Name: "C", Streams: []NewStream{{ID: "x9", Width: ip(0), Height: ip(720)}}}}, ErrInvalid, "invalid_resolution"},
		{"camera height negative", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c9", Name: "C", Streams: []NewStream{{ID: "x9", Width: ip(1280), Height: ip(-1)}}}}, ErrInvalid, "invalid_resolution"},
		{"camera stream id taken", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c9", Name: "C", Streams: []NewStream{{ID: "st1"}}}}, ErrConflict, "conflict"},
		{"camera same fields again", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "Cam", Streams: []NewStream{{ID: "st1"}}}}, nil, ""},
		{"camera different fields", cmdCreateCamera, createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "Renamed", Streams: []NewStream{{ID: "st1"}}}}, ErrConflict, "conflict"},
		{"update unknown stream", cmdUpdateStream, updateStream{ID: "nope", Patch: StreamPatch{RetentionDays: ip(7)}}, ErrNotFound, "not_found"},
		{"update bad retention", cmdUpdateStream, updateStream{ID: "st1", Patch: StreamPatch{RetentionDays: ip(0)}}, ErrInvalid, "invalid_retention"},
		{"update account unknown", cmdUpdateAccount, updateAccount{ID: "nope"}, ErrNotFound, "not_found"},
		{"privacy not allowed", cmdUpdateAccount, updateAccount{ID: "s1", Patch: AccountPatch{PrivacyMode: new(true)}}, ErrInvalid, "privacy_mode_not_allowed"},
		{"delete unknown camera", cmdDeleteCamera, deleteCamera{ID: "nope"}, ErrNotFound, "not_found"},
		{"unknown type", "explode", struct{}{}, ErrInvalid, "malformed_command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seed(h)
			h.must(cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "Cam", Streams: []NewStream{{ID: "st1"}}}})
			before, err := encodeState(h.f.st)
			require.NoError(t, err)
			nonce := auth.NewToken()
			if tc.name == "bridge malformed token hash" {
				nonce = "abc:def"
			}
			_, err = h.apply(tc.typ, "req-"+tc.name, nonce, tc.payload)
			if tc.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.wantErr)
			var e *Error
			require.True(t, errors.As(err, &e))
			require.Equal(t, tc.code, e.Code)
			// A refused command changes nothing but the applied index.
			h.f.st.Applied--
			after, err := encodeState(h.f.st)
			require.NoError(t, err)
			require.Equal(t, before, after)
		})
	}
}

func TestFSMDedupe(t *testing.T) {
	h := newHarness(t)
	seed(h)
	tok1, tok2 := auth.NewToken(), auth.NewToken()
	first := h.must(cmdCreateBridge, "rid-1", bridgeNonce("b9", tok1), createBridge{Account: "s1", Bridge: NewBridge{ID: "b9", Name: "B9"}})
	// A retry carries a fresh token; it must replay the first result, which
	// names the first token's hash and holds no token.
	again := h.must(cmdCreateBridge, "rid-1", bridgeNonce("b9", tok2), createBridge{Account: "s1", Bridge: NewBridge{ID: "b9", Name: "B9"}})
	require.Equal(t, first, again)
	require.NotContains(t, string(again), tok1)
	var r BridgeResult
	require.NoError(t, json.Unmarshal(again, &r))
	require.Equal(t, auth.HashToken(tok1), r.TokenHash)
	require.Empty(t, r.Token)
	require.True(t, r.Created)
	require.Equal(t, "b9", h.f.st.TokenIndex[auth.HashToken(tok1)])
	require.NotContains(t, h.f.st.TokenIndex, auth.HashToken(tok2))

	// Another request id for the same bridge: success, but no token.
	other := h.must(cmdCreateBridge, "rid-2", bridgeNonce("b9", tok2), createBridge{Account: "s1", Bridge: NewBridge{ID: "b9", Name: "B9"}})
	var r2 BridgeResult
	require.NoError(t, json.Unmarshal(other, &r2))
	require.False(t, r2.Created)
	require.Empty(t, r2.TokenHash)

	// The same request id for a different request is refused.
	_, err := h.apply(cmdCreateBridge, "rid-1", tok2, createBridge{Account: "s1", Bridge: NewBridge{ID: "b10", Name: "B10"}})
	require.ErrorIs(t, err, ErrConflict)

	// Settings updates: a replay must not add a second history entry.
	h.must(cmdCreateCamera, "cam", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "Cam", Streams: []NewStream{{ID: "st1"}}}})
	h.must(cmdUpdateStream, "up", "", updateStream{ID: "st1", Patch: StreamPatch{RetentionDays: ip(90)}})
	h.must(cmdUpdateStream, "up", "", updateStream{ID: "st1", Patch: StreamPatch{RetentionDays: ip(90)}})
	require.Len(t, h.stream("st1").History, 2)
	// The same change under another id changes nothing either.
	h.must(cmdUpdateStream, "up2", "", updateStream{ID: "st1", Patch: StreamPatch{RetentionDays: ip(90)}})
	require.Len(t, h.stream("st1").History, 2)
}

func TestFSMRequestTableBounded(t *testing.T) {
	h := newHarness(t)
	h.f.maxRequests = 5
	for i := range 20 {
		h.must(cmdCreateAccount, fmt.Sprintf("rid-%d", i), "", NewAccount{ID: fmt.Sprintf("a%d", i), Name: "A"})
	}
	require.Len(t, h.f.st.Requests, 5)
	require.Len(t, h.f.st.reqs, 5)
	require.Equal(t, "rid-15", h.f.st.Requests[0].ID)

	// Age: entries older than the TTL (in command time) go.
	h.clock = h.clock.Add(defaultRequestTTL + time.Hour)
	h.must(cmdCreateAccount, "late", "", NewAccount{ID: "late", Name: "A"})
	require.Len(t, h.f.st.Requests, 1)
}

func TestFSMDefaultsResolution(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.must(cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "C1", Streams: []NewStream{
		{ID: "own", Width: ip(3840), Height: ip(2160), RetentionDays: ip(90), Analytics: []string{"people", "lpr", "people"}},
		{ID: "sub", Width: ip(1280), Height: ip(720)},
	}}})
	h.must(cmdCreateCamera, "c2", "", createCamera{Bridge: "b2", Camera: NewCamera{ID: "c2", Name: "C2", Streams: []NewStream{{ID: "reseller"}}}})
	h.must(cmdCreateCamera, "c3", "", createCamera{Bridge: "b3", Camera: NewCamera{ID: "c3", Name: "C3", Streams: []NewStream{{ID: "system"}}}})

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
		s := h.stream(c.stream).Stream
		require.Equal(t, []int{c.w, c.h, c.ret}, []int{s.Width, s.Height, s.RetentionDays}, c.stream)
		require.Equal(t, c.sku, SKU(s.Settings()), c.stream)
	}
	require.Equal(t, []string{"lpr", "people"}, h.stream("own").Stream.Analytics)

	// Defaults change (DESIGN section 1): existing streams keep their plan
	// and history; streams added afterwards get the new defaults, and a
	// cleared sub-account default falls back to the reseller's.
	h.must(cmdUpdateAccount, "u1", "", updateAccount{ID: "s1", Patch: AccountPatch{Defaults: &DefaultsPatch{RetentionDays: ip(14)}}})
	h.must(cmdCreateCamera, "c4", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c4", Name: "C4", Streams: []NewStream{{ID: "sub14"}}}})
	h.must(cmdUpdateAccount, "u2", "", updateAccount{ID: "s1", Patch: AccountPatch{Defaults: &DefaultsPatch{RetentionDays: ip(0)}}})
	h.must(cmdUpdateAccount, "u3", "", updateAccount{ID: "r1", Patch: AccountPatch{Defaults: &DefaultsPatch{Width: ip(2560), Height: ip(1440), RetentionDays: ip(7)}}})
	h.must(cmdCreateCamera, "c5", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c5", Name: "C5", Streams: []NewStream{{ID: "sub7"}}}})
	for _, c := range cases {
		s := h.stream(c.stream)
		require.Equal(t, c.sku, SKU(s.Stream.Settings()), c.stream)
		require.Len(t, s.History, 1, c.stream)
	}
	require.Equal(t, "HD2-D14", SKU(h.stream("sub14").Stream.Settings()))
	require.Equal(t, "HD4-D7", SKU(h.stream("sub7").Stream.Settings()))

	// Patching one side of the resolution keeps the other.
	h.must(cmdUpdateStream, "u4", "", updateStream{ID: "reseller", Patch: StreamPatch{Height: ip(1440)}})
	s := h.stream("reseller").Stream
	require.Equal(t, []int{1920, 1440}, []int{s.Width, s.Height})
	hist := h.stream("reseller").History
	require.Equal(t, "updated", hist[len(hist)-1].Reason)
	require.Equal(t, h.clock, hist[len(hist)-1].At) // proposer time, not a clock in the FSM

	// Analytics cleared.
	h.must(cmdUpdateStream, "u5", "", updateStream{ID: "own", Patch: StreamPatch{Analytics: &[]string{}}})
	require.Empty(t, h.stream("own").Stream.Analytics)
	require.Len(t, h.stream("own").History, 2)
}

func TestFSMDeleteCamera(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.must(cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "C1", Streams: []NewStream{{ID: "x"}, {ID: "y"}}}})
	d := h.must(cmdDeleteCamera, "d1", "purge-1", deleteCamera{ID: "c1"})
	var r DeleteResult
	require.NoError(t, json.Unmarshal(d, &r))
	require.Equal(t, "purge-1", r.PurgeID)
	require.Equal(t, h.clock, r.DeletedAt)
	for _, id := range []string{"x", "y"} {
		require.NotNil(t, h.stream(id).Stream.DeletedAt, "kept for billing, marked deleted")
	}
	// Deleting again (another request) gives the same purge.
	d = h.must(cmdDeleteCamera, "d2", "purge-2", deleteCamera{ID: "c1"})
	require.NoError(t, json.Unmarshal(d, &r))
	require.Equal(t, "purge-1", r.PurgeID)
	// A deleted stream cannot be updated; a deleted id cannot be reused.
	_, err := h.apply(cmdUpdateStream, "u", "", updateStream{ID: "x", Patch: StreamPatch{RetentionDays: ip(7)}})
	require.ErrorIs(t, err, ErrNotFound)
	_, err = h.apply(cmdCreateCamera, "c1b", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "C1", Streams: []NewStream{{ID: "x"}, {ID: "y"}}}})
	require.ErrorIs(t, err, ErrConflict)
}

func TestSnapshotRoundTripByteIdentical(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.must(cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "C1", Streams: []NewStream{{ID: "x", Analytics: []string{"people"}}}}})
	h.must(cmdUpdateStream, "u", "", updateStream{ID: "x", Patch: StreamPatch{RetentionDays: ip(7)}})
	h.must(cmdUpdateAccount, "p", "", updateAccount{ID: "s1", Patch: AccountPatch{PrivacyModeAllowed: new(true), PrivacyMode: new(true), PrivacySuspendedUntil: &t0}})
	h.must(cmdDeleteCamera, "d", "purge-1", deleteCamera{ID: "c1"})

	b1 := persist(t, h.f)
	f2 := newFSM(slog.New(slog.DiscardHandler))
	require.NoError(t, f2.Restore(io.NopCloser(bytes.NewReader(b1))))
	b2 := persist(t, f2)
	require.Equal(t, b1, b2)

	// The restored state works: dedupe table and token index included.
	h2 := &harness{t: t, f: f2, index: h.index, clock: h.clock}
	for id, b := range h.f.st.Bridges {
		require.Equal(t, b.TokenHash, f2.st.Bridges[id].TokenHash)
		require.NotEmpty(t, b.TokenHash)
		require.Equal(t, b.DigestHA1, f2.st.Bridges[id].DigestHA1)
		require.Len(t, b.DigestHA1, 32)
	}
	d := h2.must(cmdDeleteCamera, "d", "purge-other", deleteCamera{ID: "c1"})
	var r DeleteResult
	require.NoError(t, json.Unmarshal(d, &r))
	require.Equal(t, "purge-1", r.PurgeID)
}

type memSink struct {
	bytes.Buffer
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

func persist(t *testing.T, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	require.NoError(t, err)
	var s memSink
	require.NoError(t, snap.Persist(&s))
	return s.Bytes()
}

func TestRestoreDamagedSnapshot(t *testing.T) {
	h := newHarness(t)
	seed(h)
	good := persist(t, h.f)
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
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFSM(slog.New(slog.DiscardHandler))
			err := f.Restore(io.NopCloser(bytes.NewReader(b)))
			require.Error(t, err)
			require.Contains(t, err.Error(), "meter: restore snapshot")
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
	h := newHarness(t)
	seed(h)
	tok := auth.NewToken()
	h.must(cmdCreateBridge, "b9", tok, createBridge{Account: "s1", Bridge: NewBridge{ID: "b9", Name: "B9"}})
	m := &Meter{fsm: h.f}
	ha1, err := m.BridgeDigestHA1(t.Context(), "b9")
	require.NoError(t, err)
	require.Equal(t, auth.DigestHA1("b9", DigestRealm, tok), ha1)
	_, err = m.BridgeDigestHA1(t.Context(), "nobody")
	require.ErrorIs(t, err, ErrNotFound)
}
