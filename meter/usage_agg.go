package meter

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/meter/journal"
)

// UsageReporter takes usage batches: the meter (*Meter), or a client of a
// remote meter cluster on an ingest-only node.
type UsageReporter interface {
	ReportUsage(ctx context.Context, b UsageBatch) (UsageResult, error)
}

// Defaults of AggregatorConfig.
const (
	DefaultInterval       = time.Second
	DefaultResolveTimeout = 5 * time.Second
	DefaultResolveMax     = 1000 // the --usage-resolve-max default
)

// AggregatorConfig configures an Aggregator.
type AggregatorConfig struct {
	NodeID     string
	Interval   time.Duration // how often a batch is submitted; default DefaultInterval
	Logger     *slog.Logger
	Registerer prometheus.Registerer // optional
	Now        func() time.Time
	// Journal, when set, keeps the usage not yet committed by the meter on
	// local disk, so that a killed process neither loses nor double-counts
	// it: uploads go through Begin and Created/NotCreated/Unsure, and what
	// the previous process left is replayed (docs/billing.md).
	Journal *journal.Journal
	// Resolve (needed with Journal) returns the put id in the metadata of
	// the object at key (PutIDMetadata), or an error matching fs.ErrNotExist
	// when there is none. It decides intents whose Put ended unseen.
	Resolve func(ctx context.Context, key string) (putID string, err error)
	// ResolveTimeout bounds one Resolve call (default DefaultResolveTimeout)
	// and ResolveMax the calls per interval (default DefaultResolveMax): a
	// slow or failing storage
	// delays the decision, never the batches.
	ResolveTimeout time.Duration
	ResolveMax     int
}

// OpenJournal opens the usage journal in dir (journal.Open), so that what
// wires an Aggregator needs the meter package only.
func OpenJournal(dir string) (*journal.Journal, error) { return journal.Open(dir) }

// PutIDMetadata is the object metadata key that carries the put id Begin
// returned: it tells which Put created an object.
const PutIDMetadata = "put-id"

// Aggregator collects per-stream usage deltas on an ingest node and submits
// them to the meter as one batch per interval. A batch that fails (no
// leader, network) is retried with the same id until it commits, so it is
// applied exactly once; deltas that arrive meanwhile go into the next batch.
// Its methods are safe for concurrent use.
type Aggregator struct {
	r      UsageReporter
	cfg    AggregatorConfig
	prefix string

	mu       sync.Mutex
	pending  map[string]*UsageEntry
	ords     []uint64          // journal records that pending counts
	observed map[string][2]int // last resolution reported per stream
	seq      uint64
	last     time.Time
	begun    map[string]journal.Intent // by put id: Puts under way
	unsure   []journal.Intent          // Puts whose outcome storage decides

	flushMu sync.Mutex      // one Flush at a time: batches go out in seq order
	queue   []*pendingBatch // batches not yet committed, oldest (the previous process's) first

	batches, rejected, failures, duplicates prometheus.Counter
}

// NewAggregator returns an aggregator submitting to r; call Run.
func NewAggregator(r UsageReporter, cfg AggregatorConfig) *Aggregator {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ResolveTimeout <= 0 {
		cfg.ResolveTimeout = DefaultResolveTimeout
	}
	if cfg.ResolveMax <= 0 {
		cfg.ResolveMax = DefaultResolveMax
	}
	a := &Aggregator{r: r, cfg: cfg, pending: map[string]*UsageEntry{}, observed: map[string][2]int{}, begun: map[string]journal.Intent{},
		// Batch ids must never repeat across restarts: a random prefix per run.
		prefix: "u-" + cluster.RandomID()[:16], last: cfg.Now().UTC(),
		batches:  prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_usage_batches_submitted_total", Help: "Usage batches committed by the meter."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_usage_entries_rejected_total", Help: "Usage entries the meter refused (unknown or deleted stream, invalid)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_usage_batch_failures_total", Help: "Usage batch submissions that failed and will be retried."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_usage_batch_duplicates_total",
			Help: "Usage batches of this process the meter had applied already (batch seq reused): their usage is not counted."}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{a.batches, a.rejected, a.failures, a.duplicates} {
			if err := cfg.Registerer.Register(c); err != nil {
				cfg.Logger.Warn("usage: metric registration", "err", err)
			}
		}
	}
	if cfg.Journal != nil {
		a.replay(cfg.Journal.Recovery())
	}
	return a
}

// replay takes up what the previous process left in the journal: its
// batches go out first, its frees are counted again, and its Puts are
// decided against storage.
func (a *Aggregator) replay(rec journal.Recovery) {
	for _, jb := range rec.Batches {
		b := &UsageBatch{}
		if err := json.Unmarshal(jb.Data, b); err != nil {
			// Only a bug writes a line whose checksum holds and whose batch
			// does not decode; it stays in the journal for a person to see.
			a.cfg.Logger.Error("usage: journaled batch undecodable; not replayed", "seq", jb.Seq, "err", err)
			continue
		}
		a.queue = append(a.queue, &pendingBatch{b: b, seq: jb.Seq, recorded: true, sent: true})
	}
	for _, f := range rec.Frees {
		e := a.entry(f.Stream)
		e.StoredBytes -= f.Bytes
		e.StoredObjects -= f.Objects
		a.ords = append(a.ords, f.Ord)
	}
	a.unsure = rec.Intents
	if n := len(rec.Batches) + len(rec.Frees) + len(rec.Intents); n > 0 {
		a.cfg.Logger.Info("usage: replaying the journal", "batches", len(rec.Batches), "frees", len(rec.Frees), "puts_to_check", len(rec.Intents))
	}
}

// pendingBatch is a batch on its way to the meter.
type pendingBatch struct {
	b        *UsageBatch
	seq      uint64   // journal seq; 0 without a journal
	ords     []uint64 // journal records it counts
	recorded bool     // its journal record is durable
	sent     bool     // submitted before, or recovered: the meter may have applied it
}

// Begin records, durably, that a storage Put of size bytes to key is about
// to start, and returns the put id to store under PutIDMetadata. Without a
// journal it returns "". Every Begin ends in Created, NotCreated or Unsure.
func (a *Aggregator) Begin(ctx context.Context, stream, key string, size int64) (string, error) {
	if a.cfg.Journal == nil {
		return "", nil
	}
	in, err := a.cfg.Journal.Intent(stream, key, size)
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	a.begun[in.PutID] = in
	a.mu.Unlock()
	return in.PutID, nil
}

// Created counts a new object the Put putID created (width and height as
// observed, 0 if unknown). This, not a retry's 200, is where a segment is
// counted: once, by the upload that stored it.
func (a *Aggregator) Created(putID, stream string, size int64, width, height int) {
	a.mu.Lock()
	// The record and the count go into the same batch.
	if in, ok := a.begun[putID]; ok {
		delete(a.begun, putID)
		a.ords = append(a.ords, in.Ord)
	}
	a.storedLocked(stream, size)
	a.mu.Unlock()
	a.Observe(stream, width, height)
}

// NotCreated: the Put putID certainly created nothing.
func (a *Aggregator) NotCreated(putID string) {
	a.mu.Lock()
	in, ok := a.begun[putID]
	delete(a.begun, putID)
	a.mu.Unlock()
	if ok {
		a.cfg.Journal.NotCreated(in.Ord)
	}
}

// Unsure: the Put putID failed in a way that may have created the object;
// Run asks storage (Resolve) later.
func (a *Aggregator) Unsure(putID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if in, ok := a.begun[putID]; ok {
		delete(a.begun, putID)
		a.unsure = append(a.unsure, in)
	}
}

// resolve decides up to ResolveMax unsure Puts by the put id on the stored
// object; it stops at the first storage error (an outage fails every call).
func (a *Aggregator) resolve(ctx context.Context) {
	a.mu.Lock()
	todo := a.unsure
	a.unsure = nil
	a.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	var keep []journal.Intent
loop:
	for i, in := range todo {
		if a.cfg.Resolve == nil || ctx.Err() != nil || i >= a.cfg.ResolveMax {
			keep = todo[i:]
			break
		}
		rctx, cancel := context.WithTimeout(ctx, a.cfg.ResolveTimeout)
		pid, err := a.cfg.Resolve(rctx, in.Key)
		cancel()
		switch {
		case err == nil && pid == in.PutID:
			a.mu.Lock()
			a.ords = append(a.ords, in.Ord)
			a.storedLocked(in.Stream, in.Size)
			a.mu.Unlock()
		case err == nil || errors.Is(err, fs.ErrNotExist):
			a.cfg.Journal.NotCreated(in.Ord)
		default:
			a.cfg.Logger.Warn("usage: cannot check a stored object yet; retrying", "key", in.Key, "unsure", len(todo)-i, "err", err)
			keep = todo[i:]
			break loop
		}
	}
	a.mu.Lock()
	a.unsure = append(a.unsure, keep...)
	a.mu.Unlock()
}

func (a *Aggregator) entry(stream string) *UsageEntry {
	e := a.pending[stream]
	if e == nil {
		e = &UsageEntry{Stream: stream}
		a.pending[stream] = e
	}
	return e
}

// Stored records a newly stored segment of size bytes.
func (a *Aggregator) Stored(stream string, bytes int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.storedLocked(stream, bytes)
}

func (a *Aggregator) storedLocked(stream string, bytes int64) {
	e := a.entry(stream)
	e.StoredBytes += bytes
	e.StoredObjects++
	e.IngestedBytes += bytes
	e.Segments++
}

// Observe records the resolution seen in a stream's media; only a change
// reaches the meter.
func (a *Aggregator) Observe(stream string, width, height int) {
	if width <= 0 || height <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.observed[stream] == [2]int{width, height} {
		return
	}
	a.observed[stream] = [2]int{width, height}
	e := a.entry(stream)
	e.Width, e.Height = width, height
}

// Freed records objects deleted by retention or a purge (bytes and objects
// positive: they are subtracted).
func (a *Aggregator) Freed(stream string, bytes, objects int64) {
	a.Adjust(stream, -bytes, -objects)
}

// Adjust records a signed change of a stream's stored bytes and objects
// that is not an upload: a free (negative) or a reconcile correction
// (either sign). Ingested bytes and segments are left alone. It is
// journaled like a free, so a killed process neither loses nor repeats it.
func (a *Aggregator) Adjust(stream string, bytes, objects int64) {
	var ord uint64
	if a.cfg.Journal != nil {
		var err error
		// The journal records frees as positive amounts.
		if ord, err = a.cfg.Journal.Free(stream, -bytes, -objects); err != nil {
			a.cfg.Logger.Warn("usage: free not journaled", "stream", stream, "err", err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ord != 0 {
		a.ords = append(a.ords, ord)
	}
	e := a.entry(stream)
	e.StoredBytes += bytes
	e.StoredObjects += objects
}

// Run submits a batch every interval until ctx ends. It does not flush on
// exit: call Close for that.
func (a *Aggregator) Run(ctx context.Context) {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.resolve(ctx)
			if err := a.Flush(ctx); err != nil && ctx.Err() == nil {
				a.cfg.Logger.Warn("usage: batch not committed yet; retrying", "err", err)
			}
		}
	}
}

// Flush submits the queued batches in order, the previous process's first,
// then the pending deltas as a new batch; it stops at the first failure,
// which the next Flush retries with the same id.
func (a *Aggregator) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	// A second round sends what arrived while the first one was submitting.
	for range 2 {
		if err := a.enqueue(); err != nil {
			return err
		}
		if len(a.queue) == 0 {
			return nil
		}
		for len(a.queue) > 0 {
			if err := a.submit(ctx, a.queue[0]); err != nil {
				a.failures.Inc()
				return err
			}
			a.queue[0] = nil
			a.queue = a.queue[1:]
		}
	}
	return nil
}

// enqueue records the queued batches not yet in the journal, then turns
// the pending deltas into a new batch. With a journal it does so even while
// earlier batches wait for the meter: the records of the uploads it counts
// then settle into its one batch record, so an outage does not keep one
// record per upload. Without a journal the deltas wait in pending instead.
func (a *Aggregator) enqueue() error {
	j := a.cfg.Journal
	for _, p := range a.queue {
		if j != nil && !p.recorded {
			if err := a.record(p); err != nil {
				return err
			}
		}
	}
	if j == nil && len(a.queue) > 0 {
		return nil
	}
	p := a.take()
	if p == nil {
		return nil
	}
	a.queue = append(a.queue, p)
	if j != nil {
		return a.record(p)
	}
	return nil
}

// record writes p to the journal, durably before the meter can commit it:
// a replay after a crash is then this same batch, which the meter applies
// once.
func (a *Aggregator) record(p *pendingBatch) error {
	data, err := json.Marshal(p.b)
	if err == nil {
		err = a.cfg.Journal.Batch(p.seq, data, p.ords)
	}
	if err != nil {
		a.failures.Inc()
		return err
	}
	p.recorded = true
	a.compactJournal()
	return nil
}

// compactJournal rewrites the journal if it has grown: after a commit, and
// after a batch record, since during a meter outage nothing commits while
// uploads go on.
func (a *Aggregator) compactJournal() {
	if err := a.cfg.Journal.CompactIfBig(); err != nil {
		a.cfg.Logger.Warn("usage: journal compaction", "err", err)
	}
}

// submit reports one batch to the meter.
func (a *Aggregator) submit(ctx context.Context, p *pendingBatch) error {
	first := !p.sent
	p.sent = true
	res, err := a.r.ReportUsage(ctx, *p.b)
	if err != nil {
		return err
	}
	a.batches.Inc()
	if res.Duplicate && first {
		// Only a batch the meter may have seen can have been applied
		// before; a new one answered so reused a seq (a damaged
		// journal), and the meter dropped its usage.
		a.duplicates.Inc()
		a.cfg.Logger.Error("usage: the meter had applied this batch id already; its usage is not counted", "batch", p.b.ID, "entries", len(p.b.Entries))
	}
	if j := a.cfg.Journal; j != nil {
		j.Committed(p.seq)
		a.compactJournal()
	}
	if n := len(res.Rejected); n > 0 {
		a.rejected.Add(float64(n))
		a.cfg.Logger.Warn("usage: meter refused entries", "batch", p.b.ID, "rejected", n, "first", res.Rejected[0])
		a.mu.Lock()
		for _, r := range res.Rejected {
			delete(a.observed, r.Stream)
		}
		a.mu.Unlock()
	}
	return nil
}

// take turns the pending deltas into a batch (entries ordered by stream).
func (a *Aggregator) take() *pendingBatch {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) == 0 {
		return nil
	}
	p := &pendingBatch{ords: a.ords}
	a.ords = nil
	var id string
	if j := a.cfg.Journal; j != nil {
		p.seq, id = j.NextBatch()
	} else {
		a.seq++
		id = a.prefix + "-" + strconv.FormatUint(a.seq, 10)
	}
	now := a.cfg.Now().UTC()
	b := &UsageBatch{ID: id, From: a.last, To: now,
		Entries: make([]UsageEntry, 0, len(a.pending))}
	p.b = b
	a.last = now
	for _, e := range a.pending {
		b.Entries = append(b.Entries, *e)
	}
	sort.Slice(b.Entries, func(i, j int) bool { return b.Entries[i].Stream < b.Entries[j].Stream })
	clear(a.pending)
	return p
}

// Close flushes what is pending (on shutdown), retrying until ctx ends.
func (a *Aggregator) Close(ctx context.Context) error {
	for {
		err := a.Flush(ctx)
		a.mu.Lock()
		empty := len(a.pending) == 0
		a.mu.Unlock()
		if err == nil && empty {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
