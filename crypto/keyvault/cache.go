package keyvault

import (
	"container/list"
	"sync"

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
	key cacheKey
	val dataKey
}

// cache is a bounded LRU of unwrapped data keys. Unwrapping costs a KEK call (an HSM
// round trip with PKCS#11), so the hot path must not do it.
type cache struct {
	mu  sync.Mutex
	max int
	ll  *list.List // front: most recently used; values are *cacheEntry
	m   map[cacheKey]*list.Element
}

func newCache(max int) *cache {
	return &cache{max: max, ll: list.New(), m: make(map[cacheKey]*list.Element)}
}

func (c *cache) get(k cacheKey) (dataKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return dataKey{}, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*cacheEntry).val, true
}

func (c *cache) add(k cacheKey, v dataKey) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		e.Value.(*cacheEntry).val = v
		c.ll.MoveToFront(e)
		return
	}
	c.m[k] = c.ll.PushFront(&cacheEntry{key: k, val: v})
	for c.ll.Len() > c.max {
		e := c.ll.Back()
		c.ll.Remove(e)
		delete(c.m, e.Value.(*cacheEntry).key)
	}
}

// evict drops the entries of subject: those of groups, or all when groups is empty.
// A full scan is fine: it runs once per Shred, over at most max entries.
func (c *cache) evict(subject domain.SubjectID, groups []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(groups) > 0 {
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

func (c *cache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	clear(c.m)
}
