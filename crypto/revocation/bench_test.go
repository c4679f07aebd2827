package revocation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"math/big"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"
)

const benchEntries = 1_000_000

var (
	benchNow = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	// benchCRLEntries are 1,000,000 entries with 16-octet serials (half of them
	// with the high bit set), times spread over a year and every reason code.
	benchCRLEntries = sync.OnceValue(func() []Entry {
		rng := mrand.New(mrand.NewPCG(1, 2))
		es := make([]Entry, benchEntries)
		var s [16]byte
		for i := range es {
			for j := range s {
				s[j] = byte(rng.Uint32())
			}
			reason := i % 11
			if reason == 7 {
				reason = 0
			}
			es[i] = Entry{Serial: new(big.Int).SetBytes(s[:]), RevokedAt: benchNow.Add(-time.Duration(rng.Int64N(int64(365 * 24 * time.Hour)))), Reason: reason}
		}
		return es
	})
)

// BenchmarkBuildCRL1M builds a CRL of 1,000,000 entries signed with P-256.
// The requirement is at most 3 s per CRL on the 2-core machine.
func BenchmarkBuildCRL1M(b *testing.B) {
	ca := newTestCA(b, newP256(b), "Bench CA")
	entries := benchCRLEntries()
	c := CRL{Number: big.NewInt(1), ThisUpdate: benchNow, NextUpdate: benchNow.Add(24 * time.Hour), Entries: entries}
	var size int
	n := 0
	for b.Loop() {
		der, err := BuildCRL(b.Context(), ca.cert, ca.key, c)
		if err != nil {
			b.Fatal(err)
		}
		size = len(der)
		n++
	}
	b.ReportMetric(float64(size), "bytes/CRL")
	b.ReportMetric(float64(n*len(entries))/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkCreateRevocationList is the baseline: x509.CreateRevocationList on
// the same 1,000,000 entries.
func BenchmarkCreateRevocationList(b *testing.B) {
	ca := newTestCA(b, newP256(b), "Bench CA")
	entries := benchCRLEntries()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: benchNow, NextUpdate: benchNow.Add(24 * time.Hour),
		RevokedCertificateEntries: make([]x509.RevocationListEntry, len(entries))}
	for i, e := range entries {
		tmpl.RevokedCertificateEntries[i] = x509.RevocationListEntry{SerialNumber: e.Serial, RevocationTime: e.RevokedAt, ReasonCode: e.Reason}
	}
	n := 0
	for b.Loop() {
		if _, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n*len(entries))/b.Elapsed().Seconds(), "entries/s")
}

func benchResponder(b *testing.B) (*testCA, *Responder, *countingSigner) {
	b.Helper()
	ca := newTestCA(b, newP256(b), "Bench CA")
	signer := &countingSigner{Signer: ca.key}
	table := &statusTable{caID: "ca-1", answers: map[string]Answer{"4711": {Status: Good}}}
	r, err := NewResponder([]Issuer{{ID: "ca-1", Certificate: ca.cert, Key: signer}}, table.lookup, Options{})
	if err != nil {
		b.Fatal(err)
	}
	return ca, r, signer
}

// BenchmarkRespondNonce is the OCSP throughput with a fresh P-256 signature per
// response (every request has a nonce), on all cores. The product target is
// 10,000 responses/s on 2 cores.
func BenchmarkRespondNonce(b *testing.B) {
	ca, r, signer := benchResponder(b)
	req := simpleRequest(b, ca, crypto.SHA1, big.NewInt(4711), nonceExt(b, make([]byte, 32)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Respond(b.Context(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "responses/s")
	if signer.n.Load() != int64(b.N) {
		b.Fatalf("%d signatures for %d responses", signer.n.Load(), b.N)
	}
}

// BenchmarkRespondCached is the OCSP throughput for requests without a nonce,
// answered from the cache (the lookup still runs).
func BenchmarkRespondCached(b *testing.B) {
	ca, r, _ := benchResponder(b)
	req := simpleRequest(b, ca, crypto.SHA1, big.NewInt(4711))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Respond(b.Context(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "responses/s")
}

// BenchmarkECDSASign is the baseline for BenchmarkRespondNonce: raw P-256
// signatures of a SHA-256 digest, on all cores.
func BenchmarkECDSASign(b *testing.B) {
	key := newP256(b).(*ecdsa.PrivateKey)
	digest := sha256.Sum256([]byte("tbsResponseData"))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signatures/s")
}
