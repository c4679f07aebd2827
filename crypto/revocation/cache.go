package revocation

import (
	"sync"

	"github.com/caledger/caledger/projections/twogen"
)

// cached is a signed response, the answer it states and the key that signed
// it (a new delegated responder makes it stale).
type cached struct {
	ans    Answer
	res    result
	signer *responseSigner
}

// cache holds signed responses to requests without a nonce, keyed by the DER
// CertID (which names the issuer, the CertID hash and the serial), in a
// two-generation map (projections/twogen): memory stays bounded however many
// serials clients ask about, and entries still in use move forward on each hit.
type cache struct {
	mu sync.Mutex
	m  *twogen.Map[string, cached]
}

func newCache(entries int) *cache {
	return &cache{m: twogen.New[string, cached](entries)}
}

func (c *cache) get(key string) (cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.Get(key)
}

func (c *cache) put(key string, e cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m.Put(key, e)
}
