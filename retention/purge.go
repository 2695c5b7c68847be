package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
)

// Jobs is the meter's durable record of purge jobs.
type Jobs interface {
	OpenPurges(ctx context.Context) ([]meter.PurgeJob, error)
	PurgeProgress(ctx context.Context, id, cursor string, objects, bytes int64) (meter.PurgeJob, error)
	PurgeFailed(ctx context.Context, id, msg string) (meter.PurgeJob, error)
	PurgeDone(ctx context.Context, id string) (meter.PurgeJob, error)
}

// UsageZeroer is an optional capability of Usage: set a purged stream's
// stored bytes to zero, whatever drift it had.
type UsageZeroer interface {
	ZeroStored(ctx context.Context, stream string) error
}

// PurgerConfig configures a Purger.
type PurgerConfig struct {
	Interval time.Duration // how often open jobs are looked for (default 1s)
	// Straggle is how long after the deletion uploads that passed the
	// registry check before it may still land; a job is done only after
	// a listing this long after the deletion finds nothing (default 2s:
	// ingest checks the registry right before it writes, so an in-flight
	// upload lands within its own body transfer of the deletion).
	Straggle time.Duration
	LeaseTTL time.Duration // default 1 min, renewed while purging
	PageSize int           // objects listed and deleted per step (default 1000)
	Now      func() time.Time
	Logger   *slog.Logger
	Metrics  *Metrics
}

// Purger runs purge jobs: it deletes every object under the deleted
// camera's prefix, then drops the streams from the index, zeroes their
// usage and marks the job done. Jobs are resumable after a crash (they live
// in the meter) and idempotent (see meter.PurgeJob's cursor).
type Purger struct {
	cfg   PurgerConfig
	store storage.Backend
	idx   Index
	jobs  Jobs
	usage Usage
	lease Lease
	log   *slog.Logger
	met   *Metrics
}

// NewPurger returns a purge worker; usage may be nil.
func NewPurger(cfg PurgerConfig, store storage.Backend, idx Index, jobs Jobs, usage Usage, lease Lease) *Purger {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Straggle < 0 {
		cfg.Straggle = 0
	} else if cfg.Straggle == 0 {
		cfg.Straggle = 2 * time.Second
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = time.Minute
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 1000
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
	if lease == nil {
		lease = NewLocalLease(cfg.Now)
	}
	return &Purger{cfg: cfg, store: store, idx: idx, jobs: jobs, usage: usage, lease: lease, log: cfg.Logger, met: cfg.Metrics}
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

func (p *Purger) runJob(ctx context.Context, j meter.PurgeJob) error {
	held, ok, err := p.lease.TryAcquire(ctx, "purge/"+j.ID, p.cfg.LeaseTTL)
	if err != nil || !ok {
		return err // another worker has it
	}
	defer func() { _ = held.Release(context.WithoutCancel(ctx)) }()
	for {
		empty, err := p.deleteAll(ctx, &j, held)
		if err != nil {
			return err
		}
		if !empty {
			continue
		}
		// Objects first, then the index: a lookup in between rebuilds
		// from whatever storage still holds, which is nothing.
		for _, ref := range j.Refs() {
			if err := p.idx.DropStream(ctx, ref); err != nil {
				return fmt.Errorf("drop index of %s: %w", ref.Stream, err)
			}
		}
		if wait := j.CreatedAt.Add(p.cfg.Straggle).Sub(p.cfg.Now()); wait > 0 {
			// An upload that passed the registry check just before the
			// deletion may still land: look again once it cannot.
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

// deleteAll makes one pass over the camera's objects, page by page,
// deleting each page while the next is listed and recorded; empty says
// the pass found nothing.
func (p *Purger) deleteAll(ctx context.Context, j *meter.PurgeJob, held Held) (empty bool, err error) {
	page := p.cfg.PageSize
	prefix := j.Prefix()
	renewed := time.Now()
	type result struct {
		err      error
		counted  int64
		bytes    int64
		perShard map[string][2]int64 // stream → segment bytes, objects
	}
	var inflight chan result
	// wait settles the page being deleted: metrics and usage once gone.
	wait := func() error {
		if inflight == nil {
			return nil
		}
		r := <-inflight
		inflight = nil
		if r.err != nil {
			return r.err
		}
		p.met.deleted(ReasonPurge, r.counted, r.bytes)
		if p.usage != nil {
			for stream, v := range r.perShard {
				if err := p.usage.Freed(ctx, stream, v[0], v[1]); err != nil {
					p.log.Warn("retention: report purged bytes", "stream", stream, "err", err)
				}
			}
		}
		return nil
	}
	defer func() { _ = wait() }()
	after := ""
	found := false
	for {
		if time.Since(renewed) > p.cfg.LeaseTTL/3 {
			if err := held.Extend(ctx, p.cfg.LeaseTTL); err != nil {
				return false, err
			}
			renewed = time.Now()
		}
		objs, err := p.store.List(ctx, prefix, after, page)
		if err != nil {
			return false, fmt.Errorf("list %s: %w", prefix, err)
		}
		if len(objs) == 0 {
			break
		}
		found = true
		r := result{perShard: map[string][2]int64{}}
		keys := make([]string, 0, len(objs))
		for _, o := range objs {
			keys = append(keys, o.Key)
			// Keys at or before the cursor were counted before a crash
			// interrupted their deletion.
			if o.Key <= j.Cursor {
				continue
			}
			r.counted++
			r.bytes += o.Size
			if ref, _, err := storage.ParseSegmentKey(o.Key); err == nil {
				v := r.perShard[ref.Stream]
				r.perShard[ref.Stream] = [2]int64{v[0] + o.Size, v[1] + 1}
			}
		}
		// Record the page before deleting it (see meter.PurgeJob).
		if r.counted > 0 {
			last := keys[len(keys)-1]
			if _, err := p.jobs.PurgeProgress(ctx, j.ID, last, r.counted, r.bytes); err != nil {
				return false, err
			}
			j.Cursor = last
		}
		if err := wait(); err != nil {
			return false, err
		}
		inflight = make(chan result, 1)
		go func(ch chan result) {
			began := time.Now()
			err := p.store.Delete(ctx, keys)
			p.met.latency.Observe(time.Since(began).Seconds())
			if err != nil {
				r.err = fmt.Errorf("delete under %s: %w", prefix, err)
			}
			ch <- r
		}(inflight)
		after = objs[len(objs)-1].Key
		if len(objs) < page {
			break
		}
	}
	if err := wait(); err != nil {
		return false, err
	}
	return !found, nil
}
