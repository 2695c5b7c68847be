// Package redisindex is the recording index on Redis (go-redis/v9), shared
// by every vigil node.
//
// Data model, per stream (every key carries the hash tag
// {account/camera/stream}, so one stream's keys share a Redis Cluster slot):
//
//	<prefix>{a/c/s}:open:<hour>  hash   start → segment JSON, the open hour's entries
//	<prefix>{a/c/s}:hours        zset   hours that have open entries (score = hour)
//	<prefix>{a/c/s}:spans        zset   coverage spans "start:end" (score = start)
//	<prefix>{a/c/s}:meta         hash   gen (random, new at every compaction), compacted (latest compacted hour),
//	                                    last, last_start, last_end, last_recv (the latest segment, for Latest)
//	<prefix>{a/c/s}:mgen         hash   day (UTC, Unix ms) → generation of that day's manifests,
//	                                    new whenever a node writes, rewrites or deletes one of
//	                                    them (cache validity; per day, so Redis stays small)
//	<prefix>{a/c/s}:lease:<hour> string compaction lease
//	<prefix>streams              set    "a/c/s" of streams with open hours
//
// Closed hours live in storage as zstd manifests (package index), so Redis
// holds per-segment state only for open hours, and per-stream state (spans,
// meta) otherwise.
//
// Concurrency: Add is one Lua script (HSETNX semantics plus the span merge),
// so concurrent Adds of one start, from any number of nodes, record exactly
// one segment. An Add into an hour at or before the compacted watermark
// first reads that hour's manifest; the script accepts the entry only if no
// compaction finished since (gen unchanged; gen is a fresh random value per
// compaction, so it never recurs), else the Add re-reads. A
// compaction holds a per-stream-hour lease (SET NX PX), writes the manifest
// and then, in one script, drops only the entries it merged. Reads take the
// open entries before the manifests, so an hour compacted in between shows
// up in one or the other.
//
// Decoded manifests are cached in each process (index.ManifestCache) under
// the generation of their day from mgen, or "s:"+gen for a day without one
// (written before mgen existed, or trimmed). Compaction renews the day's
// generation after writing a manifest, TrimBefore drops the trimmed days'
// and renews gen, and Rebuild and DropStream replace them all; each read
// takes the generations before it reads a manifest, so a copy read before
// a change is never used after it, on any node.
//
// If Redis loses its data, run Rebuild for every stream (vigil index
// rebuild): the watermark that tells Add to check manifests is in Redis.
package redisindex

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/storage"
)

// Options configure an Index.
type Options struct {
	// KeyPrefix starts every key (default "vigil:idx:").
	KeyPrefix string
	// GapTolerance is the largest gap between two segments that still
	// counts as contiguous coverage (default index.DefaultGapTolerance).
	// Every node must use the same value.
	GapTolerance time.Duration
	// LeaseTTL bounds how long one compactor may hold a stream-hour
	// (default 1 minute). It must exceed a manifest read plus write.
	LeaseTTL time.Duration
	// Logger receives compaction warnings (default: discard).
	Logger *slog.Logger
	// ManifestCache is how many decoded manifests Add keeps for segments
	// into closed hours (default 64; negative disables).
	ManifestCache int
	// CacheBytes bounds the decoded manifests of closed hours that
	// Segments and Lookup keep (default index.DefaultManifestCacheBytes;
	// negative: none).
	CacheBytes int64
	// Registerer takes that cache's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Index is the Redis index. It is safe for concurrent use by any number of
// goroutines and nodes.
type Index struct {
	rdb    redis.UniversalClient
	store  storage.Backend
	prefix string
	tol    int64
	lease  time.Duration
	log    *slog.Logger
	cache  *manifestCache       // for Add
	reads  *index.ManifestCache // for Segments and Lookup
}

var _ index.Index = (*Index)(nil)

// New returns an index on client that compacts into store.
func New(client redis.UniversalClient, store storage.Backend, opts Options) *Index {
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "vigil:idx:"
	}
	if opts.GapTolerance <= 0 {
		opts.GapTolerance = index.DefaultGapTolerance
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ManifestCache == 0 {
		opts.ManifestCache = 64
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = index.DefaultManifestCacheBytes
	}
	return &Index{rdb: client, store: store, prefix: opts.KeyPrefix, tol: opts.GapTolerance.Milliseconds(),
		lease: opts.LeaseTTL, log: opts.Logger, cache: newManifestCache(opts.ManifestCache),
		reads: index.NewManifestCache(opts.CacheBytes, opts.Registerer)}
}

func member(ref storage.StreamRef) string { return ref.Account + "/" + ref.Camera + "/" + ref.Stream }

func parseMember(m string) (storage.StreamRef, error) {
	p := strings.Split(m, "/")
	if len(p) != 3 {
		return storage.StreamRef{}, fmt.Errorf("redisindex: bad stream member %q", m)
	}
	ref := storage.StreamRef{Account: p[0], Camera: p[1], Stream: p[2]}
	return ref, ref.Validate()
}

func (ix *Index) tag(ref storage.StreamRef) string { return ix.prefix + "{" + member(ref) + "}" }
func (ix *Index) openKey(ref storage.StreamRef, hour int64) string {
	return ix.tag(ref) + ":open:" + strconv.FormatInt(hour, 10)
}
func (ix *Index) hoursKey(ref storage.StreamRef) string { return ix.tag(ref) + ":hours" }
func (ix *Index) spansKey(ref storage.StreamRef) string { return ix.tag(ref) + ":spans" }
func (ix *Index) metaKey(ref storage.StreamRef) string  { return ix.tag(ref) + ":meta" }
func (ix *Index) mgenKey(ref storage.StreamRef) string  { return ix.tag(ref) + ":mgen" }
func (ix *Index) leaseKey(ref storage.StreamRef, hour int64) string {
	return ix.tag(ref) + ":lease:" + strconv.FormatInt(hour, 10)
}
func (ix *Index) streamsKey() string { return ix.prefix + "streams" }

// fail wraps an error of Redis or storage. Everything but a corrupt
// manifest or a cancelled request means the index cannot answer now.
func fail(op string, ref storage.StreamRef, err error) error {
	if errors.Is(err, index.ErrCorruptManifest) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("redisindex: %s %s: %w", op, member(ref), err)
	}
	return fmt.Errorf("redisindex: %s %s: %w: %w", op, member(ref), index.ErrUnavailable, err)
}

func decodeSeg(v string) (index.Segment, error) {
	var s index.Segment
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return index.Segment{}, fmt.Errorf("redisindex: bad entry %q: %w", v, err)
	}
	return s, nil
}

// Add implements index.Index.
func (ix *Index) Add(ctx context.Context, ref storage.StreamRef, seg index.Segment) (index.Segment, bool, error) {
	if err := ref.Validate(); err != nil {
		return index.Segment{}, false, fmt.Errorf("redisindex: %w", err)
	}
	if err := index.ValidateSegment(seg); err != nil {
		return index.Segment{}, false, err
	}
	val, err := json.Marshal(seg)
	if err != nil {
		return index.Segment{}, false, err
	}
	hour := storage.HourStart(seg.Start)
	keys := []string{ix.openKey(ref, hour), ix.hoursKey(ref), ix.spansKey(ref), ix.metaKey(ref)}
	expect := ""
	// Each retry means a compaction of this stream finished meanwhile, which
	// happens about once an hour; a handful of rounds is plenty.
	for range 8 {
		res, err := addScript.Run(ctx, ix.rdb, keys, seg.Start, val, hour, expect, seg.Start, seg.End(), ix.tol, time.Now().UnixMilli()).Slice()
		if err != nil {
			return index.Segment{}, false, fail("add", ref, err)
		}
		code, _ := res[0].(int64)
		switch code {
		case 0: // already open
			cur, err := decodeSeg(fmt.Sprint(res[1]))
			if err != nil {
				return index.Segment{}, false, err
			}
			// Register again in case the first Add failed after its script.
			if err := ix.rdb.SAdd(ctx, ix.streamsKey(), member(ref)).Err(); err != nil {
				return index.Segment{}, false, fail("add", ref, err)
			}
			return cur, false, nil
		case 1: // added
			if newHour, _ := res[1].(int64); newHour == 1 {
				if err := ix.rdb.SAdd(ctx, ix.streamsKey(), member(ref)).Err(); err != nil {
					return index.Segment{}, false, fail("add", ref, err)
				}
			}
			return seg, true, nil
		case 2: // the hour may have a manifest
			expect = fmt.Sprint(res[1])
			m, err := ix.manifestAt(ctx, ref, hour, expect)
			if err != nil {
				return index.Segment{}, false, fail("add", ref, err)
			}
			if cur, ok := index.FindSegment(m, seg.Start); ok {
				return cur, false, nil
			}
		default:
			return index.Segment{}, false, fmt.Errorf("redisindex: add: unexpected script result %v", res)
		}
	}
	return index.Segment{}, false, fail("add", ref, errors.New("compactions keep racing this add"))
}

// manifestAt returns the manifest of ref's hour as of the stream's gen.
func (ix *Index) manifestAt(ctx context.Context, ref storage.StreamRef, hour int64, gen string) ([]index.Segment, error) {
	key := ref.ManifestKey(time.UnixMilli(hour))
	if segs, ok := ix.cache.get(key, gen); ok {
		return segs, nil
	}
	segs, err := index.ReadManifestIfAny(ctx, ix.store, ref, hour)
	if err != nil {
		return nil, err
	}
	ix.cache.put(key, gen, segs)
	return segs, nil
}

const dayMS = 24 * index.HourMS

// dayOf is the start of the UTC day of ms.
func dayOf(ms int64) int64 { return ms - ms%dayMS }

// versions queues on pipe the reads of ref's generations for the days from
// the one of first to the one of last, and returns what names the version
// of each hour's manifest once pipe ran: its day's generation, else the
// stream's (see the package comment). A range of more than versionDays
// days reads the whole (per stream, per stored day) hash instead of one
// field per day: a caller may ask for any range, even all of time. The
// function is for one goroutine.
func (ix *Index) versions(ctx context.Context, pipe redis.Pipeliner, ref storage.StreamRef, first, last int64) index.Version {
	gen := pipe.HGet(ctx, ix.metaKey(ref), "gen")
	var days []int64
	var some *redis.SliceCmd
	var all *redis.MapStringStringCmd
	if n := (dayOf(last)-dayOf(first))/dayMS + 1; n > versionDays {
		all = pipe.HGetAll(ctx, ix.mgenKey(ref))
	} else {
		fields := make([]string, 0, n)
		for d := dayOf(first); d <= last; d += dayMS {
			days = append(days, d)
			fields = append(fields, strconv.FormatInt(d, 10))
		}
		some = pipe.HMGet(ctx, ix.mgenKey(ref), fields...)
	}
	var byDay map[int64]string // filled at the first call, after pipe ran
	return func(hour int64) string {
		if byDay == nil {
			byDay = map[int64]string{}
			if all != nil {
				for k, v := range all.Val() {
					if d, err := strconv.ParseInt(k, 10, 64); err == nil {
						byDay[d] = "d:" + v
					}
				}
			} else {
				for i, v := range some.Val() {
					if s, ok := v.(string); ok && i < len(days) {
						byDay[days[i]] = "d:" + s
					}
				}
			}
		}
		if v, ok := byDay[dayOf(hour)]; ok {
			return v
		}
		return "s:" + gen.Val()
	}
}

// versionDays is the widest range of days whose generations are read one
// field each.
const versionDays = 62

// Lookup implements index.Index.
func (ix *Index) Lookup(ctx context.Context, ref storage.StreamRef, start int64) (index.Segment, error) {
	if err := ref.Validate(); err != nil {
		return index.Segment{}, fmt.Errorf("redisindex: %w", err)
	}
	hour := storage.HourStart(start)
	// The entry, then the stream's meta and its compacted watermark, in one
	// pipeline (one slot, run in order): when Redis holds the stream, an
	// hour after the watermark has no manifest (Add relies on the same
	// rule), so a new segment's lookup costs no storage read. The watermark
	// only rises and is read after the entry, so an entry compacted away in
	// between is found in its manifest. Without any meta (a stream's first
	// segment, or Redis lost its data) the manifest is read as before.
	pipe := ix.rdb.Pipeline()
	open := pipe.HGet(ctx, ix.openKey(ref, hour), strconv.FormatInt(start, 10))
	meta := pipe.HLen(ctx, ix.metaKey(ref))
	wm := pipe.HGet(ctx, ix.metaKey(ref), "compacted")
	ver := ix.versions(ctx, pipe, ref, hour, hour)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return index.Segment{}, fail("lookup", ref, err)
	}
	v, err := open.Result()
	switch {
	case err == nil:
		return decodeSeg(v)
	case !errors.Is(err, redis.Nil):
		return index.Segment{}, fail("lookup", ref, err)
	}
	notFound := fmt.Errorf("redisindex: segment %s %d: %w", member(ref), start, fs.ErrNotExist)
	w, err := wm.Int64()
	switch {
	case meta.Val() == 0: // no state for the stream: storage decides
	case errors.Is(err, redis.Nil):
		return index.Segment{}, notFound // nothing compacted yet
	case err != nil:
		return index.Segment{}, fail("lookup", ref, err)
	case hour > w:
		return index.Segment{}, notFound
	}
	m, err := index.ReadManifestCached(ctx, ix.store, ix.reads, ref, hour, ver(hour))
	if err != nil {
		return index.Segment{}, fail("lookup", ref, err)
	}
	if cur, ok := index.FindSegment(m, start); ok {
		return cur, nil
	}
	return index.Segment{}, notFound
}

// openSegments returns the open entries of ref's hours in [first, last].
// with, when not nil, adds commands to the pipeline of its first round trip.
func (ix *Index) openSegments(ctx context.Context, ref storage.StreamRef, first, last int64, with func(redis.Pipeliner)) ([]index.Segment, error) {
	p := ix.rdb.Pipeline()
	hoursCmd := p.ZRangeByScore(ctx, ix.hoursKey(ref), &redis.ZRangeBy{
		Min: strconv.FormatInt(first, 10), Max: strconv.FormatInt(last, 10),
	})
	if with != nil {
		with(p)
	}
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	hours, err := hoursCmd.Result()
	if err != nil {
		return nil, err
	}
	if len(hours) == 0 {
		return nil, nil
	}
	pipe := ix.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(hours))
	for i, h := range hours {
		cmds[i] = pipe.HVals(ctx, ix.tag(ref)+":open:"+h)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	var segs []index.Segment
	for _, c := range cmds {
		for _, v := range c.Val() {
			s, err := decodeSeg(v)
			if err != nil {
				return nil, err
			}
			segs = append(segs, s)
		}
	}
	return segs, nil
}

// Segments implements index.Index.
func (ix *Index) Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Segment, error) {
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("redisindex: %w", err)
	}
	if to <= from {
		return nil, nil
	}
	first, last := index.HoursIn(from, to)
	var ver index.Version
	open, err := ix.openSegments(ctx, ref, first, last, func(pipe redis.Pipeliner) { ver = ix.versions(ctx, pipe, ref, first, last) })
	if err != nil {
		return nil, fail("segments", ref, err)
	}
	closed, err := index.ManifestSegments(ctx, ix.store, ix.reads, ver, ref, from, to)
	if err != nil {
		return nil, fail("segments", ref, err)
	}
	if len(open) == 0 {
		return closed, nil // ManifestSegments sorted and cut them already
	}
	// Manifest entries first: on a duplicate start they win.
	return index.Overlapping(append(closed, open...), from, to), nil
}

// Spans implements index.Index.
func (ix *Index) Spans(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Span, error) {
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("redisindex: %w", err)
	}
	if to <= from {
		return nil, nil
	}
	key := ix.spansKey(ref)
	pipe := ix.rdb.Pipeline()
	// Spans are disjoint: at most one starts before from and reaches into
	// the range; the others start inside it.
	before := pipe.ZRevRangeByScore(ctx, key, &redis.ZRangeBy{Max: "(" + strconv.FormatInt(from, 10), Min: "-inf", Count: 1})
	inside := pipe.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: strconv.FormatInt(from, 10), Max: "(" + strconv.FormatInt(to, 10)})
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fail("spans", ref, err)
	}
	var spans []index.Span
	for _, m := range append(before.Val(), inside.Val()...) {
		sp, err := parseSpan(m)
		if err != nil {
			return nil, err
		}
		if sp.End > from && sp.Start < to {
			spans = append(spans, sp)
		}
	}
	return spans, nil
}

// Latest implements index.Index: the last span and the meta hash, one
// round trip. A stream whose meta lacks the latest segment (written before
// Latest existed, or by such a node since) is answered from Segments.
func (ix *Index) Latest(ctx context.Context, ref storage.StreamRef) (index.Segment, int64, error) {
	if err := ref.Validate(); err != nil {
		return index.Segment{}, 0, fmt.Errorf("redisindex: %w", err)
	}
	pipe := ix.rdb.Pipeline()
	spanCmd := pipe.ZRevRange(ctx, ix.spansKey(ref), 0, 0)
	metaCmd := pipe.HMGet(ctx, ix.metaKey(ref), "last", "last_recv")
	if _, err := pipe.Exec(ctx); err != nil {
		return index.Segment{}, 0, fail("latest", ref, err)
	}
	if len(spanCmd.Val()) == 0 {
		return index.Segment{}, 0, fmt.Errorf("redisindex: latest of %s: %w", member(ref), fs.ErrNotExist)
	}
	span, err := parseSpan(spanCmd.Val()[0])
	if err != nil {
		return index.Segment{}, 0, err
	}
	if v, ok := metaCmd.Val()[0].(string); ok {
		seg, err := decodeSeg(v)
		if err == nil && seg.End() == span.End {
			recv, _ := strconv.ParseInt(fmt.Sprint(metaCmd.Val()[1]), 10, 64)
			return seg, recv, nil
		}
	}
	segs, err := ix.Segments(ctx, ref, span.End-1, span.End)
	if err != nil {
		return index.Segment{}, 0, err
	}
	seg, ok := index.LatestOf(segs)
	if !ok {
		return index.Segment{}, 0, fmt.Errorf("redisindex: latest of %s: %w", member(ref), fs.ErrNotExist)
	}
	return seg, 0, nil
}

func parseSpan(m string) (index.Span, error) {
	s, e, ok := strings.Cut(m, ":")
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return index.Span{}, fmt.Errorf("redisindex: bad span %q", m)
	}
	return index.Span{Start: start, End: end}, nil
}

func spanMember(s index.Span) string {
	return strconv.FormatInt(s.Start, 10) + ":" + strconv.FormatInt(s.End, 10)
}

// OpenCount returns how many open (uncompacted) entries ref has in Redis.
func (ix *Index) OpenCount(ctx context.Context, ref storage.StreamRef) (int, error) {
	segs, err := ix.openSegments(ctx, ref, 0, 1<<62, nil)
	if err != nil {
		return 0, fail("open count", ref, err)
	}
	return len(segs), nil
}

// Compact implements index.Index. Any number of nodes may compact at once:
// the lease gives each stream-hour to one of them.
func (ix *Index) Compact(ctx context.Context, cutoff int64) error {
	var errs []error
	iter := ix.rdb.SScan(ctx, ix.streamsKey(), 0, "", 1000).Iterator()
	for iter.Next(ctx) {
		ref, err := parseMember(iter.Val())
		if err != nil {
			ix.log.Warn("redisindex: compact: skipping bad stream member", "member", iter.Val(), "err", err)
			continue
		}
		if err := ix.compactStream(ctx, ref, cutoff); err != nil {
			if ctx.Err() != nil {
				return err
			}
			ix.log.Warn("redisindex: compact failed", "stream", member(ref), "err", err)
			errs = append(errs, err)
		}
	}
	if err := iter.Err(); err != nil {
		errs = append(errs, fmt.Errorf("redisindex: compact: %w: %w", index.ErrUnavailable, err))
	}
	return errors.Join(errs...)
}

func (ix *Index) compactStream(ctx context.Context, ref storage.StreamRef, cutoff int64) error {
	hours, err := ix.rdb.ZRangeByScore(ctx, ix.hoursKey(ref), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(cutoff-index.HourMS, 10),
	}).Result()
	if err != nil {
		return fail("compact", ref, err)
	}
	for _, h := range hours {
		hour, err := strconv.ParseInt(h, 10, 64)
		if err != nil {
			return fmt.Errorf("redisindex: compact %s: bad hour %q", member(ref), h)
		}
		if err := ix.compactHour(ctx, ref, hour); err != nil {
			return err
		}
	}
	// Unregister a stream with nothing open. Remove first, then look: an Add
	// that opens an hour after the look registers the stream again itself.
	if err := ix.rdb.SRem(ctx, ix.streamsKey(), member(ref)).Err(); err != nil {
		return fail("compact", ref, err)
	}
	n, err := ix.rdb.ZCard(ctx, ix.hoursKey(ref)).Result()
	if err == nil && n > 0 {
		err = ix.rdb.SAdd(ctx, ix.streamsKey(), member(ref)).Err()
	}
	if err != nil {
		return fail("compact", ref, err)
	}
	return nil
}

func (ix *Index) compactHour(ctx context.Context, ref storage.StreamRef, hour int64) (err error) {
	token := newToken()
	lease := ix.leaseKey(ref, hour)
	ok, err := ix.rdb.SetNX(ctx, lease, token, ix.lease).Result()
	if err != nil {
		return fail("compact", ref, err)
	}
	if !ok {
		return nil // another compactor has this hour
	}
	finished := false
	defer func() {
		if !finished {
			// Best effort: the lease expires anyway.
			_ = releaseScript.Run(context.WithoutCancel(ctx), ix.rdb, []string{lease}, token).Err()
		}
	}()

	fields, err := ix.rdb.HGetAll(ctx, ix.openKey(ref, hour)).Result()
	if err != nil {
		return fail("compact", ref, err)
	}
	open := make([]index.Segment, 0, len(fields))
	args := []any{token, hour, dayOf(hour)}
	for f, v := range fields {
		s, err := decodeSeg(v)
		if err != nil {
			ix.log.Warn("redisindex: compact: leaving a bad entry open", "stream", member(ref), "field", f, "err", err)
			continue
		}
		open = append(open, s)
		args = append(args, f, v)
	}
	if len(open) > 0 {
		manifest, err := index.ReadManifestIfAny(ctx, ix.store, ref, hour)
		if err != nil {
			return fail("compact", ref, err)
		}
		merged, changed := index.MergeHour(manifest, open)
		if changed {
			// Narrow the window in which a compactor whose lease expired
			// overwrites a newer manifest: check the lease right before.
			if cur, err := ix.rdb.Get(ctx, lease).Result(); err != nil || cur != token {
				return fail("compact", ref, fmt.Errorf("lease on hour %d lost", hour))
			}
			if err := index.WriteManifest(ctx, ix.store, ref, hour, merged); err != nil {
				return fail("compact", ref, err)
			}
		}
	}
	keys := []string{ix.openKey(ref, hour), ix.hoursKey(ref), ix.metaKey(ref), lease, ix.mgenKey(ref)}
	done, err := finishScript.Run(ctx, ix.rdb, keys, args...).Int()
	if err != nil {
		return fail("compact", ref, err)
	}
	finished = true
	if done == 0 {
		// The lease expired: the entries stay open and the next compaction
		// merges them again (merging is idempotent).
		return fail("compact", ref, fmt.Errorf("lease on hour %d lost", hour))
	}
	return nil
}

// newToken returns a random, never recurring lease token and gen value.
func newToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Rebuild implements index.Index. It replaces the stream's keys in one
// transaction that fails and retries if an Add opens an hour meanwhile.
func (ix *Index) Rebuild(ctx context.Context, ref storage.StreamRef) error {
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("redisindex: %w", err)
	}
	st, err := index.ScanStorage(ctx, ix.store, ref, ix.log)
	if err != nil {
		return fail("rebuild", ref, err)
	}
	all := st.All()
	spans := index.SpansOf(all, ix.tol)
	last, hasLast := index.LatestOf(all)
	byHour := st.UnindexedByHour()
	wm := st.LastManifestHour()

	err = ix.replace(ctx, ref, func(pipe redis.Pipeliner) error {
		if wm >= 0 {
			pipe.HSet(ctx, ix.metaKey(ref), "compacted", wm)
		} else {
			pipe.HDel(ctx, ix.metaKey(ref), "compacted")
		}
		// A new gen makes an Add that read a manifest before look again,
		// and new hour generations make every node read them again.
		pipe.HSet(ctx, ix.metaKey(ref), "gen", newToken())
		if len(st.Manifests) > 0 {
			gens := make([]any, 0, 2*len(st.Manifests))
			for h := range st.Manifests {
				gens = append(gens, strconv.FormatInt(dayOf(h), 10), newToken())
			}
			pipe.HSet(ctx, ix.mgenKey(ref), gens...)
		}
		pipe.HDel(ctx, ix.metaKey(ref), "last", "last_start", "last_end", "last_recv")
		if hasLast {
			v, err := json.Marshal(last)
			if err != nil {
				return err
			}
			pipe.HSet(ctx, ix.metaKey(ref), "last", string(v), "last_start", last.Start, "last_end", last.End())
		}
		for h, segs := range byHour {
			vals := make([]any, 0, 2*len(segs))
			for _, s := range segs {
				v, err := json.Marshal(s)
				if err != nil {
					return err
				}
				vals = append(vals, strconv.FormatInt(s.Start, 10), string(v))
			}
			pipe.HSet(ctx, ix.openKey(ref, h), vals...)
			pipe.ZAdd(ctx, ix.hoursKey(ref), redis.Z{Score: float64(h), Member: strconv.FormatInt(h, 10)})
		}
		const batch = 1000
		for i := 0; i < len(spans); i += batch {
			zs := make([]redis.Z, 0, batch)
			for _, sp := range spans[i:min(i+batch, len(spans))] {
				zs = append(zs, redis.Z{Score: float64(sp.Start), Member: spanMember(sp)})
			}
			pipe.ZAdd(ctx, ix.spansKey(ref), zs...)
		}
		return nil
	}, false)
	if err != nil {
		return err
	}
	if len(byHour) > 0 {
		if err := ix.rdb.SAdd(ctx, ix.streamsKey(), member(ref)).Err(); err != nil {
			return fail("rebuild", ref, err)
		}
	}
	return nil
}

// replace deletes the stream's keys and runs fill in the same MULTI/EXEC,
// watching the hours key so that a concurrent Add of a new hour retries it.
func (ix *Index) replace(ctx context.Context, ref storage.StreamRef, fill func(redis.Pipeliner) error, dropMeta bool) error {
	hoursKey := ix.hoursKey(ref)
	txf := func(tx *redis.Tx) error {
		hours, err := tx.ZRange(ctx, hoursKey, 0, -1).Result()
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, h := range hours {
				pipe.Del(ctx, ix.tag(ref)+":open:"+h)
			}
			pipe.Del(ctx, hoursKey, ix.spansKey(ref), ix.mgenKey(ref))
			if dropMeta {
				pipe.Del(ctx, ix.metaKey(ref))
			}
			if fill != nil {
				return fill(pipe)
			}
			return nil
		})
		return err
	}
	var err error
	for range 10 {
		err = ix.rdb.Watch(ctx, txf, hoursKey)
		if !errors.Is(err, redis.TxFailedErr) {
			break
		}
	}
	if err != nil {
		return fail("replace", ref, err)
	}
	return nil
}

// DropStream implements index.Index: it deletes every key of the stream.
// Delete the stream's objects first; an in-flight compaction could
// otherwise still write a manifest for it.
func (ix *Index) DropStream(ctx context.Context, ref storage.StreamRef) error {
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("redisindex: %w", err)
	}
	if err := ix.replace(ctx, ref, nil, true); err != nil {
		return err
	}
	if err := ix.rdb.SRem(ctx, ix.streamsKey(), member(ref)).Err(); err != nil {
		return fail("drop", ref, err)
	}
	return nil
}

// Ping implements index.Index.
func (ix *Index) Ping(ctx context.Context) error {
	if err := ix.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisindex: ping: %w: %w", index.ErrUnavailable, err)
	}
	return nil
}

// TrimBefore forgets the stream's coverage before before (Unix ms) once
// retention deleted it: spans are cut there and open entries that start
// earlier are dropped. Manifests are objects; the sweeper deletes them.
func (ix *Index) TrimBefore(ctx context.Context, ref storage.StreamRef, before int64) error {
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("redisindex: %w", err)
	}
	if err := trimScript.Run(ctx, ix.rdb, []string{ix.spansKey(ref)}, before).Err(); err != nil {
		return fail("trim", ref, err)
	}
	// Retention deleted the manifests of the hours before before's and may
	// have rewritten that one: no node may use its copy of them again.
	if err := trimGenScript.Run(ctx, ix.rdb, []string{ix.mgenKey(ref), ix.metaKey(ref)}, dayOf(storage.HourStart(before)), newToken()).Err(); err != nil {
		return fail("trim", ref, err)
	}
	hours, err := ix.rdb.ZRangeByScore(ctx, ix.hoursKey(ref), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(before, 10)}).Result()
	if err != nil {
		return fail("trim", ref, err)
	}
	for _, h := range hours {
		hour, err := strconv.ParseInt(h, 10, 64)
		if err != nil {
			continue
		}
		keys := []string{ix.openKey(ref, hour), ix.hoursKey(ref)}
		if err := trimHourScript.Run(ctx, ix.rdb, keys, before, h).Err(); err != nil {
			return fail("trim", ref, err)
		}
	}
	return nil
}
