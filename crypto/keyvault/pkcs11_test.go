package keyvault_test

import (
	"context"
	"testing"

	"github.com/caledger/caledger/crypto/hsm/softhsmtest"
	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
)

// The vault with its production KEK: an AES key in an HSM (SoftHSM2 here).
func TestVaultWithPKCS11KEK(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	cfg := kek.PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, KeyLabel: "vault-kek-1", Generate: true}
	k, err := kek.OpenPKCS11(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	dir := t.TempDir()
	v := openVault(t, dir, k)

	a, b := newSubject(t), newSubject(t)
	sa := seal(t, v, a, "profile", []byte("a's data"), []byte("ad a"))
	sb := seal(t, v, b, "profile", []byte("b's data"), []byte("ad b"))
	mustOpen(t, v, &sa, []byte("ad a"), []byte("a's data"))
	if err := v.Shred(ctx, a); err != nil {
		t.Fatal(err)
	}
	openFails(t, v, &sa, []byte("ad a"), keyvault.ErrShredded)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: a new login, the key found by its label, the cache cold.
	cfg.Generate = false
	k2, err := kek.OpenPKCS11(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k2.Close() })
	v2 := openVault(t, dir, k2)
	mustOpen(t, v2, &sb, []byte("ad b"), []byte("b's data"))
	openFails(t, v2, &sa, []byte("ad a"), keyvault.ErrShredded)
	openFails(t, v2, &sb, []byte("ad a"), keyvault.ErrInvalidCiphertext)
}
