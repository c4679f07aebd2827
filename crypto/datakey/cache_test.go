package datakey

import (
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// A cached key is trusted only for the TTL: past it, the next use reads the
// key again, so a tombstone a node of the shared vault could not hear of (its
// subscription down) stops the key within the TTL.
func TestCacheTTL(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	c := NewCache(10, 10*time.Second, func() time.Time { return now })
	k := CacheKey{Subject: domain.SubjectID("00112233445566778899aabbccddeeff"), Group: domain.GroupIdentity}
	c.Add(k, Key{id: 7}, c.Generation())
	if got, ok := c.Get(k); !ok || got.id != 7 {
		t.Fatalf("fresh key: %v %v", got, ok)
	}
	now = now.Add(10 * time.Second)
	if _, ok := c.Get(k); !ok {
		t.Fatal("a key at exactly the TTL was dropped")
	}
	now = now.Add(time.Millisecond)
	if _, ok := c.Get(k); ok {
		t.Fatal("a key older than the TTL was used")
	}
	if _, ok := c.Get(k); ok {
		t.Fatal("an expired key came back")
	}
	// Re-adding restarts its clock.
	c.Add(k, Key{id: 8}, c.Generation())
	now = now.Add(5 * time.Second)
	if got, ok := c.Get(k); !ok || got.id != 8 {
		t.Fatalf("re-added key: %v %v", got, ok)
	}
}

// A load that took its generation before an eviction must not cache its key
// after it: that key may be the one just shredded.
func TestCacheEvictionBeatsRacingLoad(t *testing.T) {
	c := NewCache(10, 0, nil)
	subject := domain.SubjectID("00112233445566778899aabbccddeeff")
	k := CacheKey{Subject: subject, Group: domain.GroupIdentity}
	gen := c.Generation()
	c.Evict(subject, nil)
	c.Add(k, Key{id: 7}, gen)
	if c.Contains(k) {
		t.Fatal("a key loaded before the eviction was cached after it")
	}
	c.Add(k, Key{id: 7}, c.Generation())
	other := CacheKey{Subject: subject, Group: "other"}
	c.Add(other, Key{id: 9}, c.Generation())
	c.Evict(subject, []string{domain.GroupIdentity})
	if c.Contains(k) || !c.Contains(other) {
		t.Fatalf("evicting one group: identity cached %v, other cached %v", c.Contains(k), c.Contains(other))
	}
	c.Evict(subject, []string{"*"})
	if c.Contains(other) {
		t.Fatal(`evicting "*" kept a group`)
	}
}

// A disabled cache is empty and stays so; a cache of size 0 caches nothing.
func TestCacheDisabled(t *testing.T) {
	c := NewCache(10, 0, nil)
	k := CacheKey{Subject: "s", Group: "g"}
	c.Add(k, Key{id: 1}, c.Generation())
	c.SetEnabled(false)
	if c.Contains(k) {
		t.Fatal("disabling kept a key")
	}
	c.Add(k, Key{id: 1}, c.Generation())
	if c.Contains(k) {
		t.Fatal("a disabled cache cached a key")
	}
	z := NewCache(0, 0, nil)
	z.Add(k, Key{id: 1}, z.Generation())
	if z.Contains(k) {
		t.Fatal("a cache of size 0 cached a key")
	}
}
