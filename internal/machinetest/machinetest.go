// Package machinetest applies commands to a bare replicated state machine
// (every domain registered), as raft would, for the domains' tests.
package machinetest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/replica"
)

// T0 is the harness's first command time (plus a minute).
var T0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Harness applies commands to M.
type Harness struct {
	T     *testing.T
	M     *replica.Machine
	Index uint64
	Clock time.Time
	// Legacy applies commands as the version before command versions
	// wrote them (no version).
	Legacy bool
}

// New returns a harness on an empty machine.
func New(t *testing.T) *Harness {
	return &Harness{T: t, M: replica.NewMachine(nil), Clock: T0}
}

// ApplyAt applies a JSON command stamped exactly at t.
func (h *Harness) ApplyAt(t time.Time, typ, rid, nonce string, payload any) (json.RawMessage, error) {
	h.T.Helper()
	h.Clock = t.Add(-time.Minute)
	return h.Apply(typ, rid, nonce, payload)
}

// Apply applies a JSON command stamped a minute after the previous one.
func (h *Harness) Apply(typ, rid, nonce string, payload any) (json.RawMessage, error) {
	h.T.Helper()
	h.Clock = h.Clock.Add(time.Minute)
	t := h.Clock
	p, err := json.Marshal(payload)
	require.NoError(h.T, err)
	c := cluster.Command{Type: typ, RequestID: rid, Time: t, Nonce: nonce, Payload: p, Version: cluster.CommandVersion}
	if h.Legacy {
		c.Version = 0
	}
	b, err := json.Marshal(c)
	require.NoError(h.T, err)
	r := h.ApplyRaw(b)
	if err := r.Error(); err != nil {
		return nil, err
	}
	return r.Data, nil
}

// ApplyRaw applies a log entry as it is.
func (h *Harness) ApplyRaw(data []byte) *cluster.Result {
	h.T.Helper()
	h.Index++
	return h.M.Apply(&raft.Log{Index: h.Index, Data: data}).(*cluster.Result)
}

// Must is Apply that must succeed.
func (h *Harness) Must(typ, rid, nonce string, payload any) json.RawMessage {
	h.T.Helper()
	d, err := h.Apply(typ, rid, nonce, payload)
	require.NoError(h.T, err)
	return d
}

// MustAt is ApplyAt that must succeed.
func (h *Harness) MustAt(t time.Time, typ, rid, nonce string, payload any) json.RawMessage {
	h.T.Helper()
	d, err := h.ApplyAt(t, typ, rid, nonce, payload)
	require.NoError(h.T, err)
	return d
}

// Usage applies a usage batch (JSON) stamped t.
func (h *Harness) Usage(t time.Time, id string, entries ...meter.UsageEntry) meter.UsageResult {
	h.T.Helper()
	var r meter.UsageResult
	require.NoError(h.T, json.Unmarshal(h.MustAt(t, cluster.CmdUsageBatch, "usage/"+id, "", meter.UsageBatch{ID: id, To: t, Entries: entries}), &r))
	return r
}

// Run evaluates month m's run, final or a preview at now.
func (h *Harness) Run(m int, final bool, now time.Time) billing.BillingRun {
	h.T.Helper()
	r, err := h.M.Billing().Run(meter.MonthName(m), final, now)
	require.NoError(h.T, err)
	return r
}

// Final evaluates month's final run.
func (h *Harness) Final(month string) billing.BillingRun {
	h.T.Helper()
	m, err := billing.ParseMonth(month)
	require.NoError(h.T, err)
	return h.Run(m, true, billing.CutOff(m))
}

// State is the state as one JSON object (Machine.WriteJSON).
func (h *Harness) State() []byte {
	h.T.Helper()
	return StateOf(h.T, h.M)
}

// StateOf is m's state as one JSON object.
func StateOf(t *testing.T, m *replica.Machine) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, m.WriteJSON(&b))
	return b.Bytes()
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

// Persist returns a snapshot of m as raft would store it.
func Persist(t *testing.T, m raft.FSM) []byte {
	t.Helper()
	snap, err := m.Snapshot()
	require.NoError(t, err)
	var s memSink
	require.NoError(t, snap.Persist(&s))
	return s.Bytes()
}

// Restored returns a new machine restored from snapshot b.
func Restored(t *testing.T, b []byte) (*replica.Machine, error) {
	t.Helper()
	m := replica.NewMachine(nil)
	return m, m.Restore(io.NopCloser(bytes.NewReader(b)))
}

// OpenReplica starts a single-voter member on dir (raft on addr), its
// proposer clock at now (nil: time.Now), closed when the test ends.
func OpenReplica(t *testing.T, dir, addr string, now func() time.Time) *replica.Replica {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := replica.Open(ctx, cluster.PeerConfig{Dir: dir, NodeID: "m1", RaftAddr: addr,
		HeartbeatTimeout: 50 * time.Millisecond, Now: now})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// IP returns a pointer to v.
func IP(v int) *int { return &v }

// Seed: reseller r1 (defaults 1920x1080 D60), sub-account s1 (D7), sub s2
// (no defaults), bare reseller r2; bridge b1 in s1, b2 in s2, b3 in r2.
func Seed(h *Harness) {
	h.Must(cluster.CmdCreateAccount, "r1", "", accounts.NewAccount{ID: "r1", Name: "Reseller", Defaults: accounts.Defaults{Width: 1920, Height: 1080, RetentionDays: 60}})
	h.Must(cluster.CmdCreateAccount, "s1", "", accounts.NewAccount{ID: "s1", Name: "Sub 1", Parent: "r1", Defaults: accounts.Defaults{RetentionDays: 7}})
	h.Must(cluster.CmdCreateAccount, "s2", "", accounts.NewAccount{ID: "s2", Name: "Sub 2", Parent: "r1"})
	h.Must(cluster.CmdCreateAccount, "r2", "", accounts.NewAccount{ID: "r2", Name: "Bare reseller"})
	h.Must(cluster.CmdCreateBridge, "b1", auth.NewToken(), accounts.CreateBridgeCmd{Account: "s1", Bridge: accounts.NewBridge{ID: "b1", Name: "B1"}})
	h.Must(cluster.CmdCreateBridge, "b2", auth.NewToken(), accounts.CreateBridgeCmd{Account: "s2", Bridge: accounts.NewBridge{ID: "b2", Name: "B2"}})
	h.Must(cluster.CmdCreateBridge, "b3", auth.NewToken(), accounts.CreateBridgeCmd{Account: "r2", Bridge: accounts.NewBridge{ID: "b3", Name: "B3"}})
}

// MS is a UTC instant to the millisecond.
func MS(y int, m time.Month, d, hh, mm, ss, milli int) time.Time {
	return time.Date(y, m, d, hh, mm, ss, milli*1e6, time.UTC)
}

// Items returns a run's line items by stream id.
func Items(run billing.BillingRun) map[string]billing.LineItem {
	out := map[string]billing.LineItem{}
	for _, r := range run.Resellers {
		for _, a := range r.Accounts {
			for _, it := range a.Items {
				out[it.Stream] = it
			}
		}
	}
	return out
}

// Cam is a new camera id named id with streams.
func Cam(id string, streams ...accounts.NewStream) accounts.NewCamera {
	return accounts.NewCamera{ID: id, Name: id, Streams: streams}
}

// Month parses YYYY-MM.
func Month(t *testing.T, s string) int {
	t.Helper()
	m, err := billing.ParseMonth(s)
	require.NoError(t, err)
	return m
}

// Call makes an HTTP request to base+path with a bearer token (none when
// empty) and header pairs, and returns the status and the JSON answer.
func Call(t *testing.T, base, method, path, token, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	var out map[string]any
	if len(b) > 0 {
		require.NoError(t, json.Unmarshal(b, &out), string(b))
	}
	return res.StatusCode, out
}
