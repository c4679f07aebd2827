package keyvault_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/caledger/caledger/domain"
)

// FuzzOpen feeds Open sealed parts from outside (the ledger is outside input to the
// vault): it must never panic and never return plaintext for anything but the genuine
// ciphertext with its own associated data.
func FuzzOpen(f *testing.F) {
	v := openVault(f, f.TempDir(), newKEK(f))
	const subject = domain.SubjectID("0123456789abcdef0123456789abcdef")
	ad, pt := []byte("event ad"), []byte("personal data")
	genuine := seal(f, v, subject, "profile", pt, ad)
	if err := v.Shred(context.Background(), "fedcba9876543210fedcba9876543210"); err != nil {
		f.Fatal(err)
	}

	f.Add(genuine.Ciphertext, genuine.KeyID, "profile", ad)
	f.Add(genuine.Ciphertext[:len(genuine.Ciphertext)-1], genuine.KeyID, "profile", ad)
	f.Add(genuine.Ciphertext, genuine.KeyID+1, "profile", ad)
	f.Add(genuine.Ciphertext, genuine.KeyID, "nid", ad)
	f.Add([]byte{1, 0, 0, 0, 0}, uint32(0), "profile", []byte{})
	f.Add([]byte{}, uint32(0), "*", []byte(nil))
	f.Fuzz(func(t *testing.T, ct []byte, keyID uint32, group string, fad []byte) {
		for _, s := range []domain.SubjectID{subject, "fedcba9876543210fedcba9876543210"} {
			got, err := v.Open(context.Background(), &domain.Sealed{SubjectID: s, KeyGroup: group, KeyID: keyID, Ciphertext: ct}, fad)
			if err != nil {
				if got != nil {
					t.Fatal("Open returned bytes with its error")
				}
				continue
			}
			if s != subject || group != "profile" || keyID != genuine.KeyID ||
				!bytes.Equal(ct, genuine.Ciphertext) || !bytes.Equal(fad, ad) || !bytes.Equal(got, pt) {
				t.Fatalf("Open accepted a forged sealed part (%d bytes)", len(ct))
			}
		}
	})
}
