package signer_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/signer"
	"github.com/caledger/caledger/crypto/signer/signertest"
)

var (
	_ signer.Wrapper = (*kek.File)(nil)
	_ signer.Wrapper = (*kek.PKCS11)(nil)
)

var allAlgs = []signer.Algorithm{signer.P256, signer.P384, signer.Ed25519}

func newKEK(t testing.TB) *kek.File {
	t.Helper()
	k, err := kek.OpenOrCreateFile(context.Background(), filepath.Join(t.TempDir(), "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSoftwareConformance(t *testing.T) {
	dir, w := filepath.Join(t.TempDir(), "ca-keys"), newKEK(t)
	signertest.Run(t, func(t *testing.T) signer.Provider { return signer.NewSoftware(dir, w) }, allAlgs)
}

func generate(t *testing.T, p signer.Provider, label string, alg signer.Algorithm) (crypto.Signer, signer.Ref) {
	t.Helper()
	s, ref, err := p.Generate(context.Background(), label, alg)
	if err != nil {
		t.Fatal(err)
	}
	return s, ref
}

func TestSoftwareFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "ca-keys")
	generate(t, signer.NewSoftware(dir, newKEK(t)), "ca-1", signer.P256)
	path := filepath.Join(dir, "ca-1.key")
	for p, want := range map[string]os.FileMode{dir: 0o700, filepath.Dir(dir): 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", p, got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key file (no temporary left)", len(entries))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("CALEDGER CA KEY\n\x01\x05P-256")) {
		t.Errorf("key file starts %q, want the version 1 header", b[:min(len(b), 24)])
	}
}

// The wrapped key must not be in the file in any form PKCS#8 or SEC 1 would show.
func TestSoftwareFileHidesKey(t *testing.T) {
	dir := t.TempDir()
	w := newKEK(t)
	_, ref := generate(t, signer.NewSoftware(dir, w), "ca-1", signer.P256)
	b, err := os.ReadFile(filepath.Join(dir, "ca-1.key"))
	if err != nil {
		t.Fatal(err)
	}
	// Recover the private scalar through the KEK the way Load does, to look for it.
	priv := unwrapForTest(t, dir, w, ref)
	d := priv.D.FillBytes(make([]byte, 32))
	if bytes.Contains(b, d) || bytes.Contains(b, d[:16]) || bytes.Contains(b, d[16:]) {
		t.Fatal("key file contains the private scalar")
	}
}

// unwrapForTest decodes a version-1 file by hand; it also pins the documented format.
func unwrapForTest(t *testing.T, dir string, w signer.Wrapper, ref signer.Ref) *ecdsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ref.Label+".key"))
	if err != nil {
		t.Fatal(err)
	}
	hlen := 16 + 1 + 1 + len(ref.Algorithm) + 2 + len(w.ID())
	ad := append([]byte("caledger ca key v1\x00"+ref.Label+"\x00"), b[:hlen]...)
	der, err := w.Unwrap(context.Background(), b[hlen:], ad)
	if err != nil {
		t.Fatalf("the documented format does not open: %v", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

// A key file copied or renamed to another label must not load: the label is bound
// into the associated data.
func TestSoftwareFileMovedToOtherLabel(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := signer.NewSoftware(dir, newKEK(t))
	generate(t, p, "ca-1", signer.P256)
	b, err := os.ReadFile(filepath.Join(dir, "ca-1.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca-2.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = p.Load(ctx, signer.Ref{Provider: signer.ProviderSoftware, Label: "ca-2", Algorithm: signer.P256})
	if err == nil {
		t.Fatal("a key file copied to another label loaded")
	}
	if !errors.Is(err, kek.ErrInvalidCiphertext) {
		t.Fatalf("got %v, want the KEK's authentication failure", err)
	}
}

func TestSoftwareFileTampered(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := signer.NewSoftware(dir, newKEK(t))
	_, ref := generate(t, p, "ca-1", signer.P256)
	path := filepath.Join(dir, "ca-1.key")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	try := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Load(ctx, ref); err == nil {
			t.Errorf("%s: Load succeeded", name)
		} else if errors.Is(err, signer.ErrNotFound) {
			t.Errorf("%s: %v; a damaged key is not a missing key", name, err)
		}
	}
	for i := range orig {
		bad := bytes.Clone(orig)
		bad[i] ^= 0x01
		try(fmt.Sprintf("bit flipped in byte %d", i), bad)
	}
	for _, n := range []int{0, 1, 16, 17, 30, len(orig) - 1} {
		try(fmt.Sprintf("truncated to %d", n), orig[:n])
	}
	try("byte appended", append(bytes.Clone(orig), 0))
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Load(ctx, ref); err != nil {
		t.Fatalf("the untouched file no longer loads: %v", err)
	}
}

func TestSoftwareOtherKEK(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w1, w2 := newKEK(t), newKEK(t)
	_, ref := generate(t, signer.NewSoftware(dir, w1), "ca-1", signer.P384)
	_, err := signer.NewSoftware(dir, w2).Load(ctx, ref)
	if err == nil || !strings.Contains(err.Error(), w1.ID()) || !strings.Contains(err.Error(), w2.ID()) {
		t.Fatalf("got %v, want an error naming both KEKs", err)
	}
}

func TestSoftwareMissingDirectory(t *testing.T) {
	p := signer.NewSoftware(filepath.Join(t.TempDir(), "absent"), newKEK(t))
	_, err := p.Load(context.Background(), signer.Ref{Provider: signer.ProviderSoftware, Label: "ca-1", Algorithm: signer.P256})
	if !errors.Is(err, signer.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
}

// Two processes starting a CA together must not both get a key under one label.
func TestSoftwareConcurrentGenerate(t *testing.T) {
	ctx := context.Background()
	dir, w := t.TempDir(), newKEK(t)
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []crypto.Signer
	)
	for range n {
		wg.Go(func() {
			// A Software each, as separate processes would have.
			s, _, err := signer.NewSoftware(dir, w).Generate(ctx, "ca-1", signer.P256)
			if err != nil {
				if !errors.Is(err, signer.ErrExists) {
					t.Error(err)
				}
				return
			}
			mu.Lock()
			winners = append(winners, s)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d concurrent Generates succeeded, want 1", len(winners))
	}
	l, err := signer.NewSoftware(dir, w).Load(ctx, signer.Ref{Provider: signer.ProviderSoftware, Label: "ca-1", Algorithm: signer.P256})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Public().(*ecdsa.PublicKey).Equal(winners[0].Public()) {
		t.Fatal("the stored key is not the one Generate returned")
	}
}

// leakyWrapper unwraps to chosen bytes, to check what Load says about them.
type leakyWrapper struct {
	signer.Wrapper
	plaintext []byte
}

func (w leakyWrapper) Unwrap(context.Context, []byte, []byte) ([]byte, error) {
	return bytes.Clone(w.plaintext), nil
}

func TestSoftwareErrorsHideKeyBytes(t *testing.T) {
	ctx := context.Background()
	dir, w := t.TempDir(), newKEK(t)
	_, ref := generate(t, signer.NewSoftware(dir, w), "ca-1", signer.P256)
	secret := []byte("SECRET-KEY-MATERIAL-0123456789")
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384DER, err := x509.MarshalPKCS8PrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	for name, pt := range map[string][]byte{
		"not PKCS#8":                  secret,
		"PKCS#8 of another algorithm": p384DER,
	} {
		_, err := signer.NewSoftware(dir, leakyWrapper{w, pt}).Load(ctx, ref)
		if err == nil {
			t.Fatalf("%s: Load succeeded", name)
		}
		if name != "not PKCS#8" && !errors.Is(err, signer.ErrWrongAlgorithm) {
			t.Errorf("%s: %v, want ErrWrongAlgorithm", name, err)
		}
		for _, form := range []string{string(pt), fmt.Sprintf("%x", pt), fmt.Sprintf("%v", pt)} {
			if strings.Contains(err.Error(), form) {
				t.Fatalf("%s: error shows the unwrapped bytes: %v", name, err)
			}
		}
	}
}

// TestSoftwareRewrap: after Rewrap every key loads under the new KEK only, is
// the same key, and a rerun, a file made meanwhile under the old KEK and a
// file under a third KEK are handled as documented.
func TestSoftwareRewrap(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	oldKEK, newKEK, third := newKEK(t), newKEK(t), newKEK(t)
	old := signer.NewSoftware(dir, oldKEK)
	refs := map[string]signer.Ref{}
	pubs := map[string]crypto.PublicKey{}
	for i, alg := range allAlgs {
		label := fmt.Sprintf("ca-%d", i)
		s, ref := generate(t, old, label, alg)
		refs[label], pubs[label] = ref, s.Public()
	}
	// A temporary file of an interrupted write is skipped.
	if err := os.WriteFile(filepath.Join(dir, ".ca-0-123.key"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := old.Rewrap(ctx, newKEK)
	if err != nil || n != len(allAlgs) {
		t.Fatalf("Rewrap: %d, %v; want %d", n, err, len(allAlgs))
	}
	loaded := signer.NewSoftware(dir, newKEK)
	for label, ref := range refs {
		if _, err := old.Load(ctx, ref); err == nil {
			t.Fatalf("%s still loads under the old KEK", label)
		}
		s, err := loaded.Load(ctx, ref)
		if err != nil {
			t.Fatalf("%s under the new KEK: %v", label, err)
		}
		if !s.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pubs[label]) {
			t.Fatalf("%s is another key after the rewrap", label)
		}
		fi, err := os.Stat(filepath.Join(dir, label+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s after the rewrap has mode %v", label, fi.Mode())
		}
	}
	if n, err := old.Rewrap(ctx, newKEK); err != nil || n != 0 {
		t.Fatalf("rerun: %d, %v; want 0", n, err)
	}
	// A key made under the old KEK after a stop is picked up by the next run.
	generate(t, old, "late", signer.P256)
	if n, err := old.Rewrap(ctx, newKEK); err != nil || n != 1 {
		t.Fatalf("resumed: %d, %v; want 1", n, err)
	}
	// A file under a third KEK stops the run there: "0-stray" sorts first,
	// so "later" (under the old KEK) is not touched.
	generate(t, signer.NewSoftware(dir, third), "0-stray", signer.P256)
	_, laterRef := generate(t, old, "later", signer.P256)
	if _, err := old.Rewrap(ctx, newKEK); err == nil || !strings.Contains(err.Error(), third.ID()) {
		t.Fatalf("a key under a third KEK: %v, want an error naming it", err)
	}
	if _, err := old.Load(ctx, laterRef); err != nil {
		t.Fatalf("a key after the refused file was touched: %v", err)
	}
	counts, err := signer.KeyFileKEKs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{newKEK.ID(): len(allAlgs) + 1, oldKEK.ID(): 1, third.ID(): 1}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Fatalf("KeyFileKEKs: %v, want %v", counts, want)
	}
	// Refused as such, not for the stray file under a third KEK.
	if _, err := old.Rewrap(ctx, oldKEK); err == nil || !strings.Contains(err.Error(), "are the same") {
		t.Fatalf("Rewrap to the same KEK: %v", err)
	}
	if n, err := signer.NewSoftware(filepath.Join(dir, "absent"), oldKEK).Rewrap(ctx, newKEK); err != nil || n != 0 {
		t.Fatalf("no directory: %d, %v", n, err)
	}
}
