package main

import (
	"context"
	"crypto/rand"
	"log/slog"
	"testing"

	"github.com/caledger/caledger/domain"
)

// TestEmbeddedErasureState checks that the erasure state of the embedded vault
// comes from the vault: an erasure the ledger records is "keys-destroyed" only
// once the vault holds a tombstone covering it.
func TestEmbeddedErasureState(t *testing.T) {
	ctx := context.Background()
	n, err := openNodeFor(ctx, config{Store: "sqlite"}, t.TempDir(), slog.New(slog.DiscardHandler), noEnv, true)
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	id, err := domain.NewSubjectID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.vault.Seal(ctx, id, "nid", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	state := n.erasureState()
	check := func(all bool, groups []string, want string) {
		t.Helper()
		got, at, pending, err := state(ctx, id, all, groups)
		if err != nil || got != want || !at.IsZero() || pending != nil {
			t.Errorf("all=%v groups=%v: %q %v %v %v, want %q", all, groups, got, at, pending, err, want)
		}
	}
	// The ledger records erasures whose keys the vault has not destroyed.
	check(true, nil, "shred-pending")
	check(false, []string{"nid"}, "shred-pending")

	if err := n.vault.Shred(ctx, id, "nid"); err != nil {
		t.Fatal(err)
	}
	check(false, []string{"nid"}, "keys-destroyed")
	check(false, []string{"nid", "identity"}, "shred-pending")
	check(true, []string{"nid"}, "shred-pending")

	if err := n.vault.Shred(ctx, id); err != nil {
		t.Fatal(err)
	}
	check(true, []string{"nid"}, "keys-destroyed")
	check(false, []string{"identity"}, "keys-destroyed")
}
