package sharedvault

import (
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// A cached key is trusted only for the TTL: past it, the next use reads the
// key stream again, so a tombstone a node could not hear of (its subscription
// down) stops the key within the TTL.
func TestCacheTTL(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	c := newCache(10, 10*time.Second, func() time.Time { return now })
	c.enable(true)
	k := cacheKey{subject: domain.SubjectID("00112233445566778899aabbccddeeff"), group: domain.GroupIdentity}
	c.add(k, dataKey{id: 7}, c.generation())
	if got, ok := c.get(k); !ok || got.id != 7 {
		t.Fatalf("fresh key: %v %v", got, ok)
	}
	now = now.Add(10 * time.Second)
	if _, ok := c.get(k); !ok {
		t.Fatal("a key at exactly the TTL was dropped")
	}
	now = now.Add(time.Millisecond)
	if _, ok := c.get(k); ok {
		t.Fatal("a key older than the TTL was used")
	}
	if _, ok := c.get(k); ok {
		t.Fatal("an expired key came back")
	}
	// Re-adding restarts its clock.
	c.add(k, dataKey{id: 8}, c.generation())
	now = now.Add(5 * time.Second)
	if got, ok := c.get(k); !ok || got.id != 8 {
		t.Fatalf("re-added key: %v %v", got, ok)
	}
}
