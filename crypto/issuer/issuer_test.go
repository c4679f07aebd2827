package issuer_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/domain"
)

// person is a full set of attributes; each profile takes what it admits.
var person = map[string]string{
	"common_name":         "Ada Lovelace",
	"given_name":          "Ada",
	"surname":             "Lovelace",
	"email":               "ada@Example.TEST",
	"organization":        "Analytical Engines Ltd",
	"organizational_unit": "Computing",
	"country":             "gb",
	"locality":            "London",
	"serial_number":       "PNOGB-18151210",
	"dns_names":           "www.example.test, API.example.test,www.example.test",
	"ip_addresses":        "192.0.2.10, 2001:db8::1, ::ffff:192.0.2.10",
}

var (
	oidCN  = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSN  = asn1.ObjectIdentifier{2, 5, 4, 4}
	oidSer = asn1.ObjectIdentifier{2, 5, 4, 5}
	oidC   = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidL   = asn1.ObjectIdentifier{2, 5, 4, 7}
	oidO   = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOU  = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidGN  = asn1.ObjectIdentifier{2, 5, 4, 42}
)

type atv struct {
	oid   asn1.ObjectIdentifier
	value string
}

func TestProfilesIssue(t *testing.T) {
	p := newPKI(t, nil)
	full := []atv{{oidC, "GB"}, {oidL, "London"}, {oidO, "Analytical Engines Ltd"}, {oidOU, "Computing"},
		{oidSN, "Lovelace"}, {oidGN, "Ada"}, {oidSer, "PNOGB-18151210"}, {oidCN, "Ada Lovelace"}}
	staff := slices.DeleteFunc(slices.Clone(full), func(a atv) bool { return a.oid.Equal(oidL) })
	server := []atv{{oidC, "GB"}, {oidL, "London"}, {oidO, "Analytical Engines Ltd"}, {oidOU, "Computing"}, {oidCN, "Ada Lovelace"}}
	wantIPs := []net.IP{net.ParseIP("192.0.2.10").To4(), net.ParseIP("2001:db8::1")}

	type want struct {
		eku    []x509.ExtKeyUsage
		dn     []atv
		dns    []string
		ips    []net.IP
		emails []string
		roles  []string
		// ku by key type
		ku       map[string]x509.KeyUsage
		validity time.Duration
	}
	ds := x509.KeyUsageDigitalSignature
	sig := map[string]x509.KeyUsage{issuer.KeyP256: ds, issuer.KeyP384: ds, issuer.KeyEd25519: ds, issuer.KeyRSA: ds}
	role := func(r string, v time.Duration) want {
		return want{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, dn: staff, emails: []string{"ada@example.test"}, roles: []string{r}, ku: sig, validity: v}
	}
	year, quarter := 365*24*time.Hour, 90*24*time.Hour
	profiles := map[string]want{
		"tls-server": {
			eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, dn: server,
			dns: []string{"www.example.test", "api.example.test"}, ips: wantIPs,
			ku:       map[string]x509.KeyUsage{issuer.KeyP256: ds, issuer.KeyP384: ds, issuer.KeyEd25519: ds, issuer.KeyRSA: ds | x509.KeyUsageKeyEncipherment},
			validity: quarter,
		},
		"tls-client": {eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, dn: full, emails: []string{"ada@example.test"}, ku: sig, validity: year},
		"email-protection": {
			eku: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, dn: full, emails: []string{"ada@example.test"},
			ku: map[string]x509.KeyUsage{issuer.KeyP256: ds | x509.KeyUsageKeyAgreement, issuer.KeyP384: ds | x509.KeyUsageKeyAgreement,
				issuer.KeyEd25519: ds, issuer.KeyRSA: ds | x509.KeyUsageKeyEncipherment},
			validity: year,
		},
		"officer":       role(issuer.RoleOfficer, year),
		"auditor":       role(issuer.RoleAuditor, year),
		"compliance":    role(issuer.RoleCompliance, year),
		"admin":         role(issuer.RoleAdmin, quarter),
		"officer-proxy": role(issuer.RoleOfficerProxy, year),
	}
	if len(profiles) != len(issuer.DefaultProfiles()) {
		t.Fatalf("the test covers %d profiles, DefaultProfiles has %d", len(profiles), len(issuer.DefaultProfiles()))
	}
	for _, prof := range issuer.DefaultProfiles() {
		w, ok := profiles[prof.Name]
		if !ok {
			t.Fatalf("profile %s is not covered", prof.Name)
		}
		for _, kt := range []string{issuer.KeyP256, issuer.KeyP384, issuer.KeyEd25519, issuer.KeyRSA} {
			t.Run(prof.Name+"/"+kt, func(t *testing.T) {
				key := newKey(t, kt)
				signed, err := p.iss.SignCertificate(context.Background(), request(prof.Name, newCSR(t, key), person))
				if err != nil {
					t.Fatal(err)
				}
				cert, err := x509.ParseCertificate(signed.DER)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cert.Verify(x509.VerifyOptions{Roots: p.roots, Intermediates: p.inters, CurrentTime: now, KeyUsages: w.eku}); err != nil {
					t.Fatalf("verify: %v", err)
				}
				if err := cert.CheckSignatureFrom(p.inter); err != nil {
					t.Fatal(err)
				}
				checkCommon(t, p, cert, signed, key.Public())
				if cert.KeyUsage != w.ku[kt] {
					t.Errorf("key usage %b, want %b", cert.KeyUsage, w.ku[kt])
				}
				if !slices.Equal(cert.ExtKeyUsage, w.eku) || len(cert.UnknownExtKeyUsage) != 0 {
					t.Errorf("ext key usage %v, want %v", cert.ExtKeyUsage, w.eku)
				}
				checkDN(t, cert, w.dn)
				if !slices.Equal(cert.DNSNames, w.dns) {
					t.Errorf("DNS names %q, want %q", cert.DNSNames, w.dns)
				}
				if !slices.EqualFunc(cert.IPAddresses, w.ips, net.IP.Equal) {
					t.Errorf("IP addresses %v, want %v", cert.IPAddresses, w.ips)
				}
				if !slices.Equal(cert.EmailAddresses, w.emails) {
					t.Errorf("e-mail addresses %q, want %q", cert.EmailAddresses, w.emails)
				}
				if len(cert.URIs) != 0 {
					t.Errorf("URIs %v", cert.URIs)
				}
				if got := issuer.RolesOf(cert); !slices.Equal(got, w.roles) {
					t.Errorf("roles %q, want %q", got, w.roles)
				}
				if got := cert.NotAfter.Sub(cert.NotBefore); got != w.validity {
					t.Errorf("validity %v, want %v", got, w.validity)
				}
			})
		}
	}
}

// checkCommon checks what every certificate has.
func checkCommon(t *testing.T, p *pki, cert *x509.Certificate, signed domain.Signed, pub any) {
	t.Helper()
	if signed.Serial != "1f" || cert.SerialNumber.Cmp(big.NewInt(0x1f)) != 0 {
		t.Errorf("serial %s / %v, want 1f", signed.Serial, cert.SerialNumber)
	}
	if !cert.NotBefore.Equal(now.Add(-time.Minute)) || !signed.NotBefore.Equal(cert.NotBefore) || !signed.NotAfter.Equal(cert.NotAfter) {
		t.Errorf("validity %v..%v, signed %v..%v, want from %v", cert.NotBefore, cert.NotAfter, signed.NotBefore, signed.NotAfter, now.Add(-time.Minute))
	}
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	if signed.SPKISHA256 != hex.EncodeToString(spki[:]) {
		t.Errorf("SPKI hash %s, want %x", signed.SPKISHA256, spki)
	}
	if k, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		t.Error("the certificate's key is not the CSR's")
	}
	if !cert.BasicConstraintsValid || cert.IsCA {
		t.Error("want basic constraints CA:false")
	}
	if len(cert.SubjectKeyId) != 20 || !slices.Equal(cert.AuthorityKeyId, p.inter.SubjectKeyId) {
		t.Errorf("SKI %x AKI %x, want a 20-byte SKI and AKI %x", cert.SubjectKeyId, cert.AuthorityKeyId, p.inter.SubjectKeyId)
	}
	if !slices.Equal(cert.CRLDistributionPoints, []string{baseURL + "/v1/cas/issuing/crl"}) ||
		!slices.Equal(cert.OCSPServer, []string{baseURL + "/ocsp"}) ||
		!slices.Equal(cert.IssuingCertificateURL, []string{baseURL + "/v1/cas/issuing/certificate"}) {
		t.Errorf("CRL DP %q OCSP %q CA issuers %q", cert.CRLDistributionPoints, cert.OCSPServer, cert.IssuingCertificateURL)
	}
	for _, e := range cert.Extensions {
		switch {
		case e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 19}), e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 15}):
			if !e.Critical {
				t.Errorf("extension %v is not critical", e.Id)
			}
		case e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}):
			if e.Critical != (len(cert.RawSubject) == 2) {
				t.Errorf("SAN critical %v with subject %x", e.Critical, cert.RawSubject)
			}
		case e.Critical:
			t.Errorf("extension %v is critical", e.Id)
		}
	}
}

// checkDN checks that the subject is exactly want, in order, with
// PrintableString for country and serial number and UTF8String elsewhere.
func checkDN(t *testing.T, cert *x509.Certificate, want []atv) {
	t.Helper()
	var rdns []pkix.RelativeDistinguishedNameSET
	if _, err := asn1.Unmarshal(cert.RawSubject, &rdns); err != nil {
		t.Fatal(err)
	}
	var got []atv
	for _, rdn := range rdns {
		if len(rdn) != 1 {
			t.Fatalf("multi-valued RDN %v", rdn)
		}
		got = append(got, atv{rdn[0].Type, rdn[0].Value.(string)})
	}
	if !slices.EqualFunc(got, want, func(a, b atv) bool { return a.oid.Equal(b.oid) && a.value == b.value }) {
		t.Errorf("subject %v, want %v", got, want)
	}
	var raw []asn1.RawValue
	rest := cert.RawSubject
	var seq asn1.RawValue
	if _, err := asn1.Unmarshal(rest, &seq); err != nil {
		t.Fatal(err)
	}
	for b := seq.Bytes; len(b) > 0; {
		var set asn1.RawValue
		var err error
		if b, err = asn1.Unmarshal(b, &set); err != nil {
			t.Fatal(err)
		}
		var pair struct {
			Type  asn1.ObjectIdentifier
			Value asn1.RawValue
		}
		if _, err := asn1.Unmarshal(set.Bytes, &pair); err != nil {
			t.Fatal(err)
		}
		wantTag := asn1.TagUTF8String
		if pair.Type.Equal(oidC) || pair.Type.Equal(oidSer) {
			wantTag = asn1.TagPrintableString
		}
		if pair.Value.Tag != wantTag {
			t.Errorf("attribute %v has string tag %d, want %d", pair.Type, pair.Value.Tag, wantTag)
		}
		raw = append(raw, pair.Value)
	}
	if len(raw) != len(want) {
		t.Errorf("subject has %d attributes, want %d", len(raw), len(want))
	}
}

// TestCSRSubjectIgnored: nothing of the CSR but its key reaches the certificate.
func TestCSRSubjectIgnored(t *testing.T) {
	p := newPKI(t, nil)
	csr := newCSR(t, newKey(t, issuer.KeyP256)) // asks for CN=Mallory, evil.example, CA:TRUE
	signed, err := p.iss.SignCertificate(context.Background(), request("tls-client", csr, map[string]string{"common_name": "Ada Lovelace"}))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(signed.DER)
	if err != nil {
		t.Fatal(err)
	}
	checkDN(t, cert, []atv{{oidCN, "Ada Lovelace"}})
	if len(cert.DNSNames)+len(cert.EmailAddresses)+len(cert.IPAddresses)+len(cert.URIs) != 0 || cert.IsCA {
		t.Errorf("the CSR's requests leaked in: SANs %v %v %v, CA %v", cert.DNSNames, cert.EmailAddresses, cert.IPAddresses, cert.IsCA)
	}
	for _, s := range []string{"Mallory", "Evil", "evil.example"} {
		if strings.Contains(string(signed.DER), s) {
			t.Errorf("the certificate holds %q from the CSR", s)
		}
	}
}

// TestEmailOnlySubject: with no DN attribute the subject is empty and the SAN
// extension critical (RFC 5280 4.2.1.6), and the address is never in the DN.
func TestEmailOnlySubject(t *testing.T) {
	p := newPKI(t, nil)
	signed, err := p.iss.SignCertificate(context.Background(), request("email-protection", newCSR(t, newKey(t, issuer.KeyP256)), map[string]string{"email": "ada@example.test"}))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(signed.DER)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Subject.Names) != 0 || !slices.Equal(cert.EmailAddresses, []string{"ada@example.test"}) {
		t.Errorf("subject %v, e-mail SAN %v", cert.Subject, cert.EmailAddresses)
	}
	checkCommon(t, p, cert, signed, cert.PublicKey)
}

func TestValidity(t *testing.T) {
	p := newPKI(t, nil)
	key := newKey(t, issuer.KeyP256)
	attrs := map[string]string{"common_name": "Ada"}
	tests := []struct {
		name       string
		now        time.Time
		wantBefore time.Time
		wantAfter  time.Time
		code       string
	}{
		{"backdated and truncated", now.Add(1500 * time.Millisecond), now.Add(-59 * time.Second), now.Add(-59*time.Second + 365*24*time.Hour), ""},
		{"capped by the CA", p.inter.NotAfter.Add(-24 * time.Hour), p.inter.NotAfter.Add(-24*time.Hour - time.Minute), p.inter.NotAfter, ""},
		{"CA expired", p.inter.NotAfter.Add(time.Hour), time.Time{}, time.Time{}, issuer.CodeCAExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request("tls-client", newCSR(t, key), attrs)
			req.Now = tt.now
			signed, err := p.iss.SignCertificate(context.Background(), req)
			if tt.code != "" {
				wantCode(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !signed.NotBefore.Equal(tt.wantBefore) || !signed.NotAfter.Equal(tt.wantAfter) {
				t.Errorf("validity %v..%v, want %v..%v", signed.NotBefore, signed.NotAfter, tt.wantBefore, tt.wantAfter)
			}
			cert, err := x509.ParseCertificate(signed.DER)
			if err != nil {
				t.Fatal(err)
			}
			if !cert.NotBefore.Equal(signed.NotBefore) || !cert.NotAfter.Equal(signed.NotAfter) {
				t.Errorf("certificate validity %v..%v, signed %v..%v", cert.NotBefore, cert.NotAfter, signed.NotBefore, signed.NotAfter)
			}
		})
	}
	t.Run("backdate option", func(t *testing.T) {
		iss, err := issuer.New([]issuer.CA{{ID: "issuing", Certificate: p.inter, Key: p.interKey}}, issuer.DefaultProfiles(), issuer.Options{Backdate: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		signed, err := iss.SignCertificate(context.Background(), request("tls-client", newCSR(t, key), attrs))
		if err != nil {
			t.Fatal(err)
		}
		if !signed.NotBefore.Equal(now.Add(-time.Hour)) {
			t.Errorf("NotBefore %v, want %v", signed.NotBefore, now.Add(-time.Hour))
		}
		cert, _ := x509.ParseCertificate(signed.DER)
		if len(cert.CRLDistributionPoints)+len(cert.OCSPServer)+len(cert.IssuingCertificateURL) != 0 {
			t.Error("URLs without a BaseURL")
		}
	})
}

// TestCAKeyTypes issues from CAs of every key type: the lint signature and
// the signature options follow the CA key.
func TestCAKeyTypes(t *testing.T) {
	p := newPKI(t, nil)
	ctx := context.Background()
	for i, kt := range []string{issuer.KeyP256, issuer.KeyP384, issuer.KeyEd25519, "RSA-3072"} {
		t.Run(kt, func(t *testing.T) {
			key := newKey(t, kt)
			rootCA := issuer.CA{ID: "root", Certificate: p.root, Key: p.rootKey}
			inter, err := issuer.NewIntermediate(ctx, rootCA, key.Public(), pkix.Name{CommonName: "issuing " + kt}, 365*24*time.Hour, big.NewInt(int64(10+i)), now, issuer.Options{})
			if err != nil {
				t.Fatal(err)
			}
			iss, err := issuer.New([]issuer.CA{{ID: "issuing", Certificate: inter, Key: key, Chain: []*x509.Certificate{p.root}}}, issuer.DefaultProfiles(), issuer.Options{})
			if err != nil {
				t.Fatal(err)
			}
			signed, err := iss.SignCertificate(ctx, request("tls-server", newCSR(t, newKey(t, issuer.KeyP256)), map[string]string{"dns_names": "a.example.test"}))
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(signed.DER)
			if err != nil {
				t.Fatal(err)
			}
			inters := x509.NewCertPool()
			inters.AddCert(inter)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: p.roots, Intermediates: inters, CurrentTime: now, DNSName: "a.example.test"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConcurrent signs from many goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	p := newPKI(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Go(func() {
			key := newKey(t, issuer.KeyP256)
			for n := range 4 {
				req := request("tls-client", newCSR(t, key), map[string]string{"common_name": "Ada"})
				req.Serial = domain.Serial(big.NewInt(int64(0x100 + g*16 + n)).Text(16))
				if _, err := p.iss.SignCertificate(context.Background(), req); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestContextCanceled(t *testing.T) {
	p := newPKI(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.iss.SignCertificate(ctx, request("tls-client", newCSR(t, newKey(t, issuer.KeyP256)), map[string]string{"common_name": "Ada"}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}

// TestCheckGenerated: the pre-check for generated keys refuses what
// SignCertificate would refuse, with the same codes, and passes what it signs.
func TestCheckGenerated(t *testing.T) {
	ps := issuer.DefaultProfiles()
	for i := range ps {
		if ps[i].Name == "tls-client" {
			ps[i].KeyTypes = []string{issuer.KeyP256, issuer.KeyRSA}
			ps[i].MinRSABits = 3072
		}
	}
	p := newPKI(t, ps)
	ada := map[string]string{"common_name": "Ada Lovelace", "email": "ada@example.test"}
	for _, kt := range []string{issuer.KeyP256, issuer.KeyRSA} {
		bits, err := p.iss.CheckGenerated("tls-client", "issuing", kt, ada, now)
		if err != nil || bits != 3072 {
			t.Fatalf("CheckGenerated(%s) = %d, %v", kt, bits, err)
		}
	}
	// Without attributes (a registered subject) only the rest is checked.
	if _, err := p.iss.CheckGenerated("email-protection", "issuing", issuer.KeyP256, nil, now); err != nil {
		t.Fatalf("CheckGenerated without attributes: %v", err)
	}
	// What passes the pre-check is signed.
	if _, err := p.iss.SignCertificate(context.Background(), request("tls-client", newCSR(t, newKey(t, issuer.KeyP256)), ada)); err != nil {
		t.Fatalf("SignCertificate after the pre-check: %v", err)
	}
	cases := []struct {
		profile, ca, kt string
		attrs           map[string]string
		code            string
	}{
		{"nope", "issuing", issuer.KeyP256, ada, issuer.CodeUnknownProfile},
		{"Not A Slug", "issuing", issuer.KeyP256, ada, issuer.CodeUnknownProfile},
		{"tls-client", "nope", issuer.KeyP256, ada, issuer.CodeUnknownCA},
		{"tls-client", "issuing", issuer.KeyEd25519, ada, issuer.CodeKeyTypeNotAllowed},
		{"tls-client", "issuing", "DSA", ada, issuer.CodeKeyTypeNotAllowed},
		{"tls-client", "issuing", issuer.KeyP256, map[string]string{"email": "ada@example.test"}, issuer.CodeMissingAttribute},
		{"tls-client", "issuing", issuer.KeyP256, map[string]string{"common_name": "Ada", "country": "Sweden"}, issuer.CodeBadAttribute},
		{"email-protection", "issuing", issuer.KeyP256, map[string]string{"common_name": "Ada Lovelace"}, issuer.CodeMissingAttribute},
	}
	for _, c := range cases {
		_, err := p.iss.CheckGenerated(c.profile, c.ca, c.kt, c.attrs, now)
		wantCode(t, err, c.code, c.attrs["common_name"], c.attrs["country"], c.attrs["email"])
	}
	// A CA that expires before a certificate would start, as SignCertificate
	// refuses it.
	later := p.inter.NotAfter.Add(time.Hour)
	_, err := p.iss.CheckGenerated("tls-client", "issuing", issuer.KeyP256, ada, later)
	wantCode(t, err, issuer.CodeCAExpired)
	req := request("tls-client", newCSR(t, newKey(t, issuer.KeyP256)), ada)
	req.Now = later
	_, err = p.iss.SignCertificate(context.Background(), req)
	wantCode(t, err, issuer.CodeCAExpired)
}
