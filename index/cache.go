package index

import (
	"container/list"
	"context"
	"errors"
	"io/fs"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/storage"
)

// ManifestCache keeps decoded manifests of closed hours, so that a day's
// segment list or a segment lookup does not fetch and decode them again
// (about 1 ms each for an hour of 6-s segments). It is bounded by an
// estimate of the memory the segments take, evicting the least recently
// used hour.
//
// Nothing stale may be served, so an entry is used only when two checks
// pass:
//   - ver, the version the index passes to Get, equals the one the entry
//     was stored under. The Redis index passes a per-hour generation kept
//     in Redis, which every node that rewrites or deletes the manifest
//     changes; the embedded index, sole writer of its storage, passes "".
//   - Forget and ForgetStream drop entries in this process and raise the
//     stream's epoch; a read that began before (Epoch) cannot store what it
//     read (Put), so a manifest rewritten while it was read never enters.
//
// The segments handed out are shared: callers must not modify them. A nil
// *ManifestCache caches nothing.
type ManifestCache struct {
	mu      sync.Mutex
	max     int64
	used    int64
	clock   uint64     // last epoch handed out
	lru     *list.List // of *cachedHour, most recently used first
	streams map[storage.StreamRef]*cachedStream
	metrics cacheMetrics
}

type cachedStream struct {
	epoch uint64 // of the last Forget; reads begun before it may not Put
	hours map[int64]*list.Element
}

type cachedHour struct {
	ref  storage.StreamRef
	hour int64
	ver  string
	segs []Segment
	cost int64
}

type cacheMetrics struct {
	hits, misses, evictions prometheus.Counter
	bytes                   prometheus.Gauge
}

// DefaultManifestCacheBytes is the cache size vigil serve uses unless told
// otherwise: some 600 hours of 6-s segments.
const DefaultManifestCacheBytes = 64 << 20

// NewManifestCache returns a cache holding up to maxBytes (estimated) of
// decoded segments, with its metrics registered with reg (nil: not
// registered). maxBytes <= 0 returns nil, a cache that holds nothing.
func NewManifestCache(maxBytes int64, reg prometheus.Registerer) *ManifestCache {
	if maxBytes <= 0 {
		return nil
	}
	c := &ManifestCache{max: maxBytes, lru: list.New(), streams: make(map[storage.StreamRef]*cachedStream)}
	c.metrics = cacheMetrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_index_manifest_cache_hits_total",
			Help: "Hour manifests served from the decoded-manifest cache."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_index_manifest_cache_misses_total",
			Help: "Hour manifests read from storage because the cache held no current copy."}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_index_manifest_cache_evictions_total",
			Help: "Hour manifests evicted from the cache to stay within its size."}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_index_manifest_cache_bytes",
			Help: "Estimated memory the cached manifests take."}),
	}
	if reg != nil {
		reg.MustRegister(c.metrics.hits, c.metrics.misses, c.metrics.evictions, c.metrics.bytes)
	}
	return c
}

// segmentCost estimates a decoded segment's memory: the struct and its two
// strings.
func segmentCost(s Segment) int64 { return 128 + int64(len(s.SHA256)+len(s.ContentType)) }

// Epoch is taken before reading a manifest from storage and passed to Put.
func (c *ManifestCache) Epoch() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clock
}

// Get returns the manifest of ref's hour if it is cached under ver.
func (c *ManifestCache) Get(ref storage.StreamRef, hour int64, ver string) ([]Segment, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[ref]; st != nil {
		if el := st.hours[hour]; el != nil && el.Value.(*cachedHour).ver == ver {
			c.lru.MoveToFront(el)
			c.metrics.hits.Inc()
			return el.Value.(*cachedHour).segs, true
		}
	}
	c.metrics.misses.Inc()
	return nil, false
}

// Put stores the manifest of ref's hour, read under ver by a read that
// began at epoch, unless ref was forgotten since.
func (c *ManifestCache) Put(ref storage.StreamRef, hour int64, ver string, epoch uint64, segs []Segment) {
	if c == nil {
		return
	}
	cost := int64(64)
	for _, s := range segs {
		cost += segmentCost(s)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[ref]
	if st != nil && st.epoch > epoch || cost > c.max/4 {
		return // forgotten while it was read, or too big to be worth it
	}
	if st == nil {
		st = &cachedStream{hours: make(map[int64]*list.Element)}
		c.streams[ref] = st
	}
	if el := st.hours[hour]; el != nil {
		c.remove(st, el)
	}
	st.hours[hour] = c.lru.PushFront(&cachedHour{ref: ref, hour: hour, ver: ver, segs: segs, cost: cost})
	c.used += cost
	for c.used > c.max {
		last := c.lru.Back()
		e := last.Value.(*cachedHour)
		c.remove(c.streams[e.ref], last)
		c.metrics.evictions.Inc()
	}
	c.metrics.bytes.Set(float64(c.used))
}

// remove drops el from the cache. c.mu is held.
func (c *ManifestCache) remove(st *cachedStream, el *list.Element) {
	e := el.Value.(*cachedHour)
	c.lru.Remove(el)
	delete(st.hours, e.hour)
	c.used -= e.cost
}

// Forget drops ref's hours in [first, last] (hour starts, Unix ms) and
// keeps reads that began before from storing them: call it after a
// manifest is written or deleted.
func (c *ManifestCache) Forget(ref storage.StreamRef, first, last int64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock++
	st := c.streams[ref]
	if st == nil {
		st = &cachedStream{hours: make(map[int64]*list.Element)}
		c.streams[ref] = st
	}
	st.epoch = c.clock
	for h, el := range st.hours {
		if h >= first && h <= last {
			c.remove(st, el)
		}
	}
	c.metrics.bytes.Set(float64(c.used))
}

// ForgetStream drops every hour of ref.
func (c *ManifestCache) ForgetStream(ref storage.StreamRef) {
	c.Forget(ref, -1<<62, 1<<62)
}

// Version names what a manifest's cached copy is valid for (see
// ManifestCache): ver(hour) is the version an index passes for an hour.
type Version func(hour int64) string

// ReadManifestCached is ReadManifestIfAny through c: the manifest of ref's
// hour, from c when it holds it under ver, else from storage (and then
// kept). A missing manifest is empty and not cached.
func ReadManifestCached(ctx context.Context, store storage.Backend, c *ManifestCache, ref storage.StreamRef, hour int64, ver string) ([]Segment, error) {
	if segs, ok := c.Get(ref, hour, ver); ok {
		return segs, nil
	}
	return readAndKeep(ctx, store, c, ref, hour, ver)
}

// readAndKeep reads the manifest of ref's hour from storage into c.
func readAndKeep(ctx context.Context, store storage.Backend, c *ManifestCache, ref storage.StreamRef, hour int64, ver string) ([]Segment, error) {
	epoch := c.Epoch()
	segs, err := ReadManifest(ctx, store, ref, hour)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c.Put(ref, hour, ver, epoch, segs)
	return segs, nil
}
