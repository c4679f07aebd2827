package softtoken_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/softtoken"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// BenchmarkPKCS12 is the cost of the file's password protection: one P-256
// key and certificate encoded at softtoken.Iterations, beside the 2048
// iterations of OpenSSL's default as the baseline of the same run.
func BenchmarkPKCS12(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		b.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	for _, n := range []int{2048, softtoken.Iterations} {
		b.Run(fmt.Sprintf("iterations=%d", n), func(b *testing.B) {
			enc := pkcs12.Modern2023.WithIterations(n)
			for b.Loop() {
				if _, err := enc.Encode(key, cert, nil, password); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIssue is one whole soft token, P-256, on the real stack: the key,
// the CSR, the signer's checks and zlint, two durable ledger appends and the
// PKCS#12 file at softtoken.Iterations.
func BenchmarkIssue(b *testing.B) {
	r := newRig(b)
	r.svc.Iterations = 0
	ctx := context.Background()
	id, err := r.h.RegisterSubject(ctx, officer, ada)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := r.svc.Issue(ctx, officer, softtoken.Request{SubjectID: id, Profile: "tls-client", CAID: "issuing", Password: password}); err != nil {
			b.Fatal(err)
		}
	}
}
