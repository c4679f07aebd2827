package sharedvault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/sharedvault"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
)

// clock is a fake clock that tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// openStore opens the embedded ledger in a directory of its own and returns it with
// that directory, which holds nothing else.
func openStore(t testing.TB) (*sqlite.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ledger")
	s, err := sqlite.Open(context.Background(), dir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// ring is a keyring of KEKs set by the test. An epoch it lacks is an error, as a
// production keyring on a token without the key would give.
type ring struct {
	mu   sync.Mutex
	keks map[uint32]sharedvault.KEK
}

func newRing() *ring { return &ring{keks: map[uint32]sharedvault.KEK{}} }

func (r *ring) KEK(ctx context.Context, n uint32) (sharedvault.KEK, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keks[n]
	if !ok {
		return nil, fmt.Errorf("test keyring has no KEK for epoch %d", n)
	}
	return k, nil
}

func (r *ring) set(n uint32, k sharedvault.KEK) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keks[n] = k
}

func (r *ring) drop(n uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.keks, n)
}

// newFileKEK creates a KEK file outside every directory a test scans.
func newFileKEK(t testing.TB) (*sharedvault.FileKEK, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek.json")
	k, err := sharedvault.OpenFileKEK(context.Background(), path, true)
	if err != nil {
		t.Fatal(err)
	}
	return k, path
}

// ringWithEpoch1 returns a keyring whose epoch 1 is a new KEK file.
func ringWithEpoch1(t testing.TB) *ring {
	t.Helper()
	r := newRing()
	k, _ := newFileKEK(t)
	r.set(1, k)
	return r
}

func newNode(t testing.TB, store sharedvault.Store, kr sharedvault.Keyring, c *clock) *sharedvault.Vault {
	t.Helper()
	opts := sharedvault.Options{}
	if c != nil {
		opts.Now = c.Now
	}
	v, err := sharedvault.New(context.Background(), store, kr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// run starts v.Run and waits until it follows; the test's end stops it.
func run(t testing.TB, v *sharedvault.Vault) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) && !errors.Is(err, sharedvault.ErrClosed) {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for !v.Following() {
		if time.Now().After(deadline) {
			t.Fatal("Run did not start following within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func newSubject(t testing.TB) domain.SubjectID {
	t.Helper()
	id, err := domain.NewSubjectID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func seal(t testing.TB, v *sharedvault.Vault, s domain.SubjectID, group string, pt, ad []byte) domain.Sealed {
	t.Helper()
	sealed, err := v.Seal(context.Background(), s, group, pt, ad)
	if err != nil {
		t.Fatalf("Seal(%s, %s): %v", s, group, err)
	}
	return sealed
}

func mustOpen(t testing.TB, v *sharedvault.Vault, s *domain.Sealed, ad, want []byte) {
	t.Helper()
	got, err := v.Open(context.Background(), s, ad)
	if err != nil {
		t.Fatalf("Open(%s, %s): %v", s.SubjectID, s.KeyGroup, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Open(%s, %s) returned other bytes than were sealed", s.SubjectID, s.KeyGroup)
	}
}

// openFails checks that Open fails with an error matching want and returns no
// plaintext.
func openFails(t testing.TB, v *sharedvault.Vault, s *domain.Sealed, ad []byte, want error) {
	t.Helper()
	got, err := v.Open(context.Background(), s, ad)
	if !errors.Is(err, want) {
		t.Fatalf("Open(%s, %s): %v, want %v", s.SubjectID, s.KeyGroup, err, want)
	}
	if got != nil {
		t.Fatalf("Open returned %d bytes with its error", len(got))
	}
}

// keyEvent is a vault.key-created or vault.key-rewrapped event as the ledger has it.
type keyEvent struct {
	Type     string
	Position uint64
	Group    string `json:"group"`
	Epoch    uint32 `json:"epoch"`
	KeyID    uint32 `json:"key_id"`
	Wrapped  []byte `json:"wrapped"`
}

// keyEvents reads subject's key stream straight from the store.
func keyEvents(t testing.TB, store sharedvault.Store, s domain.SubjectID) []keyEvent {
	t.Helper()
	var out []keyEvent
	for e, err := range store.ReadStream(context.Background(), sharedvault.KeyStream(s), 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != sharedvault.TypeKeyCreated && e.Type != sharedvault.TypeKeyRewrapped {
			continue
		}
		k := keyEvent{Type: e.Type, Position: e.Position}
		if err := json.Unmarshal(e.Public, &k); err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

// waitFor polls cond until it holds or 5s pass, and returns how long it took.
func waitFor(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return time.Since(start)
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
