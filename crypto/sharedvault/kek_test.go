package sharedvault_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/hsm/softhsmtest"
	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/kek/kektest"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/sharedvault"
	"github.com/caledger/caledger/domain"
)

func TestFileKEKConformance(t *testing.T) {
	kektest.Run(t, func(t *testing.T) keyvault.KEK {
		k, _ := newFileKEK(t)
		return k
	})
}

func TestPKCS11KEKConformance(t *testing.T) {
	kektest.Run(t, func(t *testing.T) keyvault.KEK {
		tok := softhsmtest.NewToken(t)
		k, err := sharedvault.OpenPKCS11KEK(context.Background(), kek.PKCS11Config{
			Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN}, 1, true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		return k
	})
}

func TestFileKEKDestroy(t *testing.T) {
	ctx := context.Background()
	k, path := newFileKEK(t)
	ct, err := k.Wrap(ctx, []byte("data key"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("KEK file after Destroy: %v", err)
	}
	if got, err := k.Unwrap(ctx, ct, []byte("ad")); !errors.Is(err, sharedvault.ErrDestroyed) || got != nil {
		t.Fatalf("Unwrap after Destroy: %v", err)
	}
	if err := k.Destroy(ctx); err != nil {
		t.Fatalf("second Destroy: %v", err)
	}
}

// Epochs on an HSM (SoftHSM2): each epoch's KEK is an AES key labelled
// caledger-kek-epoch-<n>; destroying epoch 1 deletes it from the token.
func TestPKCS11Epochs(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	cfg := kek.PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN}
	kr := sharedvault.NewPKCS11Keyring(cfg)
	t.Cleanup(func() { kr.Close() })
	k1, err := kr.Generate(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := "pkcs11:" + tok.TokenLabel + "/caledger-kek-epoch-1"; k1.ID() != want {
		t.Fatalf("epoch 1 KEK id %q, want %q", k1.ID(), want)
	}
	store, _ := openStore(t)
	a, b := newNode(t, store, kr, nil), newNode(t, store, kr, nil)
	run(t, b)

	keep, gone := newSubject(t), newSubject(t)
	ad := []byte("ad")
	ks := seal(t, a, keep, domain.GroupIdentity, []byte("kept"), ad)
	gs := seal(t, a, gone, domain.GroupIdentity, []byte("gone"), ad)
	mustOpen(t, b, &ks, ad, []byte("kept"))
	mustOpen(t, b, &gs, ad, []byte("gone"))
	if err := a.Shred(ctx, gone); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b evicts the shredded key", func() bool { return !b.Cached(gone, domain.GroupIdentity) })
	openFails(t, b, &gs, ad, sharedvault.ErrShredded)
	st, err := b.ErasureStatus(ctx, gone)
	if err != nil || st.Complete() || !slices.Equal(st.PendingEpochs, []uint32{1}) {
		t.Fatalf("status before rotation: %+v, %v", st, err)
	}
	goneWrapped := keyEvents(t, store, gone)[0].Wrapped

	k2, err := kr.Generate(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Rotate(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if err := a.RetireEpoch(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := a.DestroyEpoch(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// The token no longer has epoch 1's key...
	_, err = kek.OpenPKCS11(ctx, kek.PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN,
		KeyLabel: sharedvault.EpochKeyLabel(1)})
	if err == nil || !strings.Contains(err.Error(), "no secret key") {
		t.Fatalf("opening epoch 1's key after destruction: %v", err)
	}
	// ...so the copy of the shredded key in the ledger unwraps under nothing.
	if err := sharedvault.UnwrapWith(ctx, k1, goneWrapped, gone, domain.GroupIdentity, 1); err == nil {
		t.Fatal("epoch 1's destroyed KEK still unwraps")
	}
	if err := sharedvault.UnwrapWith(ctx, k2, goneWrapped, gone, domain.GroupIdentity, 1); err == nil {
		t.Fatal("epoch 2's KEK unwrapped a key wrapped under epoch 1")
	}
	st, err = b.ErasureStatus(ctx, gone)
	if err != nil || !st.Complete() || len(st.PendingEpochs) != 0 {
		t.Fatalf("status after destroying epoch 1: %+v, %v", st, err)
	}

	// A node started afresh, with a keyring of its own and a cold cache, reads the
	// survivor under epoch 2 and never asks for epoch 1.
	kr2 := sharedvault.NewPKCS11Keyring(cfg)
	t.Cleanup(func() { kr2.Close() })
	cold := newNode(t, store, kr2, nil)
	mustOpen(t, cold, &ks, ad, []byte("kept"))
	openFails(t, cold, &gs, ad, sharedvault.ErrShredded)
	mustOpen(t, b, &ks, ad, []byte("kept"))
}
