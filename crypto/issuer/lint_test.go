package issuer_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/domain"
)

// wantLints checks that err is a lint-failed rejection naming exactly lints.
func wantLints(t *testing.T, err error, lints []string, secrets ...string) {
	t.Helper()
	de := wantCode(t, err, issuer.CodeLintFailed, secrets...)
	var lf *domain.LintFailure
	if !errors.As(err, &lf) {
		t.Fatalf("error %v has no LintFailure", err)
	}
	if !slices.Equal(lf.Lints, lints) {
		t.Errorf("failed lints %q, want %q", lf.Lints, lints)
	}
	for _, l := range lints {
		if !strings.Contains(de.Detail, l) {
			t.Errorf("detail %q does not name %s", de.Detail, l)
		}
	}
}

// TestLintingRuns proves that the lints run on every issuance and stop it:
// certificates that pass every check of this package but break a lint of each
// source are refused, and nothing is signed.
func TestLintingRuns(t *testing.T) {
	ctx := context.Background()
	csr := newCSR(t, newKey(t, issuer.KeyP256))

	t.Run("RFC 5280 via the test hook", func(t *testing.T) {
		p := newPKI(t, nil)
		long := "Ada " + strings.Repeat("Lovelace", 8) // 68 characters
		issuer.SetMutate(p.iss, func(c *x509.Certificate) {
			c.RawSubject = nil
			c.Subject = pkix.Name{CommonName: long}
		})
		_, err := p.iss.SignCertificate(ctx, request("tls-client", csr, map[string]string{"common_name": "Ada"}))
		wantLints(t, err, []string{"e_subject_common_name_max_length"}, long)
	})
	t.Run("community via the test hook", func(t *testing.T) {
		p := newPKI(t, nil)
		issuer.SetMutate(p.iss, func(c *x509.Certificate) {
			c.RawSubject = nil
			c.Subject = pkix.Name{CommonName: "Ada", Country: []string{"gb"}}
		})
		_, err := p.iss.SignCertificate(ctx, request("tls-client", csr, map[string]string{"common_name": "Ada"}))
		wantLints(t, err, []string{"e_subj_country_not_uppercase"})
	})
	t.Run("RFC 8813 via the test hook", func(t *testing.T) {
		p := newPKI(t, nil)
		issuer.SetMutate(p.iss, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageKeyEncipherment })
		_, err := p.iss.SignCertificate(ctx, request("tls-server", csr, map[string]string{"dns_names": "www.example.test"}))
		wantLints(t, err, []string{"e_ecdsa_allowed_ku"}, "www.example.test")
	})
	t.Run("a profile whose key usage contradicts its extended key usage", func(t *testing.T) {
		// data_encipherment is kept for RSA keys, and RFC 5280 4.2.1.12 allows
		// clientAuth only with digitalSignature and keyAgreement. This package
		// leaves that table to zlint, so a loaded profile reaches it unhook'd.
		profiles, err := issuer.LoadProfiles(strings.NewReader(`{"profiles": [{"name": "vpn-client", "validity": "720h",
			"key_usage": ["digital_signature", "data_encipherment"], "ext_key_usage": ["client_auth"],
			"key_types": ["RSA"], "required": ["common_name"], "allowed": []}]}`))
		if err != nil {
			t.Fatal(err)
		}
		p := newPKI(t, profiles)
		_, err = p.iss.SignCertificate(ctx, request("vpn-client", newCSR(t, newKey(t, issuer.KeyRSA)), map[string]string{"common_name": "Ada Lovelace"}))
		wantLints(t, err, []string{"e_key_usage_and_extended_key_usage_inconsistent"}, "Ada", "Lovelace")
	})
	t.Run("attribute content only zlint checks", func(t *testing.T) {
		p := newPKI(t, nil)
		attrs := map[string]string{"common_name": "Ada Lovelace", "organization": "Lovelace &amp; Babbage"}
		_, err := p.iss.SignCertificate(ctx, request("tls-client", csr, attrs))
		wantLints(t, err, []string{"e_subj_contains_html_entities"}, "Lovelace", "Babbage", "&amp;")
		attrs["organization"] = "LovelaceÃ© Ltd" // UTF-8 read as Latin-1
		_, err = p.iss.SignCertificate(ctx, request("tls-client", csr, attrs))
		wantLints(t, err, []string{"e_utf8_latin1_mixup"}, "Lovelace")
	})
	t.Run("the small-key search runs for role profiles only", func(t *testing.T) {
		p := newPKI(t, nil)
		for _, prof := range issuer.DefaultProfiles() {
			has := slices.Contains(issuer.LintNames(p.iss, prof.Name), "e_ecdsa_small_private_key")
			if has != (prof.Role != "") {
				t.Errorf("profile %s (role %q) runs e_ecdsa_small_private_key: %v", prof.Name, prof.Role, has)
			}
		}
	})
}

// TestLintSet checks the registry: the chosen sources only, the exclusions, and
// only lints that can return Error.
func TestLintSet(t *testing.T) {
	p := newPKI(t, nil)
	sources := issuer.LintSourceNames()
	names := issuer.LintNames(p.iss, "tls-client")
	if len(names) < 100 {
		t.Errorf("only %d lints run", len(names))
	}
	for _, n := range names {
		l := lint.GlobalRegistry().CertificateLints().ByName(n)
		if !strings.HasPrefix(n, "e_") || l == nil || !slices.Contains(sources, string(l.Source)) {
			t.Errorf("lint %s (source %v) should not run", n, l.Source)
		}
		if _, ok := issuer.ExcludedLints[n]; ok {
			t.Errorf("excluded lint %s runs", n)
		}
	}
	for _, must := range []string{"e_subject_common_name_max_length", "e_ext_san_not_critical_without_subject",
		"e_key_usage_and_extended_key_usage_inconsistent", "e_ecdsa_allowed_ku", "e_subj_country_not_uppercase",
		"e_mp_ecdsa_signature_encoding_correct", "e_rsa_fermat_factorization", "e_serial_number_longer_than_20_octets"} {
		if !slices.Contains(names, must) {
			t.Errorf("lint %s does not run", must)
		}
	}
	for n := range issuer.ExcludedLints {
		if lint.GlobalRegistry().CertificateLints().ByName(n) == nil {
			t.Errorf("excluded lint %s is not registered", n)
		}
	}
}

// TestLintExclusionsDocumented keeps docs/profiles.md in step with the code.
func TestLintExclusionsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/profiles.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []map[string]string{issuer.ExcludedLints, issuer.RoleOnlyLints} {
		for n := range set {
			if !strings.Contains(string(doc), "`"+n+"`") {
				t.Errorf("docs/profiles.md does not mention %s", n)
			}
		}
	}
	for _, s := range issuer.LintSourceNames() {
		if !strings.Contains(string(doc), s) {
			t.Errorf("docs/profiles.md does not mention source %s", s)
		}
	}
	for _, prof := range issuer.DefaultProfiles() {
		if !strings.Contains(string(doc), "`"+prof.Name+"`") {
			t.Errorf("docs/profiles.md does not mention profile %s", prof.Name)
		}
	}
}

// TestCACertificatesPassLints: what NewRoot and NewIntermediate make passes the
// same lint set (CA-specific lints included).
func TestCACertificatesPassLints(t *testing.T) {
	p := newPKI(t, nil)
	names := issuer.LintNames(p.iss, "tls-client")
	for _, c := range []*x509.Certificate{p.root, p.inter} {
		zc, err := zx509.ParseCertificate(c.Raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			l := lint.GlobalRegistry().CertificateLints().ByName(n)
			if r := l.Execute(zc, lint.NewEmptyConfig()); r.Status == lint.Error || r.Status == lint.Fatal {
				t.Errorf("%s: lint %s: %s", c.Subject.CommonName, n, r.Details)
			}
		}
	}
}
