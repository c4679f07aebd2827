package sharedvault

import (
	"container/list"
	"sync"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/caledger/caledger/domain"
)

type cacheKey struct {
	subject domain.SubjectID
	group   string
}

// dataKey is an unwrapped data key, ready to use.
type dataKey struct {
	aead tink.AEAD
	// id is the keyset's primary key id: what Sealed.KeyID holds.
	id uint32
}

type cacheEntry struct {
	key   cacheKey
	val   dataKey
	added time.Time
}

// cache is a bounded LRU of unwrapped data keys that is only on while Run follows
// the store: a cached key is used without reading its stream, so only a node that
// hears of tombstones may keep keys.
//
// gen makes a load that raced with an eviction harmless: a loader takes gen before
// it reads the key stream and add drops its key if gen moved meanwhile (an
// eviction, or caching turned off and on). Otherwise a key read just before a
// tombstone was appended could be cached just after Run evicted it, and stay.
type cache struct {
	mu  sync.Mutex
	max int
	ttl time.Duration
	now func() time.Time
	on  bool
	gen uint64
	ll  *list.List // front: most recently used; values are *cacheEntry
	m   map[cacheKey]*list.Element
}

func newCache(max int, ttl time.Duration, now func() time.Time) *cache {
	return &cache{max: max, ttl: ttl, now: now, ll: list.New(), m: make(map[cacheKey]*list.Element)}
}

func (c *cache) get(k cacheKey) (dataKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return dataKey{}, false
	}
	ce := e.Value.(*cacheEntry)
	if c.now().Sub(ce.added) > c.ttl {
		// Too old to trust without reading its stream again.
		c.ll.Remove(e)
		delete(c.m, k)
		return dataKey{}, false
	}
	c.ll.MoveToFront(e)
	return ce.val, true
}

// generation returns the generation a loader must pass to add.
func (c *cache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// add caches v unless caching is off or anything was evicted since gen was taken.
func (c *cache) add(k cacheKey, v dataKey, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on || c.max <= 0 || gen != c.gen {
		return
	}
	if e, ok := c.m[k]; ok {
		ce := e.Value.(*cacheEntry)
		ce.val, ce.added = v, c.now()
		c.ll.MoveToFront(e)
		return
	}
	c.m[k] = c.ll.PushFront(&cacheEntry{key: k, val: v, added: c.now()})
	for c.ll.Len() > c.max {
		e := c.ll.Back()
		c.ll.Remove(e)
		delete(c.m, e.Value.(*cacheEntry).key)
	}
}

// evict drops the entries of subject: those of groups, or all when groups is empty
// or holds "*". A full scan is fine: it runs once per tombstone, over at most max
// entries.
func (c *cache) evict(subject domain.SubjectID, groups []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	all := len(groups) == 0
	for _, g := range groups {
		if g == "*" {
			all = true
		}
	}
	if !all {
		for _, g := range groups {
			k := cacheKey{subject, g}
			if e, ok := c.m[k]; ok {
				c.ll.Remove(e)
				delete(c.m, k)
			}
		}
		return
	}
	for k, e := range c.m {
		if k.subject == subject {
			c.ll.Remove(e)
			delete(c.m, k)
		}
	}
}

// enable turns caching on or off, emptying the cache either way.
func (c *cache) enable(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.on = on
	c.ll.Init()
	clear(c.m)
}

func (c *cache) has(k cacheKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[k]
	return ok
}
