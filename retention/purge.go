package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/purge"
	"github.com/vigilcloud/vigil/storage"
)

// Jobs is the meter's durable record of purge jobs.
type Jobs interface {
	OpenPurges(ctx context.Context) ([]purge.PurgeJob, error)
	PurgeProgress(ctx context.Context, id, cursor string, objects, bytes int64) (purge.PurgeJob, error)
	PurgeFailed(ctx context.Context, id, msg string) (purge.PurgeJob, error)
	PurgeDone(ctx context.Context, id string) (purge.PurgeJob, error)
}

// UsageZeroer is an optional capability of Usage: set a purged stream's
// stored bytes to zero, whatever drift it had.
type UsageZeroer interface {
	ZeroStored(ctx context.Context, stream string) error
}

// PurgerConfig configures a Purger.
type PurgerConfig struct {
	Interval time.Duration // how often open jobs are looked for (default DefaultPurgeInterval)
	// Straggle is how long after the deletion an upload that re-checked
	// the registry before it may still be writing its index entry; a job
	// is done only after a listing this long after the deletion finds
	// nothing and the index is dropped once more (default DefaultStraggle; negative: none. 2s: ingest
	// re-checks the registry after the object is stored and after it is
	// indexed, and takes back a write that lands after the deletion, so
	// only the few milliseconds between its re-check and its answer
	// straggle, not a body transfer).
	Straggle time.Duration
	LeaseTTL time.Duration // default DefaultLeaseTTL, renewed while purging
	PageSize int           // objects listed and deleted per request (default 1000)
	// MaxRecordPages caps how many listed pages one progress record (one
	// raft apply) covers (default 16).
	MaxRecordPages int
	// DeleteConcurrency is how many page deletes run at once (default 2).
	DeleteConcurrency int
	// UsageEvery is how often freed bytes are reported to usage while a
	// purge runs (default 1s); the rest is reported at the end.
	UsageEvery time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
	Metrics    *Metrics
}

// Purger runs purge jobs: it deletes every object under the deleted
// camera's prefix, then drops the streams from the index, zeroes their
// usage and marks the job done. Jobs are resumable after a crash (they live
// in the meter) and idempotent (see purge.PurgeJob's cursor).
type Purger struct {
	cfg   PurgerConfig
	store storage.Backend
	idx   Index
	jobs  Jobs
	usage Usage
	lease lease.Lease
	log   *slog.Logger
	met   *Metrics
}

// NewPurger returns a purge worker; usage may be nil.
func NewPurger(cfg PurgerConfig, store storage.Backend, idx Index, jobs Jobs, usage Usage, l lease.Lease) *Purger {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultPurgeInterval
	}
	if cfg.Straggle < 0 {
		cfg.Straggle = 0
	} else if cfg.Straggle == 0 {
		cfg.Straggle = DefaultStraggle
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 1000
	}
	if cfg.MaxRecordPages <= 0 {
		cfg.MaxRecordPages = 16
	}
	if cfg.DeleteConcurrency <= 0 {
		cfg.DeleteConcurrency = 2
	}
	if cfg.UsageEvery <= 0 {
		cfg.UsageEvery = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if l == nil {
		l = lease.NewLocal(cfg.Now)
	}
	return &Purger{cfg: cfg, store: store, idx: idx, jobs: jobs, usage: usage, lease: l, log: cfg.Logger, met: cfg.Metrics}
}

// Run looks for open jobs every Interval and runs them until ctx ends.
func (p *Purger) Run(ctx context.Context) {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		if err := p.RunOnce(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("retention: purge", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RunOnce runs every open job once (to done, or until it must wait).
func (p *Purger) RunOnce(ctx context.Context) error {
	jobs, err := p.jobs.OpenPurges(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, j := range jobs {
		if err := p.runJob(ctx, j); err != nil {
			errs = append(errs, fmt.Errorf("purge %s: %w", j.ID, err))
			if ctx.Err() == nil {
				if _, ferr := p.jobs.PurgeFailed(ctx, j.ID, err.Error()); ferr != nil {
					p.log.Warn("retention: record purge failure", "purge", j.ID, "err", ferr)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (p *Purger) runJob(ctx context.Context, j purge.PurgeJob) error {
	held, ok, err := p.lease.TryAcquire(ctx, "purge/"+j.ID, p.cfg.LeaseTTL)
	if err != nil || !ok {
		return err // another worker has it
	}
	defer func() { _ = held.Release(context.WithoutCancel(ctx)) }()
	// Renewed in the background: a page delete may take longer than the
	// TTL on a slow store.
	ctx, stop := lease.Keep(ctx, held, p.cfg.LeaseTTL)
	defer stop()
	for {
		empty, err := p.deleteAll(ctx, &j)
		if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause // the lease was lost
		}
		if err != nil {
			return err
		}
		if !empty {
			continue
		}
		// Objects first, then the index: a lookup in between rebuilds
		// from whatever storage still holds, which is nothing. Dropped
		// again after the last listing: an upload that re-checked the
		// registry before the deletion may have added its entry after the
		// first drop (ingest.Handler.Store).
		for _, ref := range j.Refs() {
			if err := p.idx.DropStream(ctx, ref); err != nil {
				return fmt.Errorf("drop index of %s: %w", ref.Stream, err)
			}
		}
		if wait := j.CreatedAt.Add(p.cfg.Straggle).Sub(p.cfg.Now()); wait > 0 {
			// An upload that re-checked the registry just before the
			// deletion may still be writing: look again once it is done.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		if z, ok := p.usage.(UsageZeroer); ok {
			for _, s := range j.Streams {
				if err := z.ZeroStored(ctx, s); err != nil {
					return fmt.Errorf("zero usage of %s: %w", s, err)
				}
			}
		}
		done, err := p.jobs.PurgeDone(ctx, j.ID)
		if err != nil {
			return err
		}
		p.log.Info("retention: purge done", "purge", j.ID, "camera", j.Camera,
			"objects", done.ObjectsDeleted, "bytes", done.BytesFreed)
		return nil
	}
}

// deleteAll makes one pass over the camera's objects. Three stages run at
// once: a lister pages through the camera prefix; the recorder records
// every page listed since its last record in one meter command (group
// commit: one raft apply for several pages while the apply is the slower
// stage, at most MaxRecordPages); up to DeleteConcurrency deletes run on
// recorded pages. A page is deleted only once it is recorded, so the
// invariant of purge.PurgeJob holds whatever the grouping: keys at or
// before the cursor are counted, keys after it are not deleted yet. Freed
// bytes go to usage at most every UsageEvery and at the end (the job
// zeroes the streams' stored bytes when done anyway). empty says the pass
// found nothing.
func (p *Purger) deleteAll(ctx context.Context, j *purge.PurgeJob) (empty bool, err error) {
	// Only the lister is cancelled on the way out: recorded pages being
	// deleted finish.
	listCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	prefix := j.Prefix()
	pages, listErr := p.listPages(listCtx, prefix)
	d := &pageDeleter{p: p, prefix: prefix, freed: map[string][2]int64{}, sem: make(chan struct{}, p.cfg.DeleteConcurrency)}
	finish := func() error {
		cancel()
		for range pages { // let the lister end
		}
		d.wait()
		d.flush(context.WithoutCancel(ctx))
		lerr := *listErr
		if ctx.Err() == nil && errors.Is(lerr, context.Canceled) {
			lerr = nil // cancelled by finish
		}
		return errors.Join(lerr, d.err())
	}

	found := false
	flushed := time.Now()
	for {
		batch, ok := p.nextBatch(pages)
		if !ok {
			break
		}
		found = true
		if err := d.err(); err != nil {
			return false, errors.Join(err, finish())
		}
		todo, counted, size, last := countPages(batch, j.Cursor)
		// Record the pages before deleting them (see purge.PurgeJob).
		if counted > 0 {
			if _, err := p.jobs.PurgeProgress(ctx, j.ID, last, counted, size); err != nil {
				return false, errors.Join(err, finish())
			}
			j.Cursor = last
		}
		for _, pg := range todo {
			if err := d.start(ctx, pg); err != nil {
				return false, errors.Join(err, finish())
			}
		}
		if time.Since(flushed) > p.cfg.UsageEvery {
			d.flush(ctx)
			flushed = time.Now()
		}
	}
	if err := finish(); err != nil {
		return false, err
	}
	return !found, nil
}

// listPages pages through prefix into the returned channel, closed at the
// end; the error it stopped on is readable once the channel is closed.
func (p *Purger) listPages(ctx context.Context, prefix string) (<-chan []storage.ObjectInfo, *error) {
	pages := make(chan []storage.ObjectInfo, p.cfg.MaxRecordPages)
	var listErr error
	go func() {
		defer close(pages)
		after := ""
		for {
			objs, err := p.store.List(ctx, prefix, after, p.cfg.PageSize)
			if err != nil {
				listErr = fmt.Errorf("list %s: %w", prefix, err)
				return
			}
			if len(objs) == 0 {
				return
			}
			select {
			case pages <- objs:
			case <-ctx.Done():
				return
			}
			if len(objs) < p.cfg.PageSize {
				return
			}
			after = objs[len(objs)-1].Key
		}
	}()
	return pages, &listErr
}

// nextBatch is one group commit: the first page blocks, the others are
// taken as far as already listed, up to MaxRecordPages. ok is false once
// the listing ended.
func (p *Purger) nextBatch(pages <-chan []storage.ObjectInfo) (batch [][]storage.ObjectInfo, ok bool) {
	first, ok := <-pages
	if !ok {
		return nil, false
	}
	batch = [][]storage.ObjectInfo{first}
	for len(batch) < p.cfg.MaxRecordPages {
		select {
		case pg, ok := <-pages:
			if !ok {
				return batch, true
			}
			batch = append(batch, pg)
		default:
			return batch, true
		}
	}
	return batch, true
}

// purgePage is one listed page: its keys, and what its deletion frees of
// the keys not counted before.
type purgePage struct {
	keys    []string
	counted int64
	bytes   int64
	streams map[string][2]int64 // stream → segment bytes, objects
}

// countPages turns a batch into pages and totals what is new after cursor:
// keys at or before it were counted before a crash interrupted their
// deletion. last is the last new key.
func countPages(batch [][]storage.ObjectInfo, cursor string) (todo []purgePage, counted, size int64, last string) {
	for _, objs := range batch {
		pg := purgePage{keys: make([]string, 0, len(objs)), streams: map[string][2]int64{}}
		for _, o := range objs {
			pg.keys = append(pg.keys, o.Key)
			if o.Key <= cursor {
				continue
			}
			pg.counted++
			pg.bytes += o.Size
			last = o.Key
			if ref, _, err := storage.ParseSegmentKey(o.Key); err == nil {
				v := pg.streams[ref.Stream]
				pg.streams[ref.Stream] = [2]int64{v[0] + o.Size, v[1] + 1}
			}
		}
		counted, size = counted+pg.counted, size+pg.bytes
		todo = append(todo, pg)
	}
	return todo, counted, size, last
}

// pageDeleter deletes recorded pages, DeleteConcurrency at once, and keeps
// what they freed until it is flushed to usage.
type pageDeleter struct {
	p      *Purger
	prefix string
	sem    chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	delErr error               // the first failed delete
	freed  map[string][2]int64 // stream → segment bytes, objects not reported yet
}

// start deletes pg in the background once a slot is free.
func (d *pageDeleter) start(ctx context.Context, pg purgePage) error {
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() { <-d.sem }()
		began := time.Now()
		err := d.p.store.Delete(ctx, pg.keys)
		d.p.met.latency.Observe(time.Since(began).Seconds())
		d.mu.Lock()
		defer d.mu.Unlock()
		if err != nil {
			if d.delErr == nil {
				d.delErr = fmt.Errorf("delete under %s: %w", d.prefix, err)
			}
			return
		}
		d.p.met.deleted(ReasonPurge, pg.counted, pg.bytes)
		for s, v := range pg.streams {
			f := d.freed[s]
			d.freed[s] = [2]int64{f[0] + v[0], f[1] + v[1]}
		}
	}()
	return nil
}

func (d *pageDeleter) wait() { d.wg.Wait() }

func (d *pageDeleter) err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.delErr
}

// flush reports what the deletes freed since the last flush.
func (d *pageDeleter) flush(ctx context.Context) {
	if d.p.usage == nil {
		return
	}
	d.mu.Lock()
	out := d.freed
	d.freed = map[string][2]int64{}
	d.mu.Unlock()
	for stream, v := range out {
		if err := d.p.usage.Freed(ctx, stream, v[0], v[1]); err != nil {
			d.p.log.Warn("retention: report purged bytes", "stream", stream, "err", err)
		}
	}
}
