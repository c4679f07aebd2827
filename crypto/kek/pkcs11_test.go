package kek_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/crypto/hsm/softhsmtest"
	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/kek/kektest"
)

func openPKCS11(t *testing.T, tok softhsmtest.Config, label string, generate bool) *kek.PKCS11 {
	t.Helper()
	k, err := kek.OpenPKCS11(context.Background(), kek.PKCS11Config{
		Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN,
		KeyLabel: label, Generate: generate,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func TestPKCS11Conformance(t *testing.T) {
	kektest.Run(t, func(t *testing.T) datakey.KEK {
		return openPKCS11(t, softhsmtest.NewToken(t), "kek-1", true)
	})
}

func TestPKCS11FindsExistingKey(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	k1 := openPKCS11(t, tok, "kek-1", true)
	ct, err := k1.Wrap(ctx, []byte("data key"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if err := k1.Close(); err != nil {
		t.Fatal(err)
	}

	// Generate=false: the key made above must be found, not a new one made.
	k2 := openPKCS11(t, tok, "kek-1", false)
	if k2.ID() != "pkcs11:"+tok.TokenLabel+"/kek-1" {
		t.Fatalf("ID %q", k2.ID())
	}
	got, err := k2.Unwrap(ctx, ct, []byte("ad"))
	if err != nil || string(got) != "data key" {
		t.Fatalf("Unwrap with the re-found key: %q, %v", got, err)
	}

	// A second label is a second key: it must not open the first one's output.
	k3 := openPKCS11(t, tok, "kek-2", true)
	if _, err := k3.Unwrap(ctx, ct, []byte("ad")); !errors.Is(err, kek.ErrInvalidCiphertext) {
		t.Fatalf("Unwrap under another key: %v, want ErrInvalidCiphertext", err)
	}
}

func TestPKCS11MissingKey(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	_, err := kek.OpenPKCS11(context.Background(), kek.PKCS11Config{
		Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, KeyLabel: "absent",
	})
	if !errors.Is(err, kek.ErrKeyNotFound) {
		t.Fatalf("got %v, want ErrKeyNotFound", err)
	}
}

// TestPKCS11Exclusive: a new KEK made with Exclusive is never a key that was
// on the token before.
func TestPKCS11Exclusive(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	cfg := kek.PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, KeyLabel: "kek-1", Generate: true, Exclusive: true}
	k, err := kek.OpenPKCS11(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	if _, err := kek.OpenPKCS11(t.Context(), cfg); !errors.Is(err, kek.ErrKeyExists) {
		t.Fatalf("second exclusive open: %v, want ErrKeyExists", err)
	}
}

// TestDestroyPKCS11 deletes the key from the token: it no longer opens, and
// what it wrapped cannot be unwrapped by a new key under the same label.
func TestDestroyPKCS11(t *testing.T) {
	ctx := t.Context()
	tok := softhsmtest.NewToken(t)
	cfg := kek.PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, KeyLabel: "kek-1"}
	k := openPKCS11(t, tok, "kek-1", true)
	other := openPKCS11(t, tok, "kek-2", true)
	ct, err := k.Wrap(ctx, []byte("data key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if err := kek.DestroyPKCS11(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := kek.OpenPKCS11(ctx, cfg); !errors.Is(err, kek.ErrKeyNotFound) {
		t.Fatalf("open after destroy: %v, want ErrKeyNotFound", err)
	}
	// Again: nothing left to destroy is not an error.
	if err := kek.DestroyPKCS11(ctx, cfg); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
	again := openPKCS11(t, tok, "kek-1", true)
	if _, err := again.Unwrap(ctx, ct, nil); !errors.Is(err, kek.ErrInvalidCiphertext) {
		t.Fatalf("a new key under the old label unwrapped: %v", err)
	}
	// The other label's key is untouched: it is found again, and unwraps
	// what it wrapped before.
	ct2, err := other.Wrap(ctx, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := openPKCS11(t, tok, "kek-2", false).Unwrap(ctx, ct2, nil); err != nil || string(got) != "x" {
		t.Fatalf("the other key after the destroy: %q, %v", got, err)
	}
}

func TestPKCS11WrongPIN(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	const pin = "98765"
	_, err := kek.OpenPKCS11(context.Background(), kek.PKCS11Config{
		Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: pin, KeyLabel: "kek-1", Generate: true,
	})
	if err == nil {
		t.Fatal("logged in with a wrong PIN")
	}
	if strings.Contains(err.Error(), pin) {
		t.Fatalf("error contains the PIN: %v", err)
	}
}
