package redisindex

import (
	"container/list"
	"sync"

	"github.com/vigilcloud/vigil/index"
)

// manifestCache keeps recently read manifests for Adds into closed hours (a
// backlog drain adds hundreds of segments to one closed hour). An entry is
// valid only for the stream's gen it was read under: every compaction and
// rebuild bumps gen, and only they write manifests.
type manifestCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *cacheEntry, most recent first
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key  string // manifest key
	gen  string
	segs []index.Segment
}

func newManifestCache(max int) *manifestCache {
	return &manifestCache{max: max, order: list.New(), byKey: make(map[string]*list.Element)}
}

// get returns the manifest of key read under gen.
func (c *manifestCache) get(key, gen string) ([]index.Segment, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if e.gen != gen {
		return nil, false
	}
	c.order.MoveToFront(el)
	return e.segs, true
}

func (c *manifestCache) put(key, gen string, segs []index.Segment) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		el.Value = &cacheEntry{key: key, gen: gen, segs: segs}
		c.order.MoveToFront(el)
		return
	}
	c.byKey[key] = c.order.PushFront(&cacheEntry{key: key, gen: gen, segs: segs})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*cacheEntry).key)
	}
}
