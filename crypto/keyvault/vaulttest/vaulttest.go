// Package vaulttest opens the embedded ledger and key vault that tests of the
// domain, the views and the services on top of them run against: real SQLite
// files in a test's temporary directory, not fakes.
package vaulttest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/eventstore/sqlite"
)

// Open opens a new ledger (dir/ledger) and key vault (dir/vault/vault.db,
// under a new file KEK at dir/kek.json) in a new temporary directory dir of
// t, and closes both when t ends.
func Open(t testing.TB) (dir string, store *sqlite.Store, vault *keyvault.Vault) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "ledger"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := kek.OpenOrCreateFile(ctx, filepath.Join(dir, "kek.json"))
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	vault, err = keyvault.Open(ctx, filepath.Join(dir, "vault", "vault.db"), k)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		store.Close()
		vault.Close()
	})
	return dir, store, vault
}
