package retention

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/storage"
)

// Streams lists the live streams with the retention in force (the meter).
type Streams interface {
	Streams(ctx context.Context) ([]accounts.Stream, error)
}

// Index is what retention needs of the recording index.
type Index interface {
	Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Segment, error)
	TrimBefore(ctx context.Context, ref storage.StreamRef, before int64) error
	DropStream(ctx context.Context, ref storage.StreamRef) error
}

// Usage receives the bytes and objects freed from a stream's storage (the
// meter's usage counters).
type Usage interface {
	Freed(ctx context.Context, stream string, bytes, objects int64) error
}

// Metrics are retention's Prometheus metrics, shared by sweeper and purge
// worker.
type Metrics struct {
	objects *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	latency prometheus.Histogram
	sweeps  *prometheus.CounterVec
}

// NewMetrics registers retention's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_retention_deleted_objects_total", Help: "Segment objects deleted, by reason.",
		}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_retention_deleted_bytes_total", Help: "Bytes of segment objects deleted, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_retention_delete_seconds", Help: "Latency of one batch delete against storage.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_retention_sweeps_total", Help: "Stream sweeps, by result (idle, swept, busy, error).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.objects, m.bytes, m.latency, m.sweeps)
	}
	// Exported at 0 from the start, so that rates and alerts see the first one.
	for _, r := range []string{ReasonRetention, ReasonPurge, ReasonOrphan} {
		m.deleted(r, 0, 0)
	}
	for _, r := range []string{"idle", "swept", "busy", "error"} {
		m.sweeps.WithLabelValues(r)
	}
	return m
}

func (m *Metrics) deleted(reason string, objects, bytes int64) {
	m.objects.WithLabelValues(reason).Add(float64(objects))
	m.bytes.WithLabelValues(reason).Add(float64(bytes))
}

// Defaults of the sweeper's and the purger's settings that vigil serve
// exposes as flags.
const (
	DefaultSweepInterval = time.Minute
	// DefaultMargin is the margin vigil serve keeps; a zero
	// SweeperConfig.Margin means none.
	DefaultMargin        = 10 * time.Minute
	DefaultLeaseTTL      = time.Minute
	DefaultPurgeInterval = time.Second
	DefaultStraggle      = 2 * time.Second
)

// SweeperConfig configures a Sweeper.
type SweeperConfig struct {
	Interval time.Duration // between sweeps (default DefaultSweepInterval)
	Margin   time.Duration // safety margin for clock skew (zero: none; vigil serve keeps DefaultMargin)
	// MaxSegmentDuration is the longest segment storage can hold (default
	// index.MaxSegmentDuration): an hour is wholly expired once its end
	// plus this is.
	MaxSegmentDuration time.Duration
	Workers            int // streams swept concurrently (default 4)
	// DeleteConcurrency is how many delete requests of one stream's bulk
	// sweep run at once (default 2).
	DeleteConcurrency int
	LeaseTTL          time.Duration // default DefaultLeaseTTL, renewed while sweeping
	Now               func() time.Time
	Logger            *slog.Logger
	Metrics           *Metrics
}

// Sweeper deletes expired video of every live stream. Its idle cost is
// O(streams) and does no I/O: per stream it remembers the earliest instant
// anything it holds may expire (a watermark), and touches storage only
// once that has passed. It finds expired data by the stream's oldest
// segment and manifest keys and its hour prefixes, never by listing more
// than the hours that expire.
//
// Sweep is safe for concurrent use; a per-stream lease keeps one sweeper
// per stream across nodes.
type Sweeper struct {
	cfg     SweeperConfig
	store   storage.Backend
	idx     Index
	streams Streams
	usage   Usage
	lease   lease.Lease
	log     *slog.Logger
	met     *Metrics

	mu    sync.Mutex
	state map[storage.StreamRef]*streamState
}

// streamState is what the sweeper remembers of a stream between sweeps.
type streamState struct {
	days int       // retention the watermark was computed under
	next time.Time // nothing of the stream can expire before this
	// pending are keys a failed delete attempted: some may be gone. The
	// next sweep counts those that are gone as freed (exactly once) before
	// anything else.
	pending []pendingKey
}

type pendingKey struct {
	key    string
	size   int64
	reason string
}

// NewSweeper returns a sweeper; usage may be nil (nothing reported).
func NewSweeper(cfg SweeperConfig, store storage.Backend, idx Index, streams Streams, usage Usage, l lease.Lease) *Sweeper {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultSweepInterval
	}
	if cfg.Margin < 0 {
		cfg.Margin = 0
	}
	if cfg.MaxSegmentDuration <= 0 {
		cfg.MaxSegmentDuration = index.MaxSegmentDuration
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.DeleteConcurrency <= 0 {
		cfg.DeleteConcurrency = 2
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
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
	return &Sweeper{cfg: cfg, store: store, idx: idx, streams: streams, usage: usage, lease: l,
		log: cfg.Logger, met: cfg.Metrics, state: map[storage.StreamRef]*streamState{}}
}

// Run sweeps every Interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("retention: sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SweepStats sums up one sweep.
type SweepStats struct {
	Streams int   // streams looked at
	Swept   int   // streams whose storage was touched
	Objects int64 // segment objects deleted
	Bytes   int64
}

// Sweep runs one pass over every live stream. A stream that fails (storage
// down) is retried at the next pass; the error of the pass joins them.
func (s *Sweeper) Sweep(ctx context.Context) (SweepStats, error) {
	list, err := s.streams.Streams(ctx)
	if err != nil {
		return SweepStats{}, fmt.Errorf("retention: list streams: %w", err)
	}
	var (
		mu    sync.Mutex
		st    = SweepStats{Streams: len(list)}
		errs  []error
		live  = make(map[storage.StreamRef]bool, len(list))
		g     errgroup.Group
		limit = make(chan struct{}, s.cfg.Workers)
	)
	now := s.cfg.Now()
	for _, m := range list {
		ref := storage.StreamRef{Account: m.Account, Camera: m.Camera, Stream: m.ID}
		live[ref] = true
		pol := Policy{Days: m.RetentionDays, Margin: s.cfg.Margin}
		if s.idle(ref, pol, now) {
			s.met.sweeps.WithLabelValues("idle").Inc()
			continue
		}
		limit <- struct{}{}
		g.Go(func() error {
			defer func() { <-limit }()
			objs, bytes, touched, err := s.sweepStream(ctx, ref, pol)
			mu.Lock()
			defer mu.Unlock()
			st.Objects += objs
			st.Bytes += bytes
			if touched {
				st.Swept++
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("stream %s: %w", ref.Stream, err))
			}
			return nil
		})
	}
	_ = g.Wait()
	// Forget deleted streams: their purge frees them.
	s.mu.Lock()
	for ref := range s.state {
		if !live[ref] {
			delete(s.state, ref)
		}
	}
	s.mu.Unlock()
	return st, errors.Join(errs...)
}

// idle reports, without I/O, that nothing of ref can have expired at now.
func (s *Sweeper) idle(ref storage.StreamRef, pol Policy, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.state[ref]
	return ss != nil && ss.days == pol.Days && len(ss.pending) == 0 && now.Before(ss.next)
}

func (s *Sweeper) stateOf(ref storage.StreamRef) *streamState {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.state[ref]
	if ss == nil {
		ss = &streamState{}
		s.state[ref] = ss
	}
	return ss
}

// sweepStream deletes ref's expired segments, oldest hour first, under the
// stream's lease.
func (s *Sweeper) sweepStream(ctx context.Context, ref storage.StreamRef, pol Policy) (objs, bytes int64, touched bool, err error) {
	if s.nothingExpired(ctx, ref, pol) {
		s.met.sweeps.WithLabelValues("idle").Inc()
		return 0, 0, false, nil
	}
	held, ok, err := s.lease.TryAcquire(ctx, "sweep/"+ref.StreamPrefix(), s.cfg.LeaseTTL)
	if err != nil {
		s.met.sweeps.WithLabelValues("error").Inc()
		return 0, 0, false, err
	}
	if !ok {
		s.met.sweeps.WithLabelValues("busy").Inc()
		return 0, 0, false, nil // another node sweeps it
	}
	defer func() { _ = held.Release(context.WithoutCancel(ctx)) }()
	// Renewed in the background: a long backlog outlasts the TTL.
	lctx, stop := lease.Keep(ctx, held, s.cfg.LeaseTTL)
	defer stop()
	ss := s.stateOf(ref) // only the lease holder of this node touches it
	objs, bytes, err = s.sweepLocked(lctx, ref, pol, ss)
	if cause := context.Cause(lctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause // the lease was lost
	}
	if err != nil {
		s.met.sweeps.WithLabelValues("error").Inc()
	} else {
		s.met.sweeps.WithLabelValues("swept").Inc()
	}
	return objs, bytes, true, err
}

// nothingExpired looks, without the lease, at a stream whose watermark
// this node does not know (after a start, a plan change, an empty stream):
// when its oldest hour cannot hold anything expired, it sets the watermark
// and says so. Taking the lease only to find that out costs a write to the
// lease holder per stream (a raft apply with the meter lease) on every
// start, and changes the meter's state for nothing.
func (s *Sweeper) nothingExpired(ctx context.Context, ref storage.StreamRef, pol Policy) bool {
	s.mu.Lock()
	ss := s.state[ref]
	pending := ss != nil && len(ss.pending) > 0
	s.mu.Unlock()
	if pending {
		return false
	}
	now := s.cfg.Now()
	hour, found, err := s.oldestHour(ctx, ref)
	if err != nil || found && pol.HourMayHoldExpired(hour, now) {
		return false // the sweep under the lease looks again
	}
	next := now.Add(max(pol.Margin, time.Second)) // empty, as in sweepLocked
	if found {
		next = time.UnixMilli(hour).Add(pol.Keep())
	}
	ss = s.stateOf(ref)
	s.mu.Lock()
	ss.days, ss.next = pol.Days, next
	s.mu.Unlock()
	return true
}

func (s *Sweeper) sweepLocked(ctx context.Context, ref storage.StreamRef, pol Policy, ss *streamState) (objs, bytes int64, err error) {
	// First settle a delete that failed half-way: count what is gone.
	if len(ss.pending) > 0 {
		o, b, err := s.settlePending(ctx, ref, ss)
		objs, bytes = objs+o, bytes+b
		if err != nil {
			return objs, bytes, err
		}
	}
	now := s.cfg.Now()
	o, b, err := s.sweepWhole(ctx, ref, pol, now, ss)
	objs, bytes = objs+o, bytes+b
	if err != nil {
		return objs, bytes, err
	}
	for {
		hour, found, err := s.oldestHour(ctx, ref)
		if err != nil {
			return objs, bytes, err
		}
		if !found {
			// Empty: anything uploaded from now on is accepted only if it
			// ends within retention, so it expires after now + margin.
			ss.days, ss.next = pol.Days, now.Add(max(pol.Margin, time.Second))
			return objs, bytes, nil
		}
		if !pol.HourMayHoldExpired(hour, now) {
			ss.days, ss.next = pol.Days, time.UnixMilli(hour).Add(pol.Keep())
			return objs, bytes, nil
		}
		o, b, next, emptied, err := s.sweepHour(ctx, ref, pol, hour, now, ss)
		objs, bytes = objs+o, bytes+b
		if err != nil {
			return objs, bytes, err
		}
		if !emptied {
			ss.days, ss.next = pol.Days, next
			return objs, bytes, nil
		}
	}
}

// oldestHour is the hour of the stream's oldest segment or manifest: the
// first key of each prefix, two one-key listings.
func (s *Sweeper) oldestHour(ctx context.Context, ref storage.StreamRef) (int64, bool, error) {
	var hour int64
	found := false
	segs, err := s.store.List(ctx, ref.SegmentPrefix(), "", 1)
	if err != nil {
		return 0, false, fmt.Errorf("list %s: %w", ref.SegmentPrefix(), err)
	}
	if len(segs) == 1 {
		if _, start, err := storage.ParseSegmentKey(segs[0].Key); err == nil {
			hour, found = storage.HourStart(start), true
		} else {
			return 0, false, fmt.Errorf("unexpected key %s: %w", segs[0].Key, err)
		}
	}
	mans, err := s.store.List(ctx, ref.ManifestPrefix(), "", 1)
	if err != nil {
		return 0, false, fmt.Errorf("list %s: %w", ref.ManifestPrefix(), err)
	}
	if len(mans) == 1 {
		if _, h, err := storage.ParseManifestKey(mans[0].Key); err == nil && (!found || h < hour) {
			hour, found = h, true
		}
	}
	return hour, found, nil
}

// sweepHour deletes the expired segments of one hour. emptied says the
// hour holds nothing any more; otherwise next is when its oldest kept
// segment expires.
func (s *Sweeper) sweepHour(ctx context.Context, ref storage.StreamRef, pol Policy, hour int64, now time.Time, ss *streamState) (objs, bytes int64, next time.Time, emptied bool, err error) {
	hourT := time.UnixMilli(hour)
	var listed []storage.ObjectInfo
	if err := storage.Walk(ctx, s.store, ref.HourPrefix(hourT), func(o storage.ObjectInfo) error {
		listed = append(listed, o)
		return nil
	}); err != nil {
		return 0, 0, next, false, fmt.Errorf("list hour %s: %w", hourT.UTC().Format(time.RFC3339), err)
	}
	var (
		del      []pendingKey
		kept     []index.Segment
		manifest bool // delete the hour's manifest too
	)
	if pol.HourExpired(hour, s.cfg.MaxSegmentDuration, now) {
		// Everything in the hour expired whatever its duration: no
		// metadata needed, the fast path of a steady sweep.
		for _, o := range listed {
			del = append(del, pendingKey{key: o.Key, size: o.Size, reason: ReasonRetention})
		}
		manifest = true // delete it if present
	} else {
		var manSegs []index.Segment
		if del, kept, manSegs, err = s.selectInHour(ctx, ref, pol, hour, listed, now); err != nil {
			return 0, 0, next, false, err
		}
		if len(kept) == 0 {
			manifest = true
		} else if err := s.dropFromManifest(ctx, ref, hour, manSegs, del); err != nil {
			return 0, 0, next, false, err
		}
	}
	if objs, bytes, err = s.deleteHour(ctx, ref, ref.ManifestKey(hourT), manifest, del, ss); err != nil {
		return 0, 0, next, false, err
	}
	before := hour + time.Hour.Milliseconds()
	for _, k := range kept {
		before = min(before, k.Start)
	}
	if err := s.idx.TrimBefore(ctx, ref, before); err != nil {
		s.log.Warn("retention: trim index", "stream", ref.Stream, "err", err)
	}
	if len(kept) == 0 {
		return objs, bytes, next, true, nil
	}
	next = pol.ExpiresAt(kept[0])
	for _, k := range kept[1:] {
		if e := pol.ExpiresAt(k); e.Before(next) {
			next = e
		}
	}
	return objs, bytes, next, false, nil
}

// selectInHour splits the listed objects of an hour that is not wholly
// expired into those to delete and the segments kept. A segment's duration
// comes from the hour's manifest (manSegs, also returned), the index, or
// else its object's metadata.
func (s *Sweeper) selectInHour(ctx context.Context, ref storage.StreamRef, pol Policy, hour int64, listed []storage.ObjectInfo, now time.Time) (del []pendingKey, kept, manSegs []index.Segment, err error) {
	manSegs, err = index.ReadManifestIfAny(ctx, s.store, ref, hour)
	if err != nil && !errors.Is(err, index.ErrCorruptManifest) {
		return nil, nil, nil, err
	}
	known := map[int64]index.Segment{}
	for _, sg := range manSegs {
		known[sg.Start] = sg
	}
	open, err := s.idx.Segments(ctx, ref, hour, hour+time.Hour.Milliseconds())
	if err != nil {
		return nil, nil, nil, err
	}
	for _, sg := range open {
		known[sg.Start] = sg
	}
	for _, o := range listed {
		_, start, err := storage.ParseSegmentKey(o.Key)
		if err != nil {
			continue
		}
		sg, ok := known[start]
		if !ok {
			info, err := s.store.Stat(ctx, o.Key)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, nil, nil, err
			}
			if sg, err = index.SegmentFromObject(info); err != nil {
				// Unreadable metadata: keep it until the hour is
				// wholly expired, then it goes as an orphan.
				kept = append(kept, index.Segment{Start: start, DurationMS: s.cfg.MaxSegmentDuration.Milliseconds()})
				continue
			}
		}
		sg.Size = o.Size
		if pol.Expired(sg, now) {
			del = append(del, pendingKey{key: o.Key, size: o.Size, reason: ReasonRetention})
		} else {
			kept = append(kept, sg)
		}
	}
	return del, kept, manSegs, nil
}

// dropFromManifest rewrites the hour's manifest without the segments about
// to be deleted, before they are: a crash in between leaves unindexed
// objects the next sweep finds by listing, never index entries pointing at
// nothing.
func (s *Sweeper) dropFromManifest(ctx context.Context, ref storage.StreamRef, hour int64, manSegs []index.Segment, del []pendingKey) error {
	if len(manSegs) == 0 {
		return nil
	}
	gone := map[int64]bool{}
	for _, d := range del {
		if _, st, err := storage.ParseSegmentKey(d.key); err == nil {
			gone[st] = true
		}
	}
	var keepMan []index.Segment
	for _, sg := range manSegs {
		if !gone[sg.Start] {
			keepMan = append(keepMan, sg)
		}
	}
	if len(keepMan) == len(manSegs) {
		return nil
	}
	return index.WriteManifest(ctx, s.store, ref, hour, keepMan)
}

// deleteHour deletes del, and manKey when manifest is set, in one request
// and counts what was freed. Keys of a failed request go to ss.pending:
// some may be gone, the next sweep settles them.
func (s *Sweeper) deleteHour(ctx context.Context, ref storage.StreamRef, manKey string, manifest bool, del []pendingKey, ss *streamState) (objs, bytes int64, err error) {
	keys := make([]string, 0, len(del)+1)
	for _, d := range del {
		keys = append(keys, d.key)
	}
	if manifest {
		keys = append(keys, manKey) // missing keys are not an error
	}
	if len(keys) == 0 {
		return 0, 0, nil
	}
	began := time.Now()
	err = s.store.Delete(ctx, keys)
	s.met.latency.Observe(time.Since(began).Seconds())
	if err != nil {
		ss.pending = append(ss.pending, del...)
		return 0, 0, fmt.Errorf("delete: %w", err)
	}
	objs, bytes = s.freed(ctx, ref, del)
	return objs, bytes, nil
}

// freed counts deleted keys in metrics and the meter.
func (s *Sweeper) freed(ctx context.Context, ref storage.StreamRef, del []pendingKey) (objs, bytes int64) {
	for _, d := range del {
		s.met.deleted(d.reason, 1, d.size)
		objs++
		bytes += d.size
	}
	if s.usage != nil && objs > 0 {
		if err := s.usage.Freed(ctx, ref.Stream, bytes, objs); err != nil {
			// The objects are gone; `vigil meter reconcile` fixes the drift.
			s.log.Error("retention: report freed bytes", "stream", ref.Stream, "bytes", bytes, "err", err)
		}
	}
	return objs, bytes
}

// settlePending counts the keys of an earlier failed delete that are gone
// (deleted by that attempt) and forgets the rest, which the next listing
// finds again.
func (s *Sweeper) settlePending(ctx context.Context, ref storage.StreamRef, ss *streamState) (objs, bytes int64, err error) {
	var gone []pendingKey
	for i, p := range ss.pending {
		_, err := s.store.Stat(ctx, p.key)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			gone = append(gone, p)
		case err != nil:
			// Still down: keep what is unsettled, count what is settled.
			ss.pending = ss.pending[i:]
			o, b := s.freed(ctx, ref, gone)
			return o, b, err
		}
	}
	ss.pending = nil
	o, b := s.freed(ctx, ref, gone)
	return o, b, nil
}

// sweepWhole is the bulk path: it lists the stream's segments from the
// oldest, page by page, and deletes every one in an hour that is wholly
// expired (no metadata needed), with those hours' manifests. Keys are
// deleted in requests of exactly the S3 maximum (1,000), up to
// DeleteConcurrency at once, while the next page is listed. It stops at
// the first hour that is not wholly expired.
func (s *Sweeper) sweepWhole(ctx context.Context, ref storage.StreamRef, pol Policy, now time.Time, ss *streamState) (objs, bytes int64, err error) {
	const page = 1000 // a listing page and the most keys of one delete request
	type batch struct {
		seq  int
		del  []pendingKey
		mans []string
	}
	var (
		mu            sync.Mutex
		dObjs, dBytes int64
		delErr        error
		lastOf        = map[int]int64{} // seq of a deleted batch → its last segment start
		g             errgroup.Group
		seq           int
	)
	g.SetLimit(s.cfg.DeleteConcurrency)
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return delErr != nil
	}
	send := func(b batch) {
		g.Go(func() error {
			keys := make([]string, 0, len(b.del)+len(b.mans))
			for _, d := range b.del {
				keys = append(keys, d.key)
			}
			keys = append(keys, b.mans...)
			began := time.Now()
			err := s.store.Delete(ctx, keys)
			s.met.latency.Observe(time.Since(began).Seconds())
			if err != nil {
				mu.Lock()
				ss.pending = append(ss.pending, b.del...)
				delErr = errors.Join(delErr, fmt.Errorf("delete: %w", err))
				mu.Unlock()
				return nil
			}
			o, by := s.freed(ctx, ref, b.del)
			mu.Lock()
			dObjs, dBytes = dObjs+o, dBytes+by
			if len(b.del) > 0 {
				_, lastOf[b.seq], _ = storage.ParseSegmentKey(b.del[len(b.del)-1].key)
			} else {
				lastOf[b.seq] = -1
			}
			mu.Unlock()
			return nil
		})
	}
	after := ""
	var listErr error
	lastHour := int64(-1)
	cur := batch{}
	for !failed() {
		objsPage, err := s.store.List(ctx, ref.SegmentPrefix(), after, page)
		if err != nil {
			listErr = fmt.Errorf("list %s: %w", ref.SegmentPrefix(), err)
			break
		}
		stop := false
		for _, o := range objsPage {
			_, start, err := storage.ParseSegmentKey(o.Key)
			if err != nil {
				continue
			}
			h := storage.HourStart(start)
			if !pol.HourExpired(h, s.cfg.MaxSegmentDuration, now) {
				stop = true
				break
			}
			if h != lastHour {
				cur.mans = append(cur.mans, ref.ManifestKey(time.UnixMilli(h)))
				lastHour = h
			}
			cur.del = append(cur.del, pendingKey{key: o.Key, size: o.Size, reason: ReasonRetention})
			if len(cur.del)+len(cur.mans) >= page {
				cur.seq, seq = seq, seq+1
				send(cur)
				cur = batch{}
			}
		}
		if stop || len(objsPage) < page {
			break
		}
		after = objsPage[len(objsPage)-1].Key
	}
	if len(cur.del) > 0 && !failed() {
		cur.seq, seq = seq, seq+1
		send(cur)
	}
	_ = g.Wait()
	// One index trim for the whole run, up to the last segment of the
	// batches deleted without a gap (a failed batch's entries stay).
	lastDeleted := int64(-1)
	for i := 0; i < seq; i++ {
		last, ok := lastOf[i]
		if !ok {
			break
		}
		lastDeleted = max(lastDeleted, last)
	}
	if lastDeleted >= 0 {
		if err := s.idx.TrimBefore(ctx, ref, lastDeleted+1); err != nil {
			s.log.Warn("retention: trim index", "stream", ref.Stream, "err", err)
		}
	}
	return dObjs, dBytes, errors.Join(listErr, delErr)
}
