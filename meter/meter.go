package meter

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// Meter reads usage locally and reports it through raft. Its methods are
// safe for concurrent use.
type Meter struct {
	st  *State
	p   *cluster.Peer
	log *slog.Logger
}

// New returns the meter over st (from Register), writing through p.
func New(st *State, p *cluster.Peer, log *slog.Logger) *Meter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Meter{st: st, p: p, log: log}
}

// ReportUsage submits a usage batch. It is idempotent by b.ID: a retry of a
// batch whose first attempt committed returns the first result and changes
// nothing. Entries for unknown or deleted streams are refused and counted,
// the rest applied.
func (m *Meter) ReportUsage(ctx context.Context, b UsageBatch) (UsageResult, error) {
	if !storage.ValidID(b.ID) {
		return UsageResult{}, invalid("invalid_batch", "usage batch id %q: want [a-zA-Z0-9_-]{1,64}", b.ID)
	}
	if len(b.Entries) == 0 || len(b.Entries) > maxUsageBatchEntries {
		return UsageResult{}, invalid("invalid_batch", "a usage batch has 1 to %d entries", maxUsageBatchEntries)
	}
	if b.To.IsZero() {
		b.To = m.p.Now()
	}
	b.From, b.To = b.From.UTC(), b.To.UTC()
	var r UsageResult
	return r, m.p.ProposeAt(ctx, b.To, cluster.CmdUsageBatch, usageRequestIDPrefix+b.ID, "", b, &r)
}

// ObserveResolution records the resolution seen in a stream's media (a
// no-op when unchanged). Ingest nodes normally send it inside usage
// batches; this is the single-command path.
func (m *Meter) ObserveResolution(ctx context.Context, stream string, width, height int) error {
	e := UsageEntry{Stream: stream, Width: width, Height: height}
	if !e.valid() || width == 0 {
		return invalid("invalid_resolution", "observed resolution %dx%d of %q", width, height, stream)
	}
	var r UsageResult
	return m.p.ProposeAt(ctx, m.p.Now(), cluster.CmdObserveResolution, "", "", e, &r)
}

// SealUsage makes sure the meter clock has passed t, proposing a tick
// stamped now if needed, and waits until this replica has applied it.
func (m *Meter) SealUsage(ctx context.Context, t time.Time) error {
	if !m.Clock().Before(t) {
		return nil
	}
	var out struct{}
	if err := m.p.ProposeAt(ctx, m.p.Now(), cluster.CmdUsageTick, "", "", struct{}{}, &out); err != nil {
		return err
	}
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	for m.Clock().Before(t) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("meter: waiting for the usage seal: %w", ctx.Err())
		case <-tk.C:
		}
	}
	return nil
}

// Clock is the replicated clock: the latest proposer time applied.
func (m *Meter) Clock() time.Time { return m.st.m.Clock() }

// StreamUsage is a stream's usage as the meter knows it.
type StreamUsage struct {
	StorageBytes   int64      `json:"storage_bytes"`
	StoredObjects  int64      `json:"stored_objects"`
	SegmentCount   int64      `json:"segment_count"` // segments ingested
	IngestedBytes  int64      `json:"ingested_bytes"`
	UpdatedAt      *time.Time `json:"usage_updated_at,omitempty"`
	ObservedWidth  int        `json:"observed_width,omitempty"`
	ObservedHeight int        `json:"observed_height,omitempty"`
	ObservedTier   string     `json:"observed_tier,omitempty"`
	// ObservedAboveConfigured: the media's tier is higher than the
	// configured one, which billing keeps using.
	ObservedAboveConfigured bool                 `json:"observed_above_configured"`
	Observed                []ObservedResolution `json:"observed_history,omitempty"`
}

// StreamUsage returns a stream's usage (zero if none was reported);
// ErrNotFound for an id never registered.
func (m *Meter) StreamUsage(ctx context.Context, id string) (StreamUsage, error) {
	m.st.m.RLock()
	defer m.st.m.RUnlock()
	s := m.st.accounts.StreamState(id)
	if s == nil {
		return StreamUsage{}, fmt.Errorf("meter: stream %s: %w", id, ErrNotFound)
	}
	u := m.st.usageOf(s)
	if u == nil {
		return StreamUsage{}, nil
	}
	out := StreamUsage{StorageBytes: u.StoredBytes, StoredObjects: u.StoredObjects, SegmentCount: u.Segments,
		IngestedBytes: u.IngestedBytes, Observed: slices.Clone(u.Observed)}
	if !u.LastAt.IsZero() {
		t := u.LastAt
		out.UpdatedAt = &t
	}
	if n := len(u.Observed); n > 0 {
		o := u.Observed[n-1]
		out.ObservedWidth, out.ObservedHeight, out.ObservedTier = o.Width, o.Height, accounts.Tier(o.Width, o.Height)
		out.ObservedAboveConfigured = accounts.TierAbove(o.Width, o.Height, s.Width, s.Height)
	}
	return out, nil
}

// Status is the meter's view of its registry and usage.
type Status struct {
	NodeID       string    `json:"node_id"`
	State        string    `json:"state"`
	Leader       string    `json:"leader"`
	AppliedIndex uint64    `json:"applied_index"`
	Clock        time.Time `json:"clock"`
	Accounts     int       `json:"accounts"`
	Streams      int       `json:"streams"`
	Deleted      int       `json:"deleted_streams"`
	StoredBytes  int64     `json:"stored_bytes"`
	Usage        Stats     `json:"usage"`
}

// Status returns counts and usage counters from the local replica.
func (m *Meter) Status(ctx context.Context) Status {
	n := m.p.Node()
	s := Status{NodeID: n.ID(), State: n.State().String(), AppliedIndex: n.AppliedIndex(), Clock: m.Clock()}
	s.Leader, _ = n.Leader()
	m.st.m.RLock()
	defer m.st.m.RUnlock()
	s.Accounts, s.Streams, s.Deleted = m.st.accounts.Len()
	s.Usage = m.st.UsageStats
	m.st.accounts.LiveStreams(func(r *accounts.Stream) {
		if u := m.st.usageOf(r); u != nil {
			s.StoredBytes += u.StoredBytes
		}
	})
	return s
}

// Patterns are the http.ServeMux patterns Handler serves.
func Patterns() []string {
	return []string{"GET /v1/meter/status", "GET /v1/meter/streams/{id}"}
}

// Handler serves the meter status and a stream's record with its usage
// (reg answers the record; its SKU carries skuPrefix, the configured
// prefix). Mount it behind auth.Middleware: it serves the operator and
// billing tokens only.
func (m *Meter) Handler(reg *accounts.Registry, skuPrefix string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/meter/status", OperatorOrBilling(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, m.Status(r.Context()))
	}))
	mux.HandleFunc("GET /v1/meter/streams/{id}", OperatorOrBilling(cluster.WithID(func(w http.ResponseWriter, r *http.Request, id string) {
		rec, err := reg.StreamRecord(r.Context(), id)
		if err != nil {
			cluster.WriteError(w, r, m.log, err)
			return
		}
		rec.SKU = skuPrefix + rec.SKU
		u, err := m.StreamUsage(r.Context(), id)
		if err != nil {
			cluster.WriteError(w, r, m.log, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, struct {
			accounts.StreamRecord
			StreamUsage
			Settings accounts.StreamSettings `json:"settings"`
		}{rec, u, rec.Settings()})
	})))
	return mux
}

// OperatorOrBilling lets only the operator and the billing system's
// tokens through to h: meter and billing endpoints are theirs alone.
func OperatorOrBilling(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if k := auth.FromContext(r.Context()).Kind; k != auth.Operator && k != auth.Billing {
			httpx.WriteError(w, http.StatusForbidden, "forbidden", "the operator or a billing token is required")
			return
		}
		h(w, r)
	}
}
