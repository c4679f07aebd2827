package sharedvault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/sharedvault"
	"github.com/caledger/caledger/domain"
)

func TestSealOpenRoundTrip(t *testing.T) {
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	cached := newNode(t, store, kr, nil)
	run(t, cached)
	uncached := newNode(t, store, kr, nil) // no Run: every call reads the key stream

	for _, n := range []int{0, 1, 1024, 64 << 10} {
		for _, group := range []string{domain.GroupIdentity, domain.GroupNationalID} {
			t.Run(fmt.Sprintf("%d bytes/%s", n, group), func(t *testing.T) {
				s := newSubject(t)
				pt := make([]byte, n)
				rand.Read(pt)
				ad := []byte("event ad " + group)
				for _, v := range []*sharedvault.Vault{cached, uncached} {
					sealed := seal(t, v, s, group, pt, ad)
					if sealed.SubjectID != s || sealed.KeyGroup != group {
						t.Fatalf("sealed part names %s/%s", sealed.SubjectID, sealed.KeyGroup)
					}
					if n >= 16 && bytes.Contains(sealed.Ciphertext, pt[:16]) {
						t.Fatal("ciphertext contains plaintext")
					}
					mustOpen(t, cached, &sealed, ad, pt)
					mustOpen(t, uncached, &sealed, ad, pt)
				}
				if !cached.Cached(s, group) {
					t.Fatal("the following node did not cache the key")
				}
				if uncached.Cached(s, group) {
					t.Fatal("a node that does not follow the store cached a key")
				}
			})
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	store, _ := openStore(t)
	v := newNode(t, store, ringWithEpoch1(t), nil)
	s, other := newSubject(t), newSubject(t)
	pt, ad := []byte("personal data"), []byte("ad of event 1")
	sealed := seal(t, v, s, "g", pt, ad)
	seal(t, v, other, "g", pt, ad)

	edit := func(f func(*domain.Sealed)) *domain.Sealed {
		c := sealed
		c.Ciphertext = bytes.Clone(sealed.Ciphertext)
		f(&c)
		return &c
	}
	for _, tc := range []struct {
		name string
		s    *domain.Sealed
		ad   []byte
		want error
	}{
		{"other ad", &sealed, []byte("ad of event 2"), sharedvault.ErrInvalidCiphertext},
		{"no ad", &sealed, nil, sharedvault.ErrInvalidCiphertext},
		{"flipped bit", edit(func(c *domain.Sealed) { c.Ciphertext[len(c.Ciphertext)-1] ^= 1 }), ad, sharedvault.ErrInvalidCiphertext},
		{"edited key id", edit(func(c *domain.Sealed) { c.KeyID++ }), ad, sharedvault.ErrInvalidCiphertext},
		{"truncated", edit(func(c *domain.Sealed) { c.Ciphertext = c.Ciphertext[:4] }), ad, sharedvault.ErrInvalidCiphertext},
		{"moved to another subject", edit(func(c *domain.Sealed) { c.SubjectID = other }), ad, sharedvault.ErrInvalidCiphertext},
		{"group without a key", edit(func(c *domain.Sealed) { c.KeyGroup = "never" }), ad, sharedvault.ErrNoKey},
		{"subject without a key", edit(func(c *domain.Sealed) { c.SubjectID = newSubject(t) }), ad, sharedvault.ErrNoKey},
	} {
		t.Run(tc.name, func(t *testing.T) { openFails(t, v, tc.s, tc.ad, tc.want) })
	}
	if _, err := v.Seal(context.Background(), s, "*", pt, ad); err == nil {
		t.Fatal("Seal accepted the reserved group \"*\"")
	}
	if _, err := v.Seal(context.Background(), "a b", "g", pt, ad); err == nil {
		t.Fatal("Seal accepted a subject id with a space")
	}
}

// A wrapped key copied into another subject's key stream does not unwrap there: the
// wrap's associated data names the subject, group and epoch.
func TestWrappedKeyBoundToSubject(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t)
	v := newNode(t, store, ringWithEpoch1(t), nil)
	a, b := newSubject(t), newSubject(t)
	pt, ad := []byte("a's data"), []byte("ad")
	sa := seal(t, v, a, "g", pt, ad)
	ka := keyEvents(t, store, a)[0]

	// An attacker with write access to the ledger plants a's wrapped key as b's.
	ev := domain.Event{ID: domain.EventID{1, 2, 3}, Type: sharedvault.TypeKeyCreated, Schema: 1,
		Time: time.Now(), Public: jsonKey(t, ka)}
	if _, err := store.Append(ctx, sharedvault.KeyStream(b), domain.NoStream, ev); err != nil {
		t.Fatal(err)
	}
	moved := sa
	moved.SubjectID = b
	got, err := v.Open(ctx, &moved, ad)
	if err == nil || got != nil {
		t.Fatalf("a key planted under another subject opened its data: %v", err)
	}
	if errors.Is(err, sharedvault.ErrShredded) || errors.Is(err, sharedvault.ErrNoKey) {
		t.Fatalf("planted key: %v, want an unwrap failure", err)
	}
	mustOpen(t, v, &sa, ad, pt)
}

func jsonKey(t testing.TB, k keyEvent) []byte {
	t.Helper()
	b, err := jsonMarshal(struct {
		Group   string `json:"group"`
		Epoch   uint32 `json:"epoch"`
		KeyID   uint32 `json:"key_id"`
		Wrapped []byte `json:"wrapped"`
	}{k.Group, k.Epoch, k.KeyID, k.Wrapped})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKeyCreatedOnOneNodeOpensOnAnother(t *testing.T) {
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	a, b := newNode(t, store, kr, nil), newNode(t, store, kr, nil)
	run(t, b)
	s := newSubject(t)
	pt, ad := []byte("data"), []byte("ad")
	sealed := seal(t, a, s, "g", pt, ad)
	mustOpen(t, b, &sealed, ad, pt) // uncached: read from the key stream
	mustOpen(t, b, &sealed, ad, pt) // cached
	if !b.Cached(s, "g") {
		t.Fatal("b did not cache the key")
	}
	// And b seals under the same key, which a opens.
	sb := seal(t, b, s, "g", []byte("more"), ad)
	if sb.KeyID != sealed.KeyID {
		t.Fatalf("b sealed under key %d, a under %d", sb.KeyID, sealed.KeyID)
	}
	mustOpen(t, a, &sb, ad, []byte("more"))
}

// Concurrent first Seals of one (subject, group) on two nodes agree on one key: the
// append at an exact stream version lets one win, and the others re-read.
func TestConcurrentFirstSealAgreesOnOneKey(t *testing.T) {
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	a, b := newNode(t, store, kr, nil), newNode(t, store, kr, nil)
	run(t, a)
	run(t, b)
	for round := range 5 {
		s := newSubject(t)
		const perNode = 6
		var wg sync.WaitGroup
		sealed := make([]domain.Sealed, 2*perNode)
		errs := make([]error, 2*perNode)
		start := make(chan struct{})
		for i := range sealed {
			v := a
			if i%2 == 1 {
				v = b
			}
			wg.Go(func() {
				<-start
				sealed[i], errs[i] = v.Seal(context.Background(), s, "g", fmt.Appendf(nil, "writer %d", i), []byte("ad"))
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d writer %d: %v", round, i, err)
			}
			if sealed[i].KeyID != sealed[0].KeyID {
				t.Fatalf("round %d: writers sealed under keys %d and %d", round, sealed[0].KeyID, sealed[i].KeyID)
			}
			for _, v := range []*sharedvault.Vault{a, b} {
				mustOpen(t, v, &sealed[i], []byte("ad"), fmt.Appendf(nil, "writer %d", i))
			}
		}
		if ks := keyEvents(t, store, s); len(ks) != 1 {
			t.Fatalf("round %d: %d key events in the stream, want 1", round, len(ks))
		}
	}
}

// Shred on node A: an uncached Open anywhere fails at once; node B's cached key is
// evicted as soon as B's Run sees the tombstone.
func TestShredReachesOtherNodes(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	a, b, c := newNode(t, store, kr, nil), newNode(t, store, kr, nil), newNode(t, store, kr, nil)
	run(t, b) // c does not follow: it never caches

	s, keep := newSubject(t), newSubject(t)
	ad := []byte("ad")
	id := seal(t, a, s, domain.GroupIdentity, []byte("name"), ad)
	nid := seal(t, a, s, domain.GroupNationalID, []byte("national id"), ad)
	kept := seal(t, a, keep, domain.GroupIdentity, []byte("kept"), ad)
	for _, x := range []*domain.Sealed{&id, &nid, &kept} {
		b.Open(ctx, x, ad)
	}
	if !b.Cached(s, domain.GroupIdentity) || !b.Cached(s, domain.GroupNationalID) {
		t.Fatal("b did not cache s's keys")
	}

	// One group first.
	if err := a.Shred(ctx, s, domain.GroupNationalID); err != nil {
		t.Fatal(err)
	}
	openFails(t, c, &nid, ad, sharedvault.ErrShredded) // no waiting: c reads the stream
	openFails(t, a, &nid, ad, sharedvault.ErrShredded)
	lag := waitFor(t, "b evicts the shredded group", func() bool { return !b.Cached(s, domain.GroupNationalID) })
	t.Logf("b evicted the shredded group %v after Shred returned", lag)
	openFails(t, b, &nid, ad, sharedvault.ErrShredded)
	mustOpen(t, b, &id, ad, []byte("name"))
	mustOpen(t, c, &id, ad, []byte("name"))
	if _, err := c.Seal(ctx, s, domain.GroupNationalID, []byte("x"), ad); !errors.Is(err, sharedvault.ErrShredded) {
		t.Fatalf("Seal under a shredded group: %v", err)
	}

	// Then the whole subject, including groups it has no key for yet.
	if err := a.Shred(ctx, s); err != nil {
		t.Fatal(err)
	}
	openFails(t, c, &id, ad, sharedvault.ErrShredded)
	lag = waitFor(t, "b evicts the shredded subject", func() bool { return !b.Cached(s, domain.GroupIdentity) })
	t.Logf("b evicted the shredded subject %v after Shred returned", lag)
	openFails(t, b, &id, ad, sharedvault.ErrShredded)
	for _, v := range []*sharedvault.Vault{a, b, c} {
		if _, err := v.Seal(ctx, s, "later-group", []byte("x"), ad); !errors.Is(err, sharedvault.ErrShredded) {
			t.Fatalf("Seal for a group of a shredded subject: %v", err)
		}
	}
	if !b.Cached(keep, domain.GroupIdentity) {
		t.Fatal("b evicted another subject's key")
	}
	mustOpen(t, b, &kept, ad, []byte("kept"))

	// Idempotent: no second tombstone.
	before, _ := store.Head(ctx)
	if err := b.Shred(ctx, s); err != nil {
		t.Fatal(err)
	}
	if after, _ := store.Head(ctx); after != before {
		t.Fatalf("shredding a shredded subject appended %d events", after-before)
	}
}

// Cached keys are used only while Run follows the store; when it stops, the cache
// is dropped, so a node that no longer hears of tombstones cannot use a stale key.
func TestCacheOnlyWhileRunning(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	a, b := newNode(t, store, kr, nil), newNode(t, store, kr, nil)
	s := newSubject(t)
	sealed := seal(t, a, s, "g", []byte("x"), nil)

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(rctx) }()
	waitFor(t, "Run starts", b.Following)
	if err := b.Run(ctx); err == nil {
		t.Fatal("a second Run started")
	}
	mustOpen(t, b, &sealed, nil, []byte("x"))
	if !b.Cached(s, "g") {
		t.Fatal("not cached while running")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if b.Cached(s, "g") {
		t.Fatal("cache kept after Run stopped")
	}
	if err := a.Shred(ctx, s); err != nil {
		t.Fatal(err)
	}
	openFails(t, b, &sealed, nil, sharedvault.ErrShredded)
}

func TestClosed(t *testing.T) {
	store, _ := openStore(t)
	v := newNode(t, store, ringWithEpoch1(t), nil)
	s := newSubject(t)
	sealed := seal(t, v, s, "g", []byte("x"), nil)
	v.Close()
	if _, err := v.Seal(context.Background(), s, "g", nil, nil); !errors.Is(err, sharedvault.ErrClosed) {
		t.Fatalf("Seal after Close: %v", err)
	}
	openFails(t, v, &sealed, nil, sharedvault.ErrClosed)
	if err := v.Run(context.Background()); !errors.Is(err, sharedvault.ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
}

// A node whose keyring gives another KEK for an epoch than the one recorded refuses
// to start: a typo in a KEK path or label must not mint a second key.
func TestWrongKEKRefused(t *testing.T) {
	store, _ := openStore(t)
	newNode(t, store, ringWithEpoch1(t), nil)
	_, err := sharedvault.New(context.Background(), store, ringWithEpoch1(t), sharedvault.Options{})
	if !errors.Is(err, sharedvault.ErrWrongKEK) {
		t.Fatalf("New with another KEK for epoch 1: %v", err)
	}
}

// A vault event this program does not know, in a key stream, makes Open fail
// closed rather than be skipped: it might be a tombstone.
func TestUnknownVaultEventFailsClosed(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	a, b := newNode(t, store, kr, nil), newNode(t, store, kr, nil)
	run(t, b)
	s := newSubject(t)
	sealed := seal(t, a, s, "g", []byte("x"), nil)
	mustOpen(t, b, &sealed, nil, []byte("x"))
	ev := domain.Event{ID: domain.EventID{9}, Type: "vault.keys-shredded-v2", Schema: 1, Time: time.Now(), Public: []byte(`{}`)}
	if _, err := store.Append(ctx, sharedvault.KeyStream(s), domain.Any, ev); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b evicts on an unknown vault event", func() bool { return !b.Cached(s, "g") })
	openFails(t, b, &sealed, nil, sharedvault.ErrCorrupt)
	openFails(t, a, &sealed, nil, sharedvault.ErrCorrupt)

	// It does not stop an erasure: the tombstone is appended after it.
	before, _ := store.Head(ctx)
	if err := a.Shred(ctx, s); err != nil {
		t.Fatalf("Shred of a subject whose key stream is corrupt: %v", err)
	}
	if after, _ := store.Head(ctx); after != before+1 {
		t.Fatal("no tombstone appended")
	}
	openFails(t, a, &sealed, nil, sharedvault.ErrCorrupt)
}
