package issuer_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
)

func TestNewRootAndIntermediate(t *testing.T) {
	p := newPKI(t, nil)
	if !p.root.IsCA || !p.root.BasicConstraintsValid || p.root.MaxPathLen != -1 {
		t.Errorf("root basic constraints: CA %v pathlen %d zero %v", p.root.IsCA, p.root.MaxPathLen, p.root.MaxPathLenZero)
	}
	if err := p.root.CheckSignatureFrom(p.root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if !p.inter.IsCA || p.inter.MaxPathLen != 0 || !p.inter.MaxPathLenZero {
		t.Errorf("intermediate pathlen %d zero %v, want 0", p.inter.MaxPathLen, p.inter.MaxPathLenZero)
	}
	want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	for _, c := range []*x509.Certificate{p.root, p.inter} {
		if c.KeyUsage != want || len(c.SubjectKeyId) == 0 {
			t.Errorf("%s: key usage %b SKI %x", c.Subject.CommonName, c.KeyUsage, c.SubjectKeyId)
		}
		if !c.NotBefore.Equal(now.Add(-time.Hour - time.Minute)) {
			t.Errorf("%s: NotBefore %v", c.Subject.CommonName, c.NotBefore)
		}
	}
	if !slices.Equal(p.inter.AuthorityKeyId, p.root.SubjectKeyId) {
		t.Error("intermediate AKI is not the root's SKI")
	}
	if !slices.Equal(p.inter.CRLDistributionPoints, []string{baseURL + "/v1/cas/root/crl"}) ||
		!slices.Equal(p.inter.IssuingCertificateURL, []string{baseURL + "/v1/cas/root/certificate"}) {
		t.Errorf("intermediate URLs %q %q", p.inter.CRLDistributionPoints, p.inter.IssuingCertificateURL)
	}
	if _, err := p.inter.Verify(x509.VerifyOptions{Roots: p.roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Error(err)
	}

	ctx := context.Background()
	rootCA := issuer.CA{ID: "root", Certificate: p.root, Key: p.rootKey}
	capped, err := issuer.NewIntermediate(ctx, rootCA, newKey(t, issuer.KeyP256).Public(), pkix.Name{CommonName: "long"}, 100*365*24*time.Hour, big.NewInt(3), now, issuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !capped.NotAfter.Equal(p.root.NotAfter) {
		t.Errorf("intermediate NotAfter %v, want the root's %v", capped.NotAfter, p.root.NotAfter)
	}
	for name, f := range map[string]func() error{
		"no serial": func() error {
			_, err := issuer.NewRoot(ctx, p.rootKey, pkix.Name{CommonName: "r"}, time.Hour, nil, now)
			return err
		},
		"serial too long": func() error {
			_, err := issuer.NewRoot(ctx, p.rootKey, pkix.Name{CommonName: "r"}, time.Hour, new(big.Int).Lsh(big.NewInt(1), 160), now)
			return err
		},
		"empty name": func() error {
			_, err := issuer.NewRoot(ctx, p.rootKey, pkix.Name{}, time.Hour, big.NewInt(1), now)
			return err
		},
		"no validity": func() error {
			_, err := issuer.NewRoot(ctx, p.rootKey, pkix.Name{CommonName: "r"}, 0, big.NewInt(1), now)
			return err
		},
		"P-521 key": func() error {
			_, err := issuer.NewIntermediate(ctx, rootCA, newKey(t, "P-521").Public(), pkix.Name{CommonName: "i"}, time.Hour, big.NewInt(1), now, issuer.Options{})
			return err
		},
		"parent is a leaf": func() error {
			leaf := *p.inter
			leaf.IsCA = false
			_, err := issuer.NewIntermediate(ctx, issuer.CA{ID: "x", Certificate: &leaf, Key: p.interKey}, newKey(t, issuer.KeyP256).Public(), pkix.Name{CommonName: "i"}, time.Hour, big.NewInt(1), now, issuer.Options{})
			return err
		},
		"parent expired": func() error {
			_, err := issuer.NewIntermediate(ctx, rootCA, newKey(t, issuer.KeyP256).Public(), pkix.Name{CommonName: "i"}, time.Hour, big.NewInt(1), p.root.NotAfter.Add(time.Hour), issuer.Options{})
			return err
		},
		"canceled": func() error {
			c, cancel := context.WithCancel(ctx)
			cancel()
			_, err := issuer.NewRoot(c, p.rootKey, pkix.Name{CommonName: "r"}, time.Hour, big.NewInt(1), now)
			return err
		},
	} {
		if err := f(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestNewChecks(t *testing.T) {
	p := newPKI(t, nil)
	good := issuer.CA{ID: "issuing", Certificate: p.inter, Key: p.interKey, Chain: []*x509.Certificate{p.root}}
	noSKI := *p.inter
	noSKI.SubjectKeyId = nil
	leaf := *p.inter
	leaf.IsCA = false
	bad := issuer.DefaultProfiles()
	bad[0].KeyTypes = nil
	tests := []struct {
		name     string
		cas      []issuer.CA
		profiles []issuer.Profile
		opts     issuer.Options
		wantErr  string
	}{
		{"good", []issuer.CA{good}, nil, issuer.Options{BaseURL: "http://ca.example.test/prefix/"}, ""},
		{"no CA", nil, nil, issuer.Options{}, "no CA"},
		{"CA twice", []issuer.CA{good, good}, nil, issuer.Options{}, "given twice"},
		{"bad CA id", []issuer.CA{{ID: "Issuing CA", Certificate: p.inter, Key: p.interKey}}, nil, issuer.Options{}, "CA id"},
		{"no key", []issuer.CA{{ID: "x", Certificate: p.inter}}, nil, issuer.Options{}, "needs a certificate and a key"},
		{"wrong key", []issuer.CA{{ID: "x", Certificate: p.inter, Key: p.rootKey}}, nil, issuer.Options{}, "not the certificate's key"},
		{"not a CA", []issuer.CA{{ID: "x", Certificate: &leaf, Key: p.interKey}}, nil, issuer.Options{}, "not a CA certificate"},
		{"no SKI", []issuer.CA{{ID: "x", Certificate: &noSKI, Key: p.interKey}}, nil, issuer.Options{}, "subject key identifier"},
		{"wrong chain", []issuer.CA{{ID: "x", Certificate: p.inter, Key: p.interKey, Chain: []*x509.Certificate{p.inter}}}, nil, issuer.Options{}, "chain"},
		{"bad profile", []issuer.CA{good}, bad, issuer.Options{}, "key_types"},
		{"BaseURL with query", []issuer.CA{good}, nil, issuer.Options{BaseURL: "https://ca.example.test/?a=b"}, "BaseURL"},
		{"BaseURL not http", []issuer.CA{good}, nil, issuer.Options{BaseURL: "ldap://ca.example.test"}, "BaseURL"},
		{"BaseURL relative", []issuer.CA{good}, nil, issuer.Options{BaseURL: "/v1"}, "BaseURL"},
		{"negative backdate", []issuer.CA{good}, nil, issuer.Options{Backdate: -time.Second}, "Backdate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			profiles := tt.profiles
			if profiles == nil {
				profiles = issuer.DefaultProfiles()
			}
			_, err := issuer.New(tt.cas, profiles, tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRolesOf(t *testing.T) {
	ext := func(v []byte) *x509.Certificate {
		return &x509.Certificate{Extensions: []pkix.Extension{{Id: issuer.OIDRoles, Value: v}}}
	}
	utf8s := func(ss ...string) []byte {
		var raw []asn1.RawValue
		for _, s := range ss {
			raw = append(raw, asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(s)})
		}
		b, err := asn1.Marshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	printable, _ := asn1.Marshal([]string{"admin"})
	tests := []struct {
		name string
		cert *x509.Certificate
		want []string
	}{
		{"nil", nil, nil},
		{"no extension", &x509.Certificate{}, nil},
		{"one", ext(utf8s("officer")), []string{"officer"}},
		{"two", ext(utf8s("officer", "auditor")), []string{"officer", "auditor"}},
		{"PrintableString", ext(printable), nil},
		{"trailing data", ext(append(utf8s("admin"), 0)), nil},
		{"not a sequence", ext([]byte{0x0c, 0x05, 'a', 'd', 'm', 'i', 'n'}), nil},
		{"bad UTF-8", ext([]byte{0x30, 0x03, 0x0c, 0x01, 0xff}), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := issuer.RolesOf(tt.cert); !slices.Equal(got, tt.want) {
				t.Errorf("RolesOf = %q, want %q", got, tt.want)
			}
		})
	}
	// Every arc fits in 31 bits: Go's x509 parser rejects larger ones.
	for _, arc := range issuer.OIDRoles {
		if arc >= 1<<31 {
			t.Errorf("OID arc %d does not fit in 31 bits", arc)
		}
	}
	if !strings.HasPrefix(issuer.OIDRoles.String(), issuer.OIDArc.String()+".") {
		t.Errorf("roles OID %v is not under %v", issuer.OIDRoles, issuer.OIDArc)
	}
}

// TestNewOCSPResponder: a delegated responder certificate for the root (P-384)
// and the intermediate (P-256) passes the lints and carries exactly what RFC
// 6960 asks of one, and a validity past the CA's is capped.
func TestNewOCSPResponder(t *testing.T) {
	p := newPKI(t, nil)
	ctx := context.Background()
	key := newKey(t, issuer.KeyP256)
	oidNoCheck := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}
	for _, ca := range []issuer.CA{
		{ID: "root", Certificate: p.root, Key: p.rootKey},
		{ID: "issuing", Certificate: p.inter, Key: p.interKey, Chain: []*x509.Certificate{p.root}},
	} {
		t.Run(ca.ID, func(t *testing.T) {
			c, err := issuer.NewOCSPResponder(ctx, ca, key.Public(), 72*time.Hour, big.NewInt(0x7a), now)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.CheckSignatureFrom(ca.Certificate); err != nil {
				t.Fatal(err)
			}
			if c.IsCA || !c.BasicConstraintsValid || c.KeyUsage != x509.KeyUsageDigitalSignature ||
				!slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}) || len(c.UnknownExtKeyUsage) != 0 {
				t.Errorf("CA %v, key usage %b, extended key usage %v %v", c.IsCA, c.KeyUsage, c.ExtKeyUsage, c.UnknownExtKeyUsage)
			}
			noCheck := slices.IndexFunc(c.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidNoCheck) })
			if noCheck < 0 || string(c.Extensions[noCheck].Value) != "\x05\x00" || c.Extensions[noCheck].Critical {
				t.Errorf("id-pkix-ocsp-nocheck missing or not a non-critical NULL: %v", c.Extensions)
			}
			if want := ca.Certificate.Subject.CommonName + " OCSP responder"; c.Subject.CommonName != want ||
				!slices.Equal(c.Subject.Organization, ca.Certificate.Subject.Organization) {
				t.Errorf("subject %v, want %q in the CA's organisation", c.Subject, want)
			}
			if !slices.Equal(c.AuthorityKeyId, ca.Certificate.SubjectKeyId) || len(c.SubjectKeyId) == 0 || c.SerialNumber.Int64() != 0x7a {
				t.Errorf("AKI %x (CA SKI %x), SKI %x, serial %v", c.AuthorityKeyId, ca.Certificate.SubjectKeyId, c.SubjectKeyId, c.SerialNumber)
			}
			if nb := now.Add(-time.Minute).UTC().Truncate(time.Second); !c.NotBefore.Equal(nb) || !c.NotAfter.Equal(nb.Add(72*time.Hour)) {
				t.Errorf("validity %v to %v", c.NotBefore, c.NotAfter)
			}
			if len(c.CRLDistributionPoints) != 0 || len(c.OCSPServer) != 0 {
				t.Errorf("a responder that is not checked names where to check it: %q %q", c.CRLDistributionPoints, c.OCSPServer)
			}
		})
	}
	capped, err := issuer.NewOCSPResponder(ctx, issuer.CA{ID: "issuing", Certificate: p.inter, Key: p.interKey}, key.Public(), 100*365*24*time.Hour, big.NewInt(1), now)
	if err != nil || !capped.NotAfter.Equal(p.inter.NotAfter) {
		t.Fatalf("a responder longer than its CA: %v, %v; want it capped at %v", capped.NotAfter, err, p.inter.NotAfter)
	}
	long := p.inter.Subject
	long.CommonName = strings.Repeat("é", 40) // 40 characters, 80 bytes
	longCA, err := issuer.NewIntermediate(ctx, issuer.CA{ID: "root", Certificate: p.root, Key: p.rootKey}, p.interKey.Public(), long, time.Hour, big.NewInt(9), now, issuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := issuer.NewOCSPResponder(ctx, issuer.CA{ID: "long", Certificate: longCA, Key: p.interKey}, key.Public(), time.Hour, big.NewInt(1), now)
	if err != nil || c.Subject.CommonName != strings.Repeat("é", 24)+" OCSP responder" {
		t.Fatalf("a long CA name: %q, %v; want it cut on a rune boundary to fit 64 bytes with the suffix", c.Subject.CommonName, err)
	}
	for name, f := range map[string]func() error{
		"no serial": func() error {
			_, err := issuer.NewOCSPResponder(ctx, issuer.CA{ID: "root", Certificate: p.root, Key: p.rootKey}, key.Public(), time.Hour, nil, now)
			return err
		},
		"no validity": func() error {
			_, err := issuer.NewOCSPResponder(ctx, issuer.CA{ID: "root", Certificate: p.root, Key: p.rootKey}, key.Public(), 0, big.NewInt(1), now)
			return err
		},
		"a P-521 key": func() error {
			_, err := issuer.NewOCSPResponder(ctx, issuer.CA{ID: "root", Certificate: p.root, Key: p.rootKey}, newKey(t, "P-521").Public(), time.Hour, big.NewInt(1), now)
			return err
		},
		"another CA's key": func() error {
			_, err := issuer.NewOCSPResponder(ctx, issuer.CA{ID: "root", Certificate: p.root, Key: p.interKey}, key.Public(), time.Hour, big.NewInt(1), now)
			return err
		},
	} {
		if err := f(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
