// Package embedded is the in-process recording index `vigil serve` uses
// when no Redis is configured. It keeps the open hours' segments and every
// stream's coverage spans in memory, compacts closed hours into the same
// zstd manifests as the Redis index, and rebuilds a stream from storage
// (manifests plus segment objects) on first access, so it survives restarts
// without a file of its own: storage is the durable record.
//
// One process owns an embedded index; two processes over one storage
// directory would each compact without seeing the other's open entries.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/storage"
)

// Options configure an Index.
type Options struct {
	// GapTolerance is the largest gap between two segments that still
	// counts as contiguous coverage (default index.DefaultGapTolerance).
	GapTolerance time.Duration
	// Logger receives rebuild and compaction warnings (default: discard).
	Logger *slog.Logger
	// CacheBytes bounds the decoded manifests of closed hours kept in
	// memory (default index.DefaultManifestCacheBytes; negative: none).
	CacheBytes int64
	// Registerer takes the cache's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Index is the embedded index.
//
// Concurrency: the streams map is guarded by mu; each stream's state by its
// own mutex, which is held across the storage reads and writes of Add into
// a closed hour, of compaction of that stream's hours and of its lazy
// rebuild. So an Add either sees an entry still open or the manifest that
// already holds it, and compaction never races a DropStream. Different
// streams never wait for each other.
type Index struct {
	store storage.Backend
	tol   int64
	log   *slog.Logger
	// cache holds decoded manifests. This process writes and deletes every
	// manifest of its storage (compaction, retention through TrimBefore,
	// purges through DropStream), so it drops them there and needs no
	// version: it passes "".
	cache *index.ManifestCache

	mu      sync.Mutex
	streams map[storage.StreamRef]*stream
}

var _ index.Index = (*Index)(nil)

type stream struct {
	mu      sync.Mutex
	loaded  bool                              // rebuilt from storage
	dropped bool                              // removed by DropStream; a new *stream replaces it
	open    map[int64]map[int64]index.Segment // hour → start → segment
	spans   []index.Span
	// compacted is the latest hour that has (or may have) a manifest, -1
	// for none. Adds into later hours need not read a manifest.
	compacted int64
	// last is the segment Latest answers (index.Later order), lastRecv
	// when Add recorded it (0 after a load from storage).
	last     index.Segment
	hasLast  bool
	lastRecv int64
}

// New returns an embedded index over store.
func New(store storage.Backend, opts Options) *Index {
	if opts.GapTolerance <= 0 {
		opts.GapTolerance = index.DefaultGapTolerance
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = index.DefaultManifestCacheBytes
	}
	return &Index{store: store, tol: opts.GapTolerance.Milliseconds(), log: opts.Logger,
		cache: index.NewManifestCache(opts.CacheBytes, opts.Registerer), streams: make(map[storage.StreamRef]*stream)}
}

// Load rebuilds the given streams from storage now rather than on first
// access, so that Compact also closes hours of streams nobody touched since
// the restart. vigil serve calls it with every registered stream.
func (ix *Index) Load(ctx context.Context, refs []storage.StreamRef) error {
	for _, ref := range refs {
		s, err := ix.lock(ctx, ref)
		if err != nil {
			return err
		}
		s.mu.Unlock()
	}
	return nil
}

// lock returns ref's stream loaded from storage and locked.
func (ix *Index) lock(ctx context.Context, ref storage.StreamRef) (*stream, error) {
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	for {
		ix.mu.Lock()
		s, ok := ix.streams[ref]
		if !ok {
			s = &stream{}
			ix.streams[ref] = s
		}
		ix.mu.Unlock()

		s.mu.Lock()
		if s.dropped {
			s.mu.Unlock()
			continue // dropped meanwhile: take the replacement
		}
		if !s.loaded {
			// A load outlives the request that began it: cut at that
			// request's deadline, it would begin again for the next one
			// and fail every upload in turn. Each store call keeps its
			// own bound.
			if err := ix.load(context.WithoutCancel(ctx), ref, s, false); err != nil {
				s.mu.Unlock()
				return nil, err
			}
		}
		return s, nil
	}
}

// load replaces s's state with what storage holds, read through the
// stream's summary unless fresh. s.mu is held.
func (ix *Index) load(ctx context.Context, ref storage.StreamRef, s *stream, fresh bool) error {
	// A rebuild is for storage changed behind the index's back.
	ix.cache.ForgetStream(ref)
	st, err := index.LoadStream(ctx, ix.store, ref, ix.tol, fresh, ix.log)
	if err != nil {
		return unavailable(err)
	}
	s.open = make(map[int64]map[int64]index.Segment)
	for _, seg := range st.Unindexed {
		h := storage.HourStart(seg.Start)
		if s.open[h] == nil {
			s.open[h] = make(map[int64]index.Segment)
		}
		s.open[h][seg.Start] = seg
	}
	s.spans = st.Spans(ix.tol)
	s.last, s.hasLast = st.Latest()
	s.lastRecv = 0
	s.compacted = st.LastManifestHour()
	if st.Reread > 0 {
		// The next load then reads one object instead of these manifests.
		if err := index.WriteSummary(ctx, ix.store, ref, ix.tol, st.Digests); err != nil {
			ix.log.Warn("embedded: writing the stream summary", "stream", ref.StreamPrefix(), "err", err)
		}
	}
	s.loaded = true
	return nil
}

// unavailable marks storage errors (other than a corrupt manifest) as an
// unavailable index.
func unavailable(err error) error {
	if errors.Is(err, index.ErrCorruptManifest) || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", index.ErrUnavailable, err)
}

// Add implements index.Index.
func (ix *Index) Add(ctx context.Context, ref storage.StreamRef, seg index.Segment) (index.Segment, bool, error) {
	if err := index.ValidateSegment(seg); err != nil {
		return index.Segment{}, false, err
	}
	s, err := ix.lock(ctx, ref)
	if err != nil {
		return index.Segment{}, false, err
	}
	defer s.mu.Unlock()
	h := storage.HourStart(seg.Start)
	if cur, ok := s.open[h][seg.Start]; ok {
		return cur, false, nil
	}
	if h <= s.compacted {
		m, err := index.ReadManifestCached(ctx, ix.store, ix.cache, ref, h, "")
		if err != nil {
			return index.Segment{}, false, unavailable(err)
		}
		if cur, ok := index.FindSegment(m, seg.Start); ok {
			return cur, false, nil
		}
	}
	if s.open[h] == nil {
		s.open[h] = make(map[int64]index.Segment)
	}
	s.open[h][seg.Start] = seg
	s.spans = index.InsertSpan(s.spans, index.Span{Start: seg.Start, End: seg.End()}, ix.tol)
	if !s.hasLast || index.Later(seg, s.last) {
		s.last, s.hasLast, s.lastRecv = seg, true, time.Now().UnixMilli()
	}
	return seg, true, nil
}

// Lookup implements index.Index.
func (ix *Index) Lookup(ctx context.Context, ref storage.StreamRef, start int64) (index.Segment, error) {
	s, err := ix.lock(ctx, ref)
	if err != nil {
		return index.Segment{}, err
	}
	h := storage.HourStart(start)
	cur, ok := s.open[h][start]
	compacted := s.compacted
	s.mu.Unlock()
	if ok {
		return cur, nil
	}
	if h <= compacted {
		m, err := index.ReadManifestCached(ctx, ix.store, ix.cache, ref, h, "")
		if err != nil {
			return index.Segment{}, unavailable(err)
		}
		if cur, ok := index.FindSegment(m, start); ok {
			return cur, nil
		}
	}
	return index.Segment{}, fmt.Errorf("embedded: segment %s%d: %w", ref.StreamPrefix(), start, fs.ErrNotExist)
}

// Segments implements index.Index. Open entries are copied before the
// manifests are read: an hour compacted in between is then seen in one or
// the other (compaction writes the manifest before it drops the entries).
func (ix *Index) Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Segment, error) {
	if to <= from {
		return nil, nil
	}
	s, err := ix.lock(ctx, ref)
	if err != nil {
		return nil, err
	}
	first, last := index.HoursIn(from, to)
	var open []index.Segment
	for h, m := range s.open {
		if h >= first && h <= last {
			open = append(open, slices.Collect(maps.Values(m))...)
		}
	}
	compacted := s.compacted
	s.mu.Unlock()

	var closed []index.Segment
	if first <= compacted {
		closed, err = index.ManifestSegments(ctx, ix.store, ix.cache, nil, ref, from, to)
		if err != nil {
			return nil, unavailable(err)
		}
	}
	if len(open) == 0 {
		return closed, nil // ManifestSegments sorted and cut them already
	}
	// Manifest entries first: on a duplicate start they win.
	return index.Overlapping(append(closed, open...), from, to), nil
}

// Spans implements index.Index.
func (ix *Index) Spans(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Span, error) {
	s, err := ix.lock(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return index.OverlappingSpans(s.spans, from, to), nil
}

// Latest implements index.Index from memory. Coverage that retention
// trimmed away takes the segment with it.
func (ix *Index) Latest(ctx context.Context, ref storage.StreamRef) (index.Segment, int64, error) {
	s, err := ix.lock(ctx, ref)
	if err != nil {
		return index.Segment{}, 0, err
	}
	defer s.mu.Unlock()
	if len(s.spans) == 0 || !s.hasLast {
		return index.Segment{}, 0, fmt.Errorf("embedded: latest of %s: %w", ref.StreamPrefix(), fs.ErrNotExist)
	}
	return s.last, s.lastRecv, nil
}

// OpenCount returns how many open (uncompacted) entries ref has.
func (ix *Index) OpenCount(ctx context.Context, ref storage.StreamRef) (int, error) {
	s, err := ix.lock(ctx, ref)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.open {
		n += len(m)
	}
	return n, nil
}

// Compact implements index.Index for the streams loaded in this process.
// Each stream-hour is merged into its manifest under the stream's lock.
func (ix *Index) Compact(ctx context.Context, cutoff int64) error {
	ix.mu.Lock()
	refs := slices.Collect(maps.Keys(ix.streams))
	ix.mu.Unlock()
	var errs []error
	for _, ref := range refs {
		if err := ix.compactStream(ctx, ref, cutoff); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (ix *Index) compactStream(ctx context.Context, ref storage.StreamRef, cutoff int64) error {
	ix.mu.Lock()
	s, ok := ix.streams[ref]
	ix.mu.Unlock()
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dropped || !s.loaded {
		return nil
	}
	// The digests of the manifests written, for the summary.
	fresh := make(map[int64]index.HourDigest)
	defer func() {
		if len(fresh) > 0 {
			ix.updateSummary(ctx, ref, s, fresh)
		}
	}()
	for _, h := range slices.Sorted(maps.Keys(s.open)) {
		if h+index.HourMS > cutoff {
			break
		}
		manifest, err := index.ReadManifestIfAny(ctx, ix.store, ref, h)
		if err != nil {
			return unavailable(fmt.Errorf("embedded: compact: %w", err))
		}
		merged, changed := index.MergeHour(manifest, slices.Collect(maps.Values(s.open[h])))
		if changed {
			if err := index.WriteManifest(ctx, ix.store, ref, h, merged); err != nil {
				ix.cache.Forget(ref, h, h) // it may have been written
				return unavailable(fmt.Errorf("embedded: compact: %w", err))
			}
			// Readers of the old manifest may not store it; the new one
			// goes in warm (the hour was just viewed live, likely again).
			ix.cache.Forget(ref, h, h)
			ix.cache.Put(ref, h, "", ix.cache.Epoch(), merged)
			// Listed after the write: a crash before the summary is
			// written leaves this manifest unlike its digest, so re-read.
			if info, err := index.ManifestInfo(ctx, ix.store, ref, h); err == nil {
				fresh[h] = index.DigestOf(h, info, merged, ix.tol)
			}
		}
		delete(s.open, h)
		s.compacted = max(s.compacted, h)
	}
	return nil
}

// updateSummary puts fresh digests into ref's summary, read back rather
// than kept (a year of digests is some 2 MB a stream), and drops those of
// hours before the stream's coverage, which retention deleted. s.mu is
// held. A failure only costs the next load some manifest reads: logged.
func (ix *Index) updateSummary(ctx context.Context, ref storage.StreamRef, s *stream, fresh map[int64]index.HourDigest) {
	digests, err := index.ReadSummary(ctx, ix.store, ref, ix.tol, ix.log)
	if err == nil {
		if digests == nil {
			digests = make(map[int64]index.HourDigest)
		}
		for h := range digests {
			if len(s.spans) == 0 || h < storage.HourStart(s.spans[0].Start) {
				delete(digests, h)
			}
		}
		maps.Copy(digests, fresh)
		err = index.WriteSummary(ctx, ix.store, ref, ix.tol, digests)
	}
	if err != nil {
		ix.log.Warn("embedded: updating the stream summary", "stream", ref.StreamPrefix(), "err", err)
	}
}

// Rebuild implements index.Index.
func (ix *Index) Rebuild(ctx context.Context, ref storage.StreamRef) error {
	s, err := ix.lock(ctx, ref)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	return ix.load(ctx, ref, s, true) // storage alone, not the summary
}

// DropStream implements index.Index. Delete the stream's objects first: a
// later access rebuilds the stream from whatever storage still holds.
func (ix *Index) DropStream(ctx context.Context, ref storage.StreamRef) error {
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	ix.mu.Lock()
	s, ok := ix.streams[ref]
	delete(ix.streams, ref)
	ix.mu.Unlock()
	ix.cache.ForgetStream(ref)
	if ok {
		s.mu.Lock()
		s.dropped = true
		s.open, s.spans = nil, nil
		s.mu.Unlock()
	}
	return nil
}

// Ping implements index.Index: the embedded index answers when storage does.
func (ix *Index) Ping(ctx context.Context) error {
	if err := ix.store.Ping(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

// TrimBefore forgets the stream's coverage before before (Unix ms) once
// retention deleted it: spans are cut there and open entries that start
// earlier are dropped. Manifests are objects; the sweeper deletes them.
func (ix *Index) TrimBefore(ctx context.Context, ref storage.StreamRef, before int64) error {
	s, err := ix.lock(ctx, ref)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	// Retention deleted the manifests of the hours before before's and
	// may have rewritten that one.
	ix.cache.Forget(ref, 0, storage.HourStart(before))
	s.spans = index.TrimSpans(s.spans, before)
	if s.hasLast && s.last.End() <= before {
		s.hasLast = false
	}
	for h, m := range s.open {
		for start := range m {
			if start < before {
				delete(m, start)
			}
		}
		if len(m) == 0 {
			delete(s.open, h)
		}
	}
	return nil
}
