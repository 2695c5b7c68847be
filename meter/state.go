// Package meter meters usage: ingest nodes aggregate what they store and
// free per stream (Aggregator, with a local Journal so that a crash loses
// and double-counts nothing) and submit it in batches; the meter's section
// of the replicated state integrates stored bytes over time, per stream
// incarnation and calendar month, exactly, for billing.
package meter

import (
	"encoding/json"
	"fmt"
	"math/big"
	"math/bits"
	"strconv"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/meter/journal"
	"github.com/vigilcloud/vigil/storage"
)

// State is the meter's section of the replicated state.
type State struct {
	Usage      map[string]*usageRec `json:"usage"` // by stream id
	UsageStats Stats                `json:"usage_stats"`
	// UsageJournals is the last batch seq applied per ingest journal: a
	// journal's batches apply once, in order, however late a replay comes.
	// One entry per ingest data directory, never per segment.
	UsageJournals map[string]uint64 `json:"usage_journals,omitempty"`

	m        *cluster.Machine
	accounts *accounts.State
}

// Register adds the meter's section and commands to m; usage is counted
// for the streams of accts.
func Register(m *cluster.Machine, accts *accounts.State) *State {
	st := &State{m: m, accounts: accts}
	m.Register(cluster.Section{Name: "meter", State: st, Reset: func() {
		st.Usage, st.UsageStats, st.UsageJournals = nil, Stats{}, nil
	}})
	m.Handle(cluster.CmdUsageBatch, st.applyUsageBatch)
	m.Handle(cluster.CmdObserveResolution, st.applyObserve)
	m.Handle(cluster.CmdUsageTick, func(*cluster.Command) (any, error) { return struct{}{}, nil })
	return st
}

var (
	invalid  = cluster.Invalid
	notFound = cluster.NotFound
)

// ErrNotFound is returned for a stream never registered.
var ErrNotFound = cluster.ErrNotFound

// Usage commands.
const (
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
type Stats struct {
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

// MonthIndex numbers months: year×12 + month−1.
func MonthIndex(t time.Time) int {
	t = t.UTC()
	return t.Year()*12 + int(t.Month()) - 1
}

// MonthStart is the first instant of month m (UTC).
func MonthStart(m int) time.Time {
	return time.Date(m/12, time.Month(m%12+1), 1, 0, 0, 0, 0, time.UTC)
}

// MonthName is YYYY-MM of month m.
func MonthName(m int) string { return MonthStart(m).Format("2006-01") }

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
		for k := MonthIndex(from); k < m; k++ {
			end := MonthStart(k + 1)
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

// MonthUsage is a stream's usage in a month, up to a cut-off.
type MonthUsage struct {
	StoredBytes     int64       // at the cut-off
	IngestedBytes   int64       // in the month
	StoredByteHours json.Number // stored bytes integrated over the month up to the cut-off
}

// MonthUsage returns stream incarnation s's usage in month m up to cut-off
// c (the caller holds the machine's lock).
func (st *State) MonthUsage(s *accounts.Stream, m int, c time.Time) MonthUsage {
	stored, ingested, bms := usageAt(st.usageOf(s), m, c)
	return MonthUsage{StoredBytes: stored, IngestedBytes: ingested, StoredByteHours: bms.ByteHours()}
}

// usageAt evaluates u for month m up to cutoff c (the month's end for a
// final run, now for a preview): stored bytes at c, bytes ingested in the
// month, stored byte-milliseconds in [MonthStart(m), c).
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
			from := MonthStart(m)
			return u.StoredBytes, 0, mul(u.StoredBytes, c.Sub(from).Milliseconds())
		}
		if b.Closed {
			return b.EndStoredBytes, b.IngestedBytes, b.ByteMS
		}
		return u.StoredBytes, b.IngestedBytes, b.ByteMS.add(mul(u.StoredBytes, c.Sub(u.LastAt).Milliseconds()))
	}
	return 0, 0, u128{} // first update after m
}

// applyUsageBatch applies a usage batch, in either form.
func (st *State) applyUsageBatch(c *cluster.Command) (any, error) {
	var b UsageBatch
	if err := DecodeBatch(c, &b); err != nil {
		return nil, err
	}
	// A journal's batch (meter/journal) that the meter applied
	// already: a replay after a crash, past the request table's reach.
	src, seq, journaled := journal.ParseBatchID(b.ID)
	if journaled && seq <= st.UsageJournals[src] {
		return UsageResult{Duplicate: true}, nil
	}
	r := st.usageBatch(c.Time, b)
	if journaled {
		if st.UsageJournals == nil {
			st.UsageJournals = map[string]uint64{}
		}
		st.UsageJournals[src] = seq
	}
	return r, nil
}

// applyObserve applies observe_resolution.
func (st *State) applyObserve(c *cluster.Command) (any, error) {
	var e UsageEntry
	if err := c.Decode(&e); err != nil {
		return nil, err
	}
	r := st.usageBatch(c.Time, UsageBatch{Entries: []UsageEntry{{Stream: e.Stream, Width: e.Width, Height: e.Height}}})
	if len(r.Rejected) > 0 {
		return nil, notFound("stream %s: %s", e.Stream, r.Rejected[0].Reason)
	}
	return r, nil
}

func (e *UsageEntry) valid() bool { return storage.ValidID(e.Stream) && e.validCounts() }

// validCounts is valid without the stream id check.
func (e *UsageEntry) validCounts() bool {
	return e.IngestedBytes >= 0 && e.Segments >= 0 &&
		e.Width >= 0 && e.Height >= 0 && e.Width <= accounts.MaxDimension && e.Height <= accounts.MaxDimension &&
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
func (st *State) usageRecFor(s *accounts.Stream, ext *any) *usageRec {
	// The record of an incarnation stays the same object (only its key
	// changes when the id is registered again), so the stream keeps a
	// pointer to it: one map lookup per batch entry.
	if u, ok := (*ext).(*usageRec); ok {
		return u
	}
	if st.Usage == nil {
		st.Usage = map[string]*usageRec{}
	}
	u := st.Usage[s.ID]
	if u != nil && !u.Registered.Equal(s.RegisteredAt) {
		st.Usage[s.ID+"@"+strconv.FormatInt(u.Registered.UnixMilli(), 10)] = u
		u = nil
	}
	if u == nil {
		u = &usageRec{Registered: s.RegisteredAt}
		st.Usage[s.ID] = u
	}
	*ext = u
	return u
}

// usageOf returns the usage record of a stream incarnation, nil if none.
func (st *State) usageOf(s *accounts.Stream) *usageRec {
	if u := st.Usage[s.ID]; u != nil && u.Registered.Equal(s.RegisteredAt) {
		return u
	}
	return st.Usage[s.ID+"@"+strconv.FormatInt(s.RegisteredAt.UnixMilli(), 10)]
}

func (st *State) usageBatch(at time.Time, b UsageBatch) UsageResult {
	var r UsageResult
	st.UsageStats.Batches++
	reject := func(e *UsageEntry, reason string, n *int64) {
		r.Rejected = append(r.Rejected, RejectedEntry{Stream: e.Stream, Reason: reason})
		st.UsageStats.Rejected++
		*n++
	}
	m := MonthIndex(at)
	start := MonthStart(m)
	for i := range b.Entries {
		e := &b.Entries[i]
		st.UsageStats.Entries++
		// Look the stream up first: a registered stream's id is valid, so
		// only an unknown one pays for the full check (same outcomes).
		s, ext := st.accounts.StreamExt(e.Stream)
		if s == nil || !e.validCounts() {
			if !e.valid() {
				reject(e, "invalid_entry", &st.UsageStats.RejectedInvalid)
			} else {
				reject(e, "unknown_stream", &st.UsageStats.RejectedUnknown)
			}
			continue
		}
		if s.DeletedAt != nil && !e.onlyFrees() {
			reject(e, "deleted_stream", &st.UsageStats.RejectedDeleted)
			continue
		}
		u := st.usageRecFor(s, ext)
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

// ByteHours renders bytes stored for ms milliseconds as byte-hours with
// three decimals, exactly (the figure billing shows).
func ByteHours(bytes, ms int64) json.Number { return mul(bytes, ms).ByteHours() }
