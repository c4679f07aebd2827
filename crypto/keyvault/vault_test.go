package keyvault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/domain"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedClock() time.Time { return epoch }

// newKEK makes a file KEK outside dir, so that scans of the vault's directory never
// see it.
func newKEK(t testing.TB) *kek.File {
	t.Helper()
	k, err := kek.OpenOrCreateFile(context.Background(), filepath.Join(t.TempDir(), "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openVault(t testing.TB, dir string, k keyvault.KEK, opts ...keyvault.Option) *keyvault.Vault {
	t.Helper()
	opts = append([]keyvault.Option{keyvault.WithClock(fixedClock)}, opts...)
	v, err := keyvault.Open(context.Background(), filepath.Join(dir, "vault.db"), k, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func newSubject(t testing.TB) domain.SubjectID {
	t.Helper()
	id, err := domain.NewSubjectID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func seal(t testing.TB, v *keyvault.Vault, s domain.SubjectID, group string, pt, ad []byte) domain.Sealed {
	t.Helper()
	sealed, err := v.Seal(context.Background(), s, group, pt, ad)
	if err != nil {
		t.Fatalf("Seal(%s, %s): %v", s, group, err)
	}
	return sealed
}

func mustOpen(t testing.TB, v *keyvault.Vault, s *domain.Sealed, ad, want []byte) {
	t.Helper()
	got, err := v.Open(context.Background(), s, ad)
	if err != nil {
		t.Fatalf("Open(%s, %s): %v", s.SubjectID, s.KeyGroup, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Open(%s, %s) returned other bytes than were sealed", s.SubjectID, s.KeyGroup)
	}
}

// openFails checks that Open fails with an error matching want, and only want among
// the vault's sentinels, and returns no plaintext.
func openFails(t testing.TB, v *keyvault.Vault, s *domain.Sealed, ad []byte, want error) {
	t.Helper()
	got, err := v.Open(context.Background(), s, ad)
	if err == nil {
		t.Fatalf("Open(%s, %s) succeeded, want %v", s.SubjectID, s.KeyGroup, want)
	}
	if got != nil {
		t.Fatalf("Open returned %d bytes with its error", len(got))
	}
	for _, e := range []error{keyvault.ErrShredded, keyvault.ErrNoKey, keyvault.ErrInvalidCiphertext} {
		if errors.Is(err, e) != (e == want) {
			t.Fatalf("Open(%s, %s): %v; want an error matching only %v", s.SubjectID, s.KeyGroup, err, want)
		}
	}
}

func sealFails(t testing.TB, v *keyvault.Vault, s domain.SubjectID, group string, want error) {
	t.Helper()
	sealed, err := v.Seal(context.Background(), s, group, []byte("x"), nil)
	if !errors.Is(err, want) {
		t.Fatalf("Seal(%s, %s): %v, want %v", s, group, err, want)
	}
	if sealed.Ciphertext != nil {
		t.Fatal("Seal returned a ciphertext with its error")
	}
}

func TestSealOpen(t *testing.T) {
	v := openVault(t, t.TempDir(), newKEK(t))
	s := newSubject(t)
	var keyID uint32
	for _, n := range []int{0, 1, 100, 1024, 1 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			pt := bytes.Repeat([]byte("personal data "), n/14+1)[:n]
			ad := []byte("event 1")
			sealed := seal(t, v, s, "profile", pt, ad)
			if sealed.SubjectID != s || sealed.KeyGroup != "profile" || sealed.KeyID == 0 {
				t.Fatalf("Sealed = {%s %s %d}", sealed.SubjectID, sealed.KeyGroup, sealed.KeyID)
			}
			if keyID == 0 {
				keyID = sealed.KeyID
			}
			if sealed.KeyID != keyID {
				t.Fatalf("KeyID changed from %d to %d within one (subject, group)", keyID, sealed.KeyID)
			}
			if n >= 14 && bytes.Contains(sealed.Ciphertext, pt[:14]) {
				t.Fatal("ciphertext contains plaintext")
			}
			mustOpen(t, v, &sealed, ad, pt)
		})
	}
}

func TestSealedAD(t *testing.T) {
	ctx := context.Background()
	v := openVault(t, t.TempDir(), newKEK(t))
	s := newSubject(t)
	e := domain.Event{Stream: domain.SubjectStream(s), Version: 3, Type: "subject.registered",
		Sealed: &domain.Sealed{SubjectID: s, KeyGroup: "profile"}}
	sealed := seal(t, v, s, "profile", []byte("Ada Lovelace"), domain.SealedAD(&e))
	e.Sealed = &sealed
	mustOpen(t, v, e.Sealed, domain.SealedAD(&e), []byte("Ada Lovelace"))

	moved := e
	moved.Version = 4
	openFails(t, v, moved.Sealed, domain.SealedAD(&moved), keyvault.ErrInvalidCiphertext)
	moved = e
	moved.Type = "subject.corrected"
	openFails(t, v, moved.Sealed, domain.SealedAD(&moved), keyvault.ErrInvalidCiphertext)
	openFails(t, v, e.Sealed, nil, keyvault.ErrInvalidCiphertext)
	if _, err := v.Open(ctx, nil, nil); err == nil {
		t.Fatal("Open(nil) succeeded")
	}
}

func TestWrongKeyOrTampered(t *testing.T) {
	v := openVault(t, t.TempDir(), newKEK(t))
	a, b := newSubject(t), newSubject(t)
	pt, ad := []byte("national id 1815-12-10"), []byte("ad")
	sa := seal(t, v, a, "nid", pt, ad)
	seal(t, v, b, "nid", pt, ad)
	seal(t, v, a, "profile", pt, ad)

	t.Run("other subject", func(t *testing.T) {
		s := sa
		s.SubjectID = b
		openFails(t, v, &s, ad, keyvault.ErrInvalidCiphertext)
	})
	t.Run("other group", func(t *testing.T) {
		s := sa
		s.KeyGroup = "profile"
		openFails(t, v, &s, ad, keyvault.ErrInvalidCiphertext)
	})
	t.Run("subject without keys", func(t *testing.T) {
		s := sa
		s.SubjectID = newSubject(t)
		openFails(t, v, &s, ad, keyvault.ErrNoKey)
	})
	t.Run("group without key", func(t *testing.T) {
		s := sa
		s.KeyGroup = "consent"
		openFails(t, v, &s, ad, keyvault.ErrNoKey)
	})
	t.Run("key id", func(t *testing.T) {
		s := sa
		s.KeyID ^= 1
		openFails(t, v, &s, ad, keyvault.ErrInvalidCiphertext)
	})
	t.Run("ciphertext", func(t *testing.T) {
		for i := range sa.Ciphertext {
			s := sa
			s.Ciphertext = bytes.Clone(sa.Ciphertext)
			s.Ciphertext[i] ^= 0x40
			openFails(t, v, &s, ad, keyvault.ErrInvalidCiphertext)
		}
		for _, n := range []int{0, 4, 5, 20, len(sa.Ciphertext) - 1} {
			s := sa
			s.Ciphertext = sa.Ciphertext[:n]
			openFails(t, v, &s, ad, keyvault.ErrInvalidCiphertext)
		}
	})
	mustOpen(t, v, &sa, ad, pt)
}

func TestNames(t *testing.T) {
	ctx := context.Background()
	v := openVault(t, t.TempDir(), newKEK(t))
	s := newSubject(t)
	for _, tc := range []struct {
		subject domain.SubjectID
		group   string
	}{
		{"", "g"},
		{s, ""},
		{s, "*"},
		{s, "has space"},
		{"jane.doe@example.com name", "g"},
		{s, strings.Repeat("g", domain.MaxNameLen+1)},
		{s, "caf\u00e9"},
		{s, "$internal"},
	} {
		_, err := v.Seal(ctx, tc.subject, tc.group, []byte("x"), nil)
		if err == nil {
			t.Errorf("Seal(%q, %q) succeeded", tc.subject, tc.group)
			continue
		}
		if tc.subject != s && tc.subject != "" && strings.Contains(err.Error(), string(tc.subject)) {
			t.Errorf("error quotes a rejected subject: %v", err)
		}
		if _, err := v.Open(ctx, &domain.Sealed{SubjectID: tc.subject, KeyGroup: tc.group, Ciphertext: []byte{1, 0, 0, 0, 0}}, nil); err == nil {
			t.Errorf("Open(%q, %q) succeeded", tc.subject, tc.group)
		}
	}
	if err := v.Shred(ctx, s, "*"); err == nil {
		t.Error(`Shred(s, "*") succeeded; "*" is reserved for whole-subject tombstones`)
	}
}

// Errors may name the subject (a pseudonym) and the group, never the data.
func TestErrorsCarryNoSecrets(t *testing.T) {
	ctx := context.Background()
	v := openVault(t, t.TempDir(), newKEK(t))
	s := newSubject(t)
	pt, ad := []byte("PLAINTEXT-Ada-Lovelace"), []byte("AD-ada@example.com")
	sealed := seal(t, v, s, "profile", pt, ad)
	var errs []error
	_, err := v.Open(ctx, &sealed, []byte("AD-other@example.com"))
	errs = append(errs, err)
	bad := sealed
	bad.Ciphertext = append(bytes.Clone(sealed.Ciphertext), 'x')
	_, err = v.Open(ctx, &bad, ad)
	errs = append(errs, err)
	if err := v.Shred(ctx, s); err != nil {
		t.Fatal(err)
	}
	_, err = v.Open(ctx, &sealed, ad)
	errs = append(errs, err)
	_, err = v.Seal(ctx, s, "profile", pt, ad)
	errs = append(errs, err)
	for _, err := range errs {
		if err == nil {
			t.Fatal("expected an error")
		}
		msg := err.Error()
		for _, secret := range []string{"PLAINTEXT", "Ada", "AD-", "example.com"} {
			if strings.Contains(msg, secret) {
				t.Errorf("error %q contains %q", msg, secret)
			}
		}
	}
}

// countingKEK counts Unwrap calls of a real KEK, to observe the cache from outside.
type countingKEK struct {
	keyvault.KEK
	unwraps atomic.Int64
}

func (k *countingKEK) Unwrap(ctx context.Context, ct, ad []byte) ([]byte, error) {
	k.unwraps.Add(1)
	return k.KEK.Unwrap(ctx, ct, ad)
}

func TestCache(t *testing.T) {
	k := &countingKEK{KEK: newKEK(t)}
	dir := t.TempDir()
	v := openVault(t, dir, k, keyvault.WithCacheSize(2))
	subjects := []domain.SubjectID{newSubject(t), newSubject(t), newSubject(t)}
	var sealed []domain.Sealed
	for _, s := range subjects {
		sealed = append(sealed, seal(t, v, s, "g", []byte("x"), nil))
	}
	if n := k.unwraps.Load(); n != 0 {
		t.Fatalf("creating keys unwrapped %d times; a new key must be cached as created", n)
	}
	// subjects[1] and [2] are cached: opening them many times unwraps nothing.
	for range 100 {
		mustOpen(t, v, &sealed[1], nil, []byte("x"))
		mustOpen(t, v, &sealed[2], nil, []byte("x"))
	}
	if n := k.unwraps.Load(); n != 0 {
		t.Fatalf("cache hits unwrapped %d times", n)
	}
	// subjects[0] was evicted (capacity 2): one unwrap, then cached again.
	mustOpen(t, v, &sealed[0], nil, []byte("x"))
	mustOpen(t, v, &sealed[0], nil, []byte("x"))
	if n := k.unwraps.Load(); n != 1 {
		t.Fatalf("after an eviction: %d unwraps, want 1", n)
	}

	off := &countingKEK{KEK: k.KEK}
	v.Close()
	v2 := openVault(t, dir, off, keyvault.WithCacheSize(0))
	for range 3 {
		mustOpen(t, v2, &sealed[1], nil, []byte("x"))
	}
	if n := off.unwraps.Load(); n != 3 {
		t.Fatalf("without a cache: %d unwraps for 3 opens", n)
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir, kekPath := t.TempDir(), filepath.Join(t.TempDir(), "kek.json")
	k, err := kek.OpenOrCreateFile(ctx, kekPath)
	if err != nil {
		t.Fatal(err)
	}
	v := openVault(t, dir, k)
	type item struct {
		sealed domain.Sealed
		pt, ad []byte
	}
	var items []item
	for i := range 20 {
		s := newSubject(t)
		for _, g := range []string{"profile", "nid"} {
			pt, ad := fmt.Appendf(nil, "data %d %s", i, g), fmt.Appendf(nil, "ad %d", i)
			items = append(items, item{seal(t, v, s, g, pt, ad), pt, ad})
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Seal(ctx, newSubject(t), "g", nil, nil); !errors.Is(err, keyvault.ErrClosed) {
		t.Fatalf("Seal after Close: %v", err)
	}

	// A new process: the KEK is read from its file, the cache is cold.
	k2, err := kek.OpenFile(ctx, kekPath)
	if err != nil {
		t.Fatal(err)
	}
	v2 := openVault(t, dir, k2)
	for _, it := range items {
		mustOpen(t, v2, &it.sealed, it.ad, it.pt)
		again := seal(t, v2, it.sealed.SubjectID, it.sealed.KeyGroup, it.pt, it.ad)
		if again.KeyID != it.sealed.KeyID {
			t.Fatal("reopened vault made a new key for an existing (subject, group)")
		}
	}
	v2.Close()

	if _, err := keyvault.Open(ctx, filepath.Join(dir, "vault.db"), newKEK(t)); !errors.Is(err, keyvault.ErrWrongKEK) {
		t.Fatalf("Open with another KEK: %v, want ErrWrongKEK", err)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	v := openVault(t, dir, newKEK(t))
	seal(t, v, newSubject(t), "g", []byte("x"), nil)
	want := map[string]os.FileMode{dir: 0o700}
	for _, name := range []string{"vault.db", "vault.db-wal", "vault.db-shm"} {
		want[filepath.Join(dir, name)] = 0o600
	}
	for p, mode := range want {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != mode {
			t.Errorf("%s: mode %04o, want %04o", filepath.Base(p), got, mode)
		}
	}
	v.Close()

	if err := os.Chmod(filepath.Join(dir, "vault.db"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := keyvault.Open(context.Background(), filepath.Join(dir, "vault.db"), newKEK(t))
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Open of a mode 0644 vault: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	for _, cacheSize := range []int{keyvault.DefaultCacheSize, 0} {
		t.Run(fmt.Sprintf("cache=%d", cacheSize), func(t *testing.T) {
			ctx := context.Background()
			v := openVault(t, t.TempDir(), newKEK(t), keyvault.WithCacheSize(cacheSize))
			subjects := make([]domain.SubjectID, 6)
			for i := range subjects {
				subjects[i] = newSubject(t)
			}
			const workers, rounds = 16, 30
			keyIDs := make([][]uint32, workers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					<-start // all workers race for the first Seal of every subject
					for r := range rounds {
						s := subjects[(w+r)%len(subjects)]
						pt, ad := fmt.Appendf(nil, "w%d r%d", w, r), fmt.Appendf(nil, "%s", s)
						sealed, err := v.Seal(ctx, s, "g", pt, ad)
						if err != nil {
							t.Error(err)
							return
						}
						got, err := v.Open(ctx, &sealed, ad)
						if err != nil || !bytes.Equal(got, pt) {
							t.Errorf("Open: %v", err)
							return
						}
						if r < len(subjects) {
							keyIDs[w] = append(keyIDs[w], sealed.KeyID)
						}
					}
				})
			}
			close(start)
			wg.Wait()
			// Every worker's first len(subjects) rounds covered every subject once,
			// in a rotation that depends on w; all must have used the same keys.
			want := map[domain.SubjectID]uint32{}
			for w, ids := range keyIDs {
				for r, id := range ids {
					s := subjects[(w+r)%len(subjects)]
					if prev, ok := want[s]; ok && prev != id {
						t.Fatalf("subject %s sealed under keys %d and %d", s, prev, id)
					}
					want[s] = id
				}
			}
		})
	}
}
