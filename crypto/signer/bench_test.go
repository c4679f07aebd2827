package signer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/kek"
)

// benchKeys runs bench with a P-256 CA key from each provider. raw is what the
// provider's signer wraps: crypto11's signer, or the *ecdsa.PrivateKey.
func benchKeys(b *testing.B, bench func(b *testing.B, s, raw crypto.Signer)) {
	b.Run("provider=pkcs11", func(b *testing.B) {
		p := openTestPKCS11(b)
		s, _, err := p.Generate(context.Background(), "bench-ca", P256)
		if err != nil {
			b.Fatal(err)
		}
		bench(b, s, s.(*key).signer)
	})
	b.Run("provider=software", func(b *testing.B) {
		w, err := kek.OpenOrCreateFile(context.Background(), filepath.Join(b.TempDir(), "kek.json"))
		if err != nil {
			b.Fatal(err)
		}
		s, _, err := NewSoftware(b.TempDir(), w).Generate(context.Background(), "bench-ca", P256)
		if err != nil {
			b.Fatal(err)
		}
		bench(b, s, s.(*key).signer)
	})
}

// BenchmarkSignP256 is a raw ECDSA P-256 signature of a SHA-256 digest, straight
// through the provider's underlying signer (crypto11's for pkcs11).
func BenchmarkSignP256(b *testing.B) {
	benchKeys(b, func(b *testing.B, _, raw crypto.Signer) {
		digest := sha256.Sum256([]byte("tbsCertificate"))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := raw.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkIssueP256Leaf is x509.CreateCertificate of a P-256 leaf under a CA whose
// key is the provider's signer, as the CA issues: encode, hash, sign, and the
// signature check crypto/x509 does after signing.
func BenchmarkIssueP256Leaf(b *testing.B) {
	benchKeys(b, func(b *testing.B, s, _ crypto.Signer) {
		now := time.Now()
		caTmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "bench CA"},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign,
		}
		caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, s.Public(), s)
		if err != nil {
			b.Fatal(err)
		}
		ca, err := x509.ParseCertificate(caDER)
		if err != nil {
			b.Fatal(err)
		}
		leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		var serial atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tmpl := &x509.Certificate{
					SerialNumber: big.NewInt(serial.Add(1) + 1<<40),
					Subject:      pkix.Name{CommonName: "leaf.example"},
					DNSNames:     []string{"leaf.example"},
					NotBefore:    now,
					NotAfter:     now.Add(time.Hour),
					KeyUsage:     x509.KeyUsageDigitalSignature,
					ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				}
				if _, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &leafKey.PublicKey, s); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
