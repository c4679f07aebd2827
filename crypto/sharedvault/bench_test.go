package sharedvault_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"
)

// BenchmarkSealOpen1KiB is the hot path: one Seal and one Open of 1 KiB under a key
// cached by a node that runs Run. Compare with BenchmarkAESGCMSealOpen1KiB.
func BenchmarkSealOpen1KiB(b *testing.B) {
	ctx := context.Background()
	store, _ := openStore(b)
	v := newNode(b, store, ringWithEpoch1(b), nil)
	run(b, v)
	s := newSubject(b)
	pt, ad := make([]byte, 1024), []byte("caledger sealed v1 ad of about this size")
	seal(b, v, s, "profile", pt, ad) // creates and caches the key
	if !v.Cached(s, "profile") {
		b.Fatal("key not cached")
	}
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

// BenchmarkOpenUncached is an Open by a node without the key: read the key stream,
// unwrap under the epoch KEK (a File KEK here; an HSM round trip in production),
// and read the epoch stream's tail.
func BenchmarkOpenUncached(b *testing.B) {
	ctx := context.Background()
	store, _ := openStore(b)
	kr := ringWithEpoch1(b)
	w := newNode(b, store, kr, nil)
	r := newNode(b, store, kr, nil) // no Run: never caches
	s := newSubject(b)
	pt, ad := make([]byte, 1024), []byte("ad")
	sealed := seal(b, w, s, "profile", pt, ad)
	for b.Loop() {
		if _, err := r.Open(ctx, &sealed, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSealNewKey is a subject's first Seal: read the (empty) key stream,
// generate and wrap a key, append it durably (fsync), read the epoch stream's tail.
func BenchmarkSealNewKey(b *testing.B) {
	ctx := context.Background()
	store, _ := openStore(b)
	v := newNode(b, store, ringWithEpoch1(b), nil)
	pt, ad := make([]byte, 1024), []byte("ad")
	for b.Loop() {
		if _, err := v.Seal(ctx, newSubject(b), "profile", pt, ad); err != nil {
			b.Fatal(err)
		}
	}
}
