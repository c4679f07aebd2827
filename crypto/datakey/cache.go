package datakey

import (
	"container/list"
	"slices"
	"sync"
	"time"

	"github.com/caledger/caledger/domain"
)

// CacheKey names a cached data key.
type CacheKey struct {
	Subject domain.SubjectID
	Group   string
}

type cacheEntry struct {
	key   CacheKey
	val   Key
	added time.Time
}

// Cache is a bounded LRU of unwrapped data keys: unwrapping costs a KEK call (an
// HSM round trip with PKCS#11), so the hot path must not do it. It is safe for
// concurrent use.
//
// A key that was shredded must never be used from the cache, so:
//   - Evict drops a subject's keys, and SetEnabled(false) drops all of them and
//     keeps the cache empty until it is enabled again;
//   - a generation makes a load that raced with an eviction harmless: a loader
//     takes Generation before it reads the key and Add drops the key if the
//     generation moved meanwhile. Otherwise a key read just before its tombstone
//     could be cached just after the eviction, and stay;
//   - with a TTL, an entry older than it is not trusted (Get drops it).
type Cache struct {
	mu  sync.Mutex
	max int
	ttl time.Duration // 0: entries do not expire
	now func() time.Time
	on  bool
	gen uint64
	ll  *list.List // front: most recently used; values are *cacheEntry
	m   map[CacheKey]*list.Element
}

// NewCache returns an enabled cache of at most max keys (0 or less: it caches
// nothing) whose entries expire after ttl (0: never), by the clock now (nil:
// time.Now).
func NewCache(max int, ttl time.Duration, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	return &Cache{max: max, ttl: ttl, now: now, on: true, ll: list.New(), m: make(map[CacheKey]*list.Element)}
}

// Get returns the key cached under k.
func (c *Cache) Get(k CacheKey) (Key, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return Key{}, false
	}
	ce := e.Value.(*cacheEntry)
	if c.ttl > 0 && c.now().Sub(ce.added) > c.ttl {
		// Too old to trust without reading the key again.
		c.ll.Remove(e)
		delete(c.m, k)
		return Key{}, false
	}
	c.ll.MoveToFront(e)
	return ce.val, true
}

// Generation returns the generation a loader must pass to Add.
func (c *Cache) Generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// Add caches v under k unless the cache is disabled or anything was evicted since
// gen was taken.
func (c *Cache) Add(k CacheKey, v Key, gen uint64) {
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

// Evict drops the entries of subject: those of groups, or all when groups is
// empty or holds "*". A full scan is fine: it runs once per shred, over at most
// max entries.
func (c *Cache) Evict(subject domain.SubjectID, groups []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if len(groups) > 0 && !slices.Contains(groups, "*") {
		for _, g := range groups {
			k := CacheKey{subject, g}
			if e, ok := c.m[k]; ok {
				c.ll.Remove(e)
				delete(c.m, k)
			}
		}
		return
	}
	for k, e := range c.m {
		if k.Subject == subject {
			c.ll.Remove(e)
			delete(c.m, k)
		}
	}
}

// SetEnabled turns caching on or off, emptying the cache either way.
func (c *Cache) SetEnabled(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.on = on
	c.ll.Init()
	clear(c.m)
}

// Contains reports whether k is cached (for tests of eviction).
func (c *Cache) Contains(k CacheKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[k]
	return ok
}
