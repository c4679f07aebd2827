package issuer_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/domain"
)

// BenchmarkSignCertificate is one issuance end to end: CSR parse and signature
// check, names, TBS encoding, lint certificate, zlint, CA signature and its
// check. P-256 CSR, P-256 CA, profile tls-client. Compare with
// BenchmarkRawCreateCertificate:
//
//	go test -run '^$' -bench 'SignCertificate|RawCreateCertificate' -benchtime 2s -count 3 ./crypto/issuer/
func BenchmarkSignCertificate(b *testing.B) {
	p := newPKI(b, nil)
	csr := newCSR(b, newKey(b, issuer.KeyP256))
	attrs := map[string]string{"common_name": "Ada Lovelace", "email": "ada@example.test", "organization": "Analytical Engines Ltd", "country": "GB"}
	var serial atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := domain.SignRequest{CAID: "issuing", Serial: domain.Serial(big.NewInt(0x1000 + serial.Add(1)).Text(16)),
				Profile: "tls-client", Attributes: attrs, CSR: csr, Now: now}
			if _, err := p.iss.SignCertificate(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRawCreateCertificate is x509.CreateCertificate of a comparable leaf
// (same key types, subject, SANs and extensions) with the same P-256 CA key:
// one signature and Go's check of it, no CSR, no linting.
func BenchmarkRawCreateCertificate(b *testing.B) {
	p := newPKI(b, nil)
	pub := newKey(b, issuer.KeyP256).Public()
	var serial atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tmpl := &x509.Certificate{
				SerialNumber:          big.NewInt(0x1000 + serial.Add(1)),
				Subject:               pkix.Name{CommonName: "Ada Lovelace", Organization: []string{"Analytical Engines Ltd"}, Country: []string{"GB"}},
				NotBefore:             now.Add(-time.Minute),
				NotAfter:              now.Add(365 * 24 * time.Hour),
				KeyUsage:              x509.KeyUsageDigitalSignature,
				ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				BasicConstraintsValid: true,
				SubjectKeyId:          []byte("01234567890123456789"),
				EmailAddresses:        []string{"ada@example.test"},
				CRLDistributionPoints: []string{baseURL + "/v1/cas/issuing/crl"},
				OCSPServer:            []string{baseURL + "/ocsp"},
				IssuingCertificateURL: []string{baseURL + "/v1/cas/issuing/certificate"},
			}
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, p.inter, pub, p.interKey); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
