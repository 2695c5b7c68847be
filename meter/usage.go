package meter

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"math/bits"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vigilcloud/vigil/storage"
)

// Usage commands.
const (
	cmdUsageBatch        = "usage_batch"
	cmdObserveResolution = "observe_resolution"
	cmdUsageTick         = "usage_tick"
	maxUsageBatchEntries = 100_000
	usageRequestIDPrefix = "usage/"
)

// UsageEntry is one stream's usage deltas in a batch. Stored bytes and
// objects go up on ingest and down when retention or a purge frees them;
// ingested bytes and segments only go up. Width and Height, when set,
// report a changed observed resolution (from the media).
type UsageEntry struct {
	Stream        string `json:"s"`
	StoredBytes   int64  `json:"b,omitempty"`
	StoredObjects int64  `json:"o,omitempty"`
	IngestedBytes int64  `json:"i,omitempty"`
	Segments      int64  `json:"n,omitempty"`
	Width         int    `json:"w,omitempty"`
	Height        int    `json:"h,omitempty"`
}

// UsageBatch is what an ingest node submits about once a second. ID makes
// it idempotent: a retried batch whose first attempt committed is applied
// once. From and To are the aggregation window, stamped by the proposer; the
// meter integrates stored bytes up to To.
type UsageBatch struct {
	ID      string       `json:"id"`
	From    time.Time    `json:"from"`
	To      time.Time    `json:"to"`
	Entries []UsageEntry `json:"entries"`
}

// RejectedEntry is a batch entry the meter refused (and counted).
type RejectedEntry struct {
	Stream string `json:"stream"`
	Reason string `json:"reason"` // unknown_stream | deleted_stream | invalid_entry
}

// UsageResult is the outcome of a batch: the entries applied and the ones
// refused. A batch is never refused as a whole for a bad entry.
type UsageResult struct {
	Applied  int             `json:"applied"`
	Rejected []RejectedEntry `json:"rejected,omitempty"`
	// Duplicate: a journal batch applied before (a replay); nothing changed.
	Duplicate bool `json:"duplicate,omitempty"`
}

// usageStats are replicated counters, shown by the status endpoint and
// exported as metrics.
type usageStats struct {
	Batches         int64 `json:"batches"`
	Entries         int64 `json:"entries"`
	Rejected        int64 `json:"rejected"`
	RejectedUnknown int64 `json:"rejected_unknown"`
	RejectedDeleted int64 `json:"rejected_deleted"`
	RejectedInvalid int64 `json:"rejected_invalid"`
	Clamped         int64 `json:"clamped"` // frees that would have gone below zero
}

// u128 holds byte-milliseconds exactly: 1 PB stored for a year is ~3e28,
// beyond int64.
type u128 struct {
	Hi uint64 `json:"hi,omitempty"`
	Lo uint64 `json:"lo"`
}

func (a u128) add(b u128) u128 {
	lo, c := bits.Add64(a.Lo, b.Lo, 0)
	hi, _ := bits.Add64(a.Hi, b.Hi, c)
	return u128{hi, lo}
}

// mul returns bytes × ms; negative operands count as zero.
func mul(bytes, ms int64) u128 {
	if bytes <= 0 || ms <= 0 {
		return u128{}
	}
	hi, lo := bits.Mul64(uint64(bytes), uint64(ms))
	return u128{hi, lo}
}

func (a u128) big() *big.Int {
	x := new(big.Int).SetUint64(a.Hi)
	x.Lsh(x, 64)
	return x.Or(x, new(big.Int).SetUint64(a.Lo))
}

// ByteHours renders byte-milliseconds as byte-hours with three decimals,
// truncated, exactly (no floating point).
func (a u128) ByteHours() json.Number {
	q, r := new(big.Int).QuoRem(a.big(), big.NewInt(3_600_000), new(big.Int))
	r.Mul(r, big.NewInt(1000)).Quo(r, big.NewInt(3_600_000))
	return json.Number(fmt.Sprintf("%s.%03d", q.String(), r.Int64()))
}

// monthUsage is a stream's usage within one calendar month (UTC).
type monthUsage struct {
	Month         int   `json:"m"` // monthIndex
	IngestedBytes int64 `json:"ingested_bytes"`
	Segments      int64 `json:"segments"`
	ByteMS        u128  `json:"byte_ms"`
	// EndStoredBytes is the stored bytes at the month's end; valid once
	// Closed (an update stamped in a later month has been applied).
	EndStoredBytes int64 `json:"end_stored_bytes"`
	Closed         bool  `json:"closed"`
}

// ObservedResolution is a resolution observed in the media, from At on.
type ObservedResolution struct {
	At     time.Time `json:"at"`
	Width  int       `json:"width"`
	Height int       `json:"height"`
}

// usageRec is one stream's usage: running totals, per-month buckets and
// the observed resolution history. Stored bytes are integrated over time
// between proposer-stamped updates (the meter clock is monotonic), and the
// integral is split exactly at month boundaries.
type usageRec struct {
	Registered    time.Time            `json:"registered"` // the stream incarnation it belongs to
	StoredBytes   int64                `json:"stored_bytes"`
	StoredObjects int64                `json:"stored_objects"`
	IngestedBytes int64                `json:"ingested_bytes"`
	Segments      int64                `json:"segments"`
	LastAt        time.Time            `json:"last_at"`
	Months        []monthUsage         `json:"months,omitempty"`
	Observed      []ObservedResolution `json:"observed,omitempty"`
}

// monthIndex numbers months: year×12 + month−1.
func monthIndex(t time.Time) int {
	t = t.UTC()
	return t.Year()*12 + int(t.Month()) - 1
}

// monthStart is the first instant of month m (UTC).
func monthStart(m int) time.Time {
	return time.Date(m/12, time.Month(m%12+1), 1, 0, 0, 0, 0, time.UTC)
}

func monthName(m int) string { return monthStart(m).Format("2006-01") }

func (u *usageRec) bucket(m int) *monthUsage {
	if n := len(u.Months); n > 0 && u.Months[n-1].Month == m {
		return &u.Months[n-1]
	}
	u.Months = append(u.Months, monthUsage{Month: m})
	return &u.Months[len(u.Months)-1]
}

// advanceIn integrates the stored bytes from LastAt to t, in month m
// starting at start (a batch computes both once for all its entries),
// closing every month boundary crossed. t never precedes LastAt (the clock
// is clamped).
func (u *usageRec) advanceIn(t time.Time, m int, start time.Time) {
	if u.LastAt.IsZero() {
		u.LastAt = t
		u.bucket(m)
		return
	}
	from := u.LastAt
	if from.Before(start) {
		for k := monthIndex(from); k < m; k++ {
			end := monthStart(k + 1)
			b := u.bucket(k)
			b.ByteMS = b.ByteMS.add(mul(u.StoredBytes, end.Sub(from).Milliseconds()))
			b.EndStoredBytes, b.Closed = u.StoredBytes, true
			from = end
		}
	}
	b := u.bucket(m)
	b.ByteMS = b.ByteMS.add(mul(u.StoredBytes, t.Sub(from).Milliseconds()))
	u.LastAt = t
}

// usageAt evaluates u for month m up to cutoff c (the month's end for a
// final run, now for a preview): stored bytes at c, bytes ingested in the
// month, stored byte-milliseconds in [monthStart(m), c).
func usageAt(u *usageRec, m int, c time.Time) (stored, ingested int64, byteMS u128) {
	if u == nil || u.LastAt.IsZero() {
		return 0, 0, u128{}
	}
	for i := len(u.Months) - 1; i >= 0; i-- {
		b := u.Months[i]
		if b.Month > m {
			continue
		}
		if b.Month < m { // no update in m: the stored bytes held all month
			from := monthStart(m)
			return u.StoredBytes, 0, mul(u.StoredBytes, c.Sub(from).Milliseconds())
		}
		if b.Closed {
			return b.EndStoredBytes, b.IngestedBytes, b.ByteMS
		}
		return u.StoredBytes, b.IngestedBytes, b.ByteMS.add(mul(u.StoredBytes, c.Sub(u.LastAt).Milliseconds()))
	}
	return 0, 0, u128{} // first update after m
}

// tick clamps a command's time to the meter clock, so that meter time never
// runs backwards whichever proposer stamped it; Apply advances the clock to
// the time of every command it applies (a refused one changes nothing).
// Once any command stamped at or after a month's end is applied, nothing can
// change that month any more: that is what makes a final billing run final.
func (st *state) tick(c *Command) {
	if c.Time.Before(st.Clock) {
		c.Time = st.Clock
	}
}

// applyUsage applies the usage commands; ok is false for other types.
func (st *state) applyUsage(c *Command, dec func(any) error) (res any, ok bool, err error) {
	switch c.Type {
	case cmdUsageBatch:
		var b UsageBatch
		if err := dec(&b); err != nil {
			return nil, true, err
		}
		// A journal's batch (usage_journal.go) that the meter applied
		// already: a replay after a crash, past the request table's reach.
		src, seq, journaled := journalBatchID(b.ID)
		if journaled && seq <= st.UsageJournals[src] {
			return UsageResult{Duplicate: true}, true, nil
		}
		r := st.usageBatch(c.Time, b)
		if journaled {
			if st.UsageJournals == nil {
				st.UsageJournals = map[string]uint64{}
			}
			st.UsageJournals[src] = seq
		}
		return r, true, nil
	case cmdObserveResolution:
		var e UsageEntry
		if err := dec(&e); err != nil {
			return nil, true, err
		}
		r := st.usageBatch(c.Time, UsageBatch{Entries: []UsageEntry{{Stream: e.Stream, Width: e.Width, Height: e.Height}}})
		if len(r.Rejected) > 0 {
			return nil, true, notFound("stream %s: %s", e.Stream, r.Rejected[0].Reason)
		}
		return r, true, nil
	case cmdUsageTick:
		return struct{}{}, true, nil
	}
	return nil, false, nil
}

func (e *UsageEntry) valid() bool { return storage.ValidID(e.Stream) && e.validCounts() }

// validCounts is valid without the stream id check.
func (e *UsageEntry) validCounts() bool {
	return e.IngestedBytes >= 0 && e.Segments >= 0 &&
		e.Width >= 0 && e.Height >= 0 && e.Width <= maxDimension && e.Height <= maxDimension &&
		(e.Width == 0) == (e.Height == 0)
}

// onlyFrees: an entry that only gives storage back, which a purge reports
// for a deleted stream.
func (e *UsageEntry) onlyFrees() bool {
	return e.StoredBytes <= 0 && e.StoredObjects <= 0 && e.IngestedBytes == 0 && e.Segments == 0 && e.Width == 0
}

// usageRecFor returns the usage record of s's current incarnation; the
// record of an earlier incarnation (a camera id re-created after its purge)
// is kept under id@registered-ms so that past billing runs do not change.
func (st *state) usageRecFor(s *streamRec) *usageRec {
	// The record of an incarnation stays the same object (only its key
	// changes), so the pointer need not be looked up again.
	if s.usage != nil {
		return s.usage
	}
	if st.Usage == nil {
		st.Usage = map[string]*usageRec{}
	}
	id := s.Stream.ID
	u := st.Usage[id]
	if u != nil && !u.Registered.Equal(s.Stream.RegisteredAt) {
		st.Usage[id+"@"+strconv.FormatInt(u.Registered.UnixMilli(), 10)] = u
		u = nil
	}
	if u == nil {
		u = &usageRec{Registered: s.Stream.RegisteredAt}
		st.Usage[id] = u
	}
	s.usage = u
	return u
}

// usageOf returns the usage record of a stream incarnation, nil if none.
func (st *state) usageOf(s *Stream) *usageRec {
	if u := st.Usage[s.ID]; u != nil && u.Registered.Equal(s.RegisteredAt) {
		return u
	}
	return st.Usage[s.ID+"@"+strconv.FormatInt(s.RegisteredAt.UnixMilli(), 10)]
}

func (st *state) usageBatch(at time.Time, b UsageBatch) UsageResult {
	var r UsageResult
	st.UsageStats.Batches++
	reject := func(e *UsageEntry, reason string, n *int64) {
		r.Rejected = append(r.Rejected, RejectedEntry{Stream: e.Stream, Reason: reason})
		st.UsageStats.Rejected++
		*n++
	}
	m := monthIndex(at)
	start := monthStart(m)
	for i := range b.Entries {
		e := &b.Entries[i]
		st.UsageStats.Entries++
		// Look the stream up first: a registered stream's id is valid, so
		// only an unknown one pays for the full check (same outcomes).
		s := st.Streams[e.Stream]
		if s == nil || !e.validCounts() {
			if !e.valid() {
				reject(e, "invalid_entry", &st.UsageStats.RejectedInvalid)
			} else {
				reject(e, "unknown_stream", &st.UsageStats.RejectedUnknown)
			}
			continue
		}
		if s.Stream.DeletedAt != nil && !e.onlyFrees() {
			reject(e, "deleted_stream", &st.UsageStats.RejectedDeleted)
			continue
		}
		u := st.usageRecFor(s)
		u.advanceIn(at, m, start)
		u.StoredBytes += e.StoredBytes
		u.StoredObjects += e.StoredObjects
		if u.StoredBytes < 0 || u.StoredObjects < 0 {
			u.StoredBytes, u.StoredObjects = max(u.StoredBytes, 0), max(u.StoredObjects, 0)
			st.UsageStats.Clamped++
		}
		u.IngestedBytes += e.IngestedBytes
		u.Segments += e.Segments
		bk := u.bucket(m)
		bk.IngestedBytes += e.IngestedBytes
		bk.Segments += e.Segments
		if e.Width > 0 {
			if n := len(u.Observed); n == 0 || u.Observed[n-1].Width != e.Width || u.Observed[n-1].Height != e.Height {
				u.Observed = append(u.Observed, ObservedResolution{At: at, Width: e.Width, Height: e.Height})
			}
		}
		r.Applied++
	}
	return r
}

// ApplyBatch implements raft.BatchingFSM: raft hands over every committed
// entry of a round at once, and one lock round trip serves them all.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]any, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue // configuration entries: nothing for the meter
		}
		out[i] = f.applyLocked(l)
	}
	return out
}

var _ raft.BatchingFSM = (*fsm)(nil)

// --- Meter API ---

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
		b.To = m.now()
	}
	b.From, b.To = b.From.UTC(), b.To.UTC()
	var r UsageResult
	return r, m.proposeAt(ctx, b.To, cmdUsageBatch, usageRequestIDPrefix+b.ID, b, &r)
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
	return m.proposeAt(ctx, m.now(), cmdObserveResolution, "", e, &r)
}

// sealUsage makes sure the meter clock has passed t, proposing a tick
// stamped now if needed, and waits until this replica has applied it.
func (m *Meter) sealUsage(ctx context.Context, t time.Time) error {
	if !m.clock().Before(t) {
		return nil
	}
	var out struct{}
	if err := m.proposeAt(ctx, m.now(), cmdUsageTick, "", struct{}{}, &out); err != nil {
		return err
	}
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	for m.clock().Before(t) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("meter: waiting for the usage seal: %w", ctx.Err())
		case <-tk.C:
		}
	}
	return nil
}

func (m *Meter) clock() time.Time {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	return m.fsm.st.Clock
}

// proposeAt is propose with an explicit proposer time (a usage batch is
// stamped with its window end, so that a retry is the same command).
func (m *Meter) proposeAt(ctx context.Context, at time.Time, typ, requestID string, payload, out any) error {
	if requestID == "" {
		requestID = randomID()
	}
	cmd, err := encodeCommand(typ, requestID, at, "", payload)
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	r, err := m.applyCmd(ctx, cmd) // forwarded to the leader from a follower
	if err != nil {
		return fmt.Errorf("meter: %s: %w", typ, err)
	}
	if r.Err != nil {
		return r.Err.err()
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return fmt.Errorf("meter: %s: decode result: %w", typ, err)
	}
	return nil
}

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
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	s := m.fsm.st.Streams[id]
	if s == nil {
		return StreamUsage{}, fmt.Errorf("meter: stream %s: %w", id, ErrNotFound)
	}
	u := m.fsm.st.usageOf(&s.Stream)
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
		out.ObservedWidth, out.ObservedHeight, out.ObservedTier = o.Width, o.Height, Tier(o.Width, o.Height)
		out.ObservedAboveConfigured = TierAbove(o.Width, o.Height, s.Stream.Width, s.Stream.Height)
	}
	return out, nil
}
