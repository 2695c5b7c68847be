package meter

import (
	"context"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// UsageReporter takes usage batches: the meter (*Meter), or a client of a
// remote meter cluster on an ingest-only node.
type UsageReporter interface {
	ReportUsage(ctx context.Context, b UsageBatch) (UsageResult, error)
}

// AggregatorConfig configures an Aggregator.
type AggregatorConfig struct {
	NodeID     string
	Interval   time.Duration // how often a batch is submitted; default 1s
	Logger     *slog.Logger
	Registerer prometheus.Registerer // optional
	Now        func() time.Time
}

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
	observed map[string][2]int // last resolution reported per stream
	seq      uint64
	last     time.Time

	flushMu  sync.Mutex // one batch in flight
	inflight *UsageBatch

	batches, rejected, failures prometheus.Counter
}

// NewAggregator returns an aggregator submitting to r; call Run.
func NewAggregator(r UsageReporter, cfg AggregatorConfig) *Aggregator {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Aggregator{r: r, cfg: cfg, pending: map[string]*UsageEntry{}, observed: map[string][2]int{},
		// Batch ids must never repeat across restarts: a random prefix per run.
		prefix: "u-" + randomID()[:16], last: cfg.Now().UTC(),
		batches:  prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_usage_batches_submitted_total", Help: "Usage batches committed by the meter."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_usage_entries_rejected_total", Help: "Usage entries the meter refused (unknown or deleted stream, invalid)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_usage_batch_failures_total", Help: "Usage batch submissions that failed and will be retried."}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{a.batches, a.rejected, a.failures} {
			if err := cfg.Registerer.Register(c); err != nil {
				cfg.Logger.Warn("usage: metric registration", "err", err)
			}
		}
	}
	return a
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
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.entry(stream)
	e.StoredBytes -= bytes
	e.StoredObjects -= objects
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
			if err := a.Flush(ctx); err != nil && ctx.Err() == nil {
				a.cfg.Logger.Warn("usage: batch not committed yet; retrying", "err", err)
			}
		}
	}
}

// Flush submits the batch in flight (a retry, same id) or else the pending
// deltas.
func (a *Aggregator) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	for range 2 {
		if a.inflight == nil {
			a.inflight = a.take()
			if a.inflight == nil {
				return nil
			}
		}
		res, err := a.r.ReportUsage(ctx, *a.inflight)
		if err != nil {
			a.failures.Inc()
			return err
		}
		a.batches.Inc()
		if n := len(res.Rejected); n > 0 {
			a.rejected.Add(float64(n))
			a.cfg.Logger.Warn("usage: meter refused entries", "batch", a.inflight.ID, "rejected", n, "first", res.Rejected[0])
			a.mu.Lock()
			for _, r := range res.Rejected {
				delete(a.observed, r.Stream)
			}
			a.mu.Unlock()
		}
		a.inflight = nil
	}
	return nil
}

// take turns the pending deltas into a batch (entries ordered by stream).
func (a *Aggregator) take() *UsageBatch {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) == 0 {
		return nil
	}
	a.seq++
	now := a.cfg.Now().UTC()
	b := &UsageBatch{ID: a.prefix + "-" + strconv.FormatUint(a.seq, 10), From: a.last, To: now,
		Entries: make([]UsageEntry, 0, len(a.pending))}
	a.last = now
	for _, e := range a.pending {
		b.Entries = append(b.Entries, *e)
	}
	sort.Slice(b.Entries, func(i, j int) bool { return b.Entries[i].Stream < b.Entries[j].Stream })
	clear(a.pending)
	return b
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
