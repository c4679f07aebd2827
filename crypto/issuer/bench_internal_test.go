package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"

	"github.com/caledger/caledger/domain"
)

// BenchmarkStages times each stage of SignCertificate alone, one goroutine, to
// show where an issuance's time goes (P-256 CSR, P-256 CA, profile tls-client):
//
//	go test -run '^$' -bench Stages -benchtime 2000x ./crypto/issuer/
func BenchmarkStages(b *testing.B) {
	ctx := context.Background()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root, err := NewRoot(ctx, caKey, pkix.Name{CommonName: "bench"}, 24*time.Hour, big.NewInt(1), now)
	if err != nil {
		b.Fatal(err)
	}
	iss, err := New([]CA{{ID: "ca", Certificate: root, Key: caKey}}, DefaultProfiles(), Options{BaseURL: "https://ca.example.test"})
	if err != nil {
		b.Fatal(err)
	}
	subj, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, subj)
	req := domain.SignRequest{CAID: "ca", Serial: "1f", Profile: "tls-client", CSR: csr, Now: now,
		Attributes: map[string]string{"common_name": "Ada Lovelace", "email": "ada@example.test", "organization": "Analytical Engines Ltd", "country": "GB"}}
	ca, prof, tmpl, pub, err := iss.template(req)
	if err != nil {
		b.Fatal(err)
	}
	tbs, err := buildTBS(tmpl, ca.Certificate, pub)
	if err != nil {
		b.Fatal(err)
	}
	lintDER, _ := assemble(tbs, ca.lintSig)
	zc, err := zx509.ParseCertificate(lintDER)
	if err != nil {
		b.Fatal(err)
	}
	sig, _ := crypto.SignMessage(ca.Key, rand.Reader, tbs, ca.sig.opts)
	officer := iss.profiles["officer"].linter

	stages := []struct {
		name string
		f    func() error
	}{
		{"1-ParseCSR", func() error { _, err := ParseCSR(csr); return err }},
		{"2-names", func() error { _, err := buildNames(&prof.Profile, req.Attributes); return err }},
		{"3-buildTBS", func() error { _, err := buildTBS(tmpl, ca.Certificate, pub); return err }},
		{"4-zcrypto-parse", func() error { _, err := zx509.ParseCertificate(lintDER); return err }},
		{"5-lints", func() error { prof.linter.run(zc); return nil }},
		{"5b-lints-officer", func() error { officer.run(zc); return nil }},
		{"6-ca-sign", func() error { _, err := crypto.SignMessage(ca.Key, rand.Reader, tbs, ca.sig.opts); return err }},
		{"7-ca-check", func() error { return ca.Certificate.CheckSignature(ca.sig.alg, tbs, sig) }},
		{"8-assemble", func() error { _, err := assemble(tbs, sig); return err }},
		{"all", func() error { _, err := iss.SignCertificate(ctx, req); return err }},
	}
	for _, s := range stages {
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
				if err := s.f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
