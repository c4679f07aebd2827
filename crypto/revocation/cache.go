package revocation

import "sync"

// cached is a signed response and the answer it states.
type cached struct {
	ans Answer
	res result
}

// cache holds signed responses to requests without a nonce, keyed by the DER
// CertID (which names the issuer, the CertID hash and the serial). It keeps two
// generations of at most half its size each: when the current one fills up it
// becomes the old one and the previous old one is dropped, so memory stays
// bounded however many serials clients ask about, and entries still in use
// are moved forward on each hit.
type cache struct {
	mu       sync.Mutex
	half     int
	cur, old map[string]cached
}

func newCache(entries int) *cache {
	half := max(entries/2, 1)
	return &cache{half: half, cur: make(map[string]cached)}
}

func (c *cache) get(key string) (cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cur[key]; ok {
		return e, true
	}
	e, ok := c.old[key]
	if ok {
		c.add(key, e)
	}
	return e, ok
}

func (c *cache) put(key string, e cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.add(key, e)
}

func (c *cache) add(key string, e cached) {
	c.cur[key] = e
	if len(c.cur) >= c.half {
		c.old, c.cur = c.cur, make(map[string]cached, c.half)
	}
}
