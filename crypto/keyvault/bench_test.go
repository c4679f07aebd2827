package keyvault_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"
)

// BenchmarkSealOpen1KiB is the vault's hot path: one Seal and one Open of 1 KiB under
// a cached key. Compare with BenchmarkAESGCMSealOpen1KiB for the vault's overhead.
func BenchmarkSealOpen1KiB(b *testing.B) {
	ctx := context.Background()
	v := openVault(b, b.TempDir(), newKEK(b))
	s := newSubject(b)
	pt, ad := make([]byte, 1024), []byte("caledger sealed v1 ad of about this size")
	seal(b, v, s, "profile", pt, ad) // creates and caches the key
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		sealed, err := v.Seal(ctx, s, "profile", pt, ad)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := v.Open(ctx, &sealed, ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealOpen1KiBParallel(b *testing.B) {
	ctx := context.Background()
	v := openVault(b, b.TempDir(), newKEK(b))
	s := newSubject(b)
	pt, ad := make([]byte, 1024), []byte("caledger sealed v1 ad of about this size")
	seal(b, v, s, "profile", pt, ad)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sealed, err := v.Seal(ctx, s, "profile", pt, ad)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := v.Open(ctx, &sealed, ad); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAESGCMSealOpen1KiB is the floor: the standard library's AES-256-GCM, with
// a random nonce per seal as Tink draws one.
func BenchmarkAESGCMSealOpen1KiB(b *testing.B) {
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	pt, ad := make([]byte, 1024), []byte("caledger sealed v1 ad of about this size")
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		nonce := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(pt)+gcm.Overhead())
		rand.Read(nonce)
		ct := gcm.Seal(nonce, nonce, pt, ad)
		if _, err := gcm.Open(nil, ct[:gcm.NonceSize()], ct[gcm.NonceSize():], ad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSealNewKey is a subject's first Seal: key generation, wrapping and a
// durable (fsync'd) insert.
func BenchmarkSealNewKey(b *testing.B) {
	ctx := context.Background()
	v := openVault(b, b.TempDir(), newKEK(b))
	pt, ad := make([]byte, 1024), []byte("ad")
	for b.Loop() {
		if _, err := v.Seal(ctx, newSubject(b), "profile", pt, ad); err != nil {
			b.Fatal(err)
		}
	}
}
