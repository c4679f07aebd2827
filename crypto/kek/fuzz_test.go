package kek_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/kek"
)

// FuzzParseFile feeds ParseFile any bytes, as a KEK file given to restore
// (--kek) could hold. It must not panic; its error must quote nothing of the
// file, which may hold a key; a KEK it accepts must wrap and unwrap.
func FuzzParseFile(f *testing.F) {
	path := filepath.Join(f.TempDir(), "kek.json")
	if _, err := kek.OpenOrCreateFile(context.Background(), path); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add(bytes.Replace(b, []byte("ENABLED"), []byte("DISABLED"), 1))
	f.Add(bytes.Replace(b, []byte("AesGcmKey"), []byte("HmacKey"), 1))
	f.Add([]byte(`{"primaryKeyId": 1, "key": []}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := kek.ParseFile(b, "kek.json")
		if err != nil {
			// The errors are fixed texts: nothing of the file is quoted.
			if msg := err.Error(); !slices.Contains(parseErrors, msg) {
				t.Fatalf("error %q is not one of ParseFile's own", msg)
			}
			return
		}
		if !strings.HasPrefix(k.ID(), "file:") {
			t.Fatalf("ID %q", k.ID())
		}
		ctx := context.Background()
		ct, err := k.Wrap(ctx, []byte("data key"), []byte("ad"))
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := k.Unwrap(ctx, ct, []byte("ad")); err != nil || string(pt) != "data key" {
			t.Fatalf("unwrap: %q, %v", pt, err)
		}
		if _, err := k.Unwrap(ctx, ct, []byte("other")); err == nil {
			t.Fatal("unwrapped under other associated data")
		}
	})
}

// parseErrors are the errors ParseFile may return for a file named kek.json.
var parseErrors = []string{
	"kek: kek.json is not a Tink JSON keyset",
	"kek: kek.json has no usable primary key",
	"kek: kek.json is not a keyset of AEAD keys, such as the AES-256-GCM key caledger makes",
}
