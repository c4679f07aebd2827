package datakey_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/crypto/kek"
)

// TestWrap: a wrapped data key unwraps, under the same KEK and associated data
// only, to the same key.
func TestWrap(t *testing.T) {
	ctx := context.Background()
	k, err := kek.OpenOrCreateFile(ctx, filepath.Join(t.TempDir(), "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := kek.OpenOrCreateFile(ctx, filepath.Join(t.TempDir(), "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	h, key, err := datakey.New()
	if err != nil {
		t.Fatal(err)
	}
	ad := []byte("subject a, group identity")
	wrapped, err := datakey.Wrap(ctx, h, k, ad)
	if err != nil {
		t.Fatal(err)
	}
	got, err := datakey.Unwrap(ctx, wrapped, k, ad)
	if err != nil {
		t.Fatal(err)
	}
	back, err := datakey.FromHandle(got)
	if err != nil || back.ID() != key.ID() {
		t.Fatalf("unwrapped key id %d (%v), want %d", back.ID(), err, key.ID())
	}
	sealed, err := key.Seal("a", "identity", []byte("plaintext"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, ok := back.Open(&sealed, nil); !ok || string(pt) != "plaintext" {
		t.Fatal("the unwrapped key does not open what the original sealed")
	}
	if _, err := datakey.Unwrap(ctx, wrapped, k, []byte("subject b, group identity")); err == nil {
		t.Error("unwrapped under other associated data")
	}
	if _, err := datakey.Unwrap(ctx, wrapped, other, ad); err == nil {
		t.Error("unwrapped under another KEK")
	}
}
