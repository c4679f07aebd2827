package projections

import (
	"sync"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections/twogen"
)

// DefaultStatusCacheEntries bounds the answers CertificateStatus keeps in
// memory when Options.StatusCacheEntries is 0.
const DefaultStatusCacheEntries = 100_000

// statusCache keeps CertificateStatus answers in memory, so that an OCSP
// responder asked about the same certificates again and again (relying parties
// ask about the few they hold) does not read SQLite for each request.
//
// It is exact, not merely fresh: the apply loop drops the entry of every serial
// a commit changed (issued, revoked or deleted) after the commit and before the
// commit is published to WaitFor, and Rebuild's reset drops them all. A query
// that read SQLite before such a commit must not store what it read: every drop
// moves gen, and put stores an answer only if gen has not moved since the
// caller's get. So once WaitFor has returned for a revocation, no answer
// older than the revocation can be served.
//
// Memory stays bounded: the answers are in a two-generation map
// (projections/twogen).
type statusCache struct {
	mu  sync.Mutex
	gen uint64
	m   *twogen.Map[domain.Serial, cachedStatus]
}

// cachedStatus is CertificateStatus's answer for one serial and the CA it was
// asked for (a serial is asked about with one CA in practice; another CA
// replaces the entry).
type cachedStatus struct {
	caID string
	st   CertificateStatus
}

// newStatusCache returns a cache of at most entries answers, or nil (no cache)
// for entries < 0.
func newStatusCache(entries int) *statusCache {
	switch {
	case entries < 0:
		return nil
	case entries == 0:
		entries = DefaultStatusCacheEntries
	}
	return &statusCache{m: twogen.New[domain.Serial, cachedStatus](entries)}
}

// get returns the cached answer for caID and serial, if any, and the
// generation a miss must pass to put.
func (c *statusCache) get(caID string, serial domain.Serial) (CertificateStatus, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m.Get(serial); ok && e.caID == caID {
		return e.st, c.gen, true
	}
	return CertificateStatus{}, c.gen, false
}

// put stores st, read from SQLite after get returned gen, unless a commit
// changed a status since.
func (c *statusCache) put(caID string, serial domain.Serial, st CertificateStatus, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.m.Put(serial, cachedStatus{caID: caID, st: st})
}

// drop forgets the answers for serials, after a commit that changed them.
func (c *statusCache) drop(serials []domain.Serial) {
	if len(serials) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, s := range serials {
		c.m.Delete(s)
	}
}

// clear forgets every answer, after a reset emptied views.
func (c *statusCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.m.Clear()
}
