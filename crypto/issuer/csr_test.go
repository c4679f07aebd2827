package issuer_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/domain"
)

// forge returns csr with its signature's last byte flipped.
func forge(t testing.TB, csr []byte) []byte {
	t.Helper()
	out := bytes.Clone(csr)
	out[len(out)-1] ^= 0x01
	return out
}

// swapKey returns csr with its public key replaced by other's (same type and
// size, so every length stays the same): a request for a key the requester does
// not hold.
func swapKey(t testing.TB, csr []byte, other crypto.Signer) []byte {
	t.Helper()
	parsed, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(other.Public())
	if err != nil {
		t.Fatal(err)
	}
	if len(spki) != len(parsed.RawSubjectPublicKeyInfo) {
		t.Fatalf("SPKI lengths differ: %d and %d", len(spki), len(parsed.RawSubjectPublicKeyInfo))
	}
	return bytes.Replace(csr, parsed.RawSubjectPublicKeyInfo, spki, 1)
}

// withExponent returns an RSA CSR with public exponent 65537 replaced by 65539
// (same DER length); its signature no longer verifies.
func withExponent(t testing.TB, csr []byte) []byte {
	t.Helper()
	e65537 := []byte{0x02, 0x03, 0x01, 0x00, 0x01}
	if bytes.Count(csr, e65537) != 1 {
		t.Fatal("exponent not found once")
	}
	return bytes.Replace(csr, e65537, []byte{0x02, 0x03, 0x01, 0x00, 0x03}, 1)
}

// sha1CSR is an RSA CSR signed with SHA-1, which Go no longer makes.
func sha1CSR(t *testing.T) []byte {
	t.Helper()
	csr := newCSR(t, newKey(t, issuer.KeyRSA))
	// Re-sign the request info with SHA1WithRSA by hand.
	parsed, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, issuer.KeyRSA)
	h := crypto.SHA1.New()
	h.Write(parsed.RawTBSCertificateRequest)
	sig, err := key.Sign(nil, h.Sum(nil), crypto.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS asn1.RawValue
		Alg pkix.AlgorithmIdentifier
		Sig asn1.BitString
	}{
		asn1.RawValue{FullBytes: parsed.RawTBSCertificateRequest},
		pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}, Parameters: asn1.NullRawValue},
		asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseCSR(t *testing.T) {
	tests := []struct {
		name string
		csr  func(t *testing.T) []byte
		code string
	}{
		{"P-256", func(t *testing.T) []byte { return newCSR(t, newKey(t, issuer.KeyP256)) }, ""},
		{"P-384", func(t *testing.T) []byte { return newCSR(t, newKey(t, issuer.KeyP384)) }, ""},
		{"Ed25519", func(t *testing.T) []byte { return newCSR(t, newKey(t, issuer.KeyEd25519)) }, ""},
		{"RSA-2048", func(t *testing.T) []byte { return newCSR(t, newKey(t, "RSA-2048")) }, ""},
		{"RSA-3072", func(t *testing.T) []byte { return newCSR(t, newKey(t, "RSA-3072")) }, ""},
		{"empty", func(t *testing.T) []byte { return nil }, issuer.CodeBadCSR},
		{"garbage", func(t *testing.T) []byte { return []byte("-----BEGIN CERTIFICATE REQUEST-----") }, issuer.CodeBadCSR},
		{"PEM", func(t *testing.T) []byte { return pemCSR(t) }, issuer.CodeBadCSR},
		{"truncated", func(t *testing.T) []byte { c := newCSR(t, newKey(t, issuer.KeyP256)); return c[:len(c)-5] }, issuer.CodeBadCSR},
		{"trailing data", func(t *testing.T) []byte { return append(newCSR(t, newKey(t, issuer.KeyP256)), 0) }, issuer.CodeBadCSR},
		{"over 64 KiB", func(t *testing.T) []byte { return make([]byte, issuer.MaxCSRSize+1) }, issuer.CodeBadCSR},
		{"forged signature", func(t *testing.T) []byte { return forge(t, newCSR(t, newKey(t, issuer.KeyP256))) }, issuer.CodeCSRSignature},
		{"forged Ed25519 signature", func(t *testing.T) []byte { return forge(t, newCSR(t, newKey(t, issuer.KeyEd25519))) }, issuer.CodeCSRSignature},
		{"forged RSA signature", func(t *testing.T) []byte { return forge(t, newCSR(t, newKey(t, issuer.KeyRSA))) }, issuer.CodeCSRSignature},
		{"someone else's key", func(t *testing.T) []byte {
			return swapKey(t, newCSR(t, newKey(t, issuer.KeyP256)), newKey(t, issuer.KeyP256))
		}, issuer.CodeCSRSignature},
		{"SHA-1 signature", sha1CSR, issuer.CodeCSRSignature},
		{"RSA-1024", func(t *testing.T) []byte { return newCSR(t, newKey(t, "RSA-1024")) }, issuer.CodeWeakKey},
		{"RSA exponent 65539", func(t *testing.T) []byte { return withExponent(t, newCSR(t, newKey(t, issuer.KeyRSA))) }, issuer.CodeWeakKey},
		{"P-521", func(t *testing.T) []byte { return newCSR(t, newKey(t, "P-521")) }, issuer.CodeKeyTypeNotAllowed},
		{"Ed448 (unknown to Go)", func(t *testing.T) []byte { return readTestdata(t, "openssl-ed448.csr") }, issuer.CodeKeyTypeNotAllowed},
		{"openssl P-256", func(t *testing.T) []byte { return readTestdata(t, "openssl-p256.csr") }, ""},
		{"openssl P-384", func(t *testing.T) []byte { return readTestdata(t, "openssl-p384.csr") }, ""},
		{"openssl Ed25519", func(t *testing.T) []byte { return readTestdata(t, "openssl-ed25519.csr") }, ""},
		{"openssl RSA-2048 with a SAN request", func(t *testing.T) []byte { return readTestdata(t, "openssl-rsa2048.csr") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := issuer.ParseCSR(tt.csr(t))
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if err := csr.CheckSignature(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if csr != nil {
				t.Error("a rejected CSR was returned")
			}
			wantCode(t, err, tt.code, "Mallory", "Evil", "evil.example")
		})
	}
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pemCSR(t *testing.T) []byte {
	b := readTestdata(t, "openssl-p256.csr.pem")
	if !strings.HasPrefix(string(b), "-----BEGIN") {
		t.Fatal("testdata/openssl-p256.csr.pem is not PEM")
	}
	return b
}

// TestRejections: every rejection SignCertificate makes, with its code, and no
// attribute value, DNS name or CSR content in its messages.
func TestRejections(t *testing.T) {
	p := newPKI(t, nil)
	only256 := issuer.DefaultProfiles()[1]
	only256.Name, only256.KeyTypes = "p256-only", []string{issuer.KeyP256}
	rsa3072 := issuer.DefaultProfiles()[1]
	rsa3072.Name, rsa3072.MinRSABits = "rsa-3072", 3072
	custom := newPKI(t, []issuer.Profile{only256, rsa3072})
	good := newCSR(t, newKey(t, issuer.KeyP256))
	ada := map[string]string{"common_name": "Ada Lovelace"}
	with := func(k, v string) map[string]string {
		return map[string]string{"common_name": "Ada Lovelace", "dns_names": "www.example.test", k: v}
	}
	secrets := []string{"Ada", "Lovelace", "example.test", "Mallory", "Evil", "evil.example", "Sweden", "192.0.2", "ada@"}
	tests := []struct {
		name    string
		iss     *issuer.Issuer
		profile string
		ca      string
		serial  string
		csr     []byte
		attrs   map[string]string
		code    string
	}{
		{"unknown profile", p.iss, "code-signing", "", "", good, ada, issuer.CodeUnknownProfile},
		{"profile name not a slug", p.iss, "Ada Lovelace", "", "", good, ada, issuer.CodeUnknownProfile},
		{"unknown CA", p.iss, "tls-client", "other", "", good, ada, issuer.CodeUnknownCA},
		{"CA id not a slug", p.iss, "tls-client", "Ada Lovelace", "", good, ada, issuer.CodeUnknownCA},
		{"serial not hex", p.iss, "tls-client", "", "xyz", good, ada, issuer.CodeBadSerial},
		{"serial 21 octets", p.iss, "tls-client", "", "ff" + strings.Repeat("00", 19), good, ada, issuer.CodeBadSerial},
		{"bad CSR", p.iss, "tls-client", "", "", []byte("Ada Lovelace"), ada, issuer.CodeBadCSR},
		{"forged CSR", p.iss, "tls-client", "", "", forge(t, good), ada, issuer.CodeCSRSignature},
		{"RSA-1024", p.iss, "tls-client", "", "", newCSR(t, newKey(t, "RSA-1024")), ada, issuer.CodeWeakKey},
		{"RSA below the profile's minimum", custom.iss, "rsa-3072", "", "", newCSR(t, newKey(t, "RSA-2048")), ada, issuer.CodeWeakKey},
		{"RSA at the profile's minimum", custom.iss, "rsa-3072", "", "", newCSR(t, newKey(t, "RSA-3072")), ada, ""},
		{"key type not in profile", custom.iss, "p256-only", "", "", newCSR(t, newKey(t, issuer.KeyEd25519)), ada, issuer.CodeKeyTypeNotAllowed},
		{"P-521", p.iss, "tls-client", "", "", newCSR(t, newKey(t, "P-521")), ada, issuer.CodeKeyTypeNotAllowed},
		{"missing required attribute", p.iss, "tls-client", "", "", good, map[string]string{"email": "ada@example.test"}, issuer.CodeMissingAttribute},
		{"empty required attribute", p.iss, "tls-client", "", "", good, map[string]string{"common_name": ""}, issuer.CodeMissingAttribute},
		{"tls-server without names", p.iss, "tls-server", "", "", good, ada, issuer.CodeMissingAttribute},
		{"tls-server with only empty names", p.iss, "tls-server", "", "", good, map[string]string{"dns_names": " , "}, issuer.CodeBadAttribute},
		{"email-protection without email", p.iss, "email-protection", "", "", good, ada, issuer.CodeMissingAttribute},
		{"country not a code", p.iss, "tls-server", "", "", good, with("country", "Sweden"), issuer.CodeBadAttribute},
		{"country not letters", p.iss, "tls-server", "", "", good, with("country", "4Ω"), issuer.CodeBadAttribute},
		{"common name too long", p.iss, "tls-server", "", "", good, with("common_name", "Ada "+strings.Repeat("Lovelace", 8)), issuer.CodeBadAttribute},
		{"common name with trailing space", p.iss, "tls-server", "", "", good, with("common_name", "Ada Lovelace "), issuer.CodeBadAttribute},
		{"organization with control", p.iss, "tls-server", "", "", good, with("organization", "Ada\x00Lovelace"), issuer.CodeBadAttribute},
		{"serial_number not printable", p.iss, "tls-client", "", "", good, map[string]string{"common_name": "Ada", "serial_number": "Lovelace*1"}, issuer.CodeBadAttribute},
		{"DNS name with underscore", p.iss, "tls-server", "", "", good, with("dns_names", "ada_lovelace.example.test"), issuer.CodeBadAttribute},
		{"DNS name with space", p.iss, "tls-server", "", "", good, with("dns_names", "ada lovelace.example.test"), issuer.CodeBadAttribute},
		{"DNS name with empty label", p.iss, "tls-server", "", "", good, with("dns_names", "ada..example.test"), issuer.CodeBadAttribute},
		{"DNS name hyphen", p.iss, "tls-server", "", "", good, with("dns_names", "-ada.example.test"), issuer.CodeBadAttribute},
		{"DNS label too long", p.iss, "tls-server", "", "", good, with("dns_names", strings.Repeat("a", 64)+".example.test"), issuer.CodeBadAttribute},
		{"DNS wildcard inside", p.iss, "tls-server", "", "", good, with("dns_names", "www.*.example.test"), issuer.CodeBadAttribute},
		{"DNS bare wildcard", p.iss, "tls-server", "", "", good, with("dns_names", "*.test"), issuer.CodeBadAttribute},
		{"DNS name that is an address", p.iss, "tls-server", "", "", good, with("dns_names", "192.0.2.1"), issuer.CodeBadAttribute},
		{"DNS bad punycode", p.iss, "tls-server", "", "", good, with("dns_names", "xn--a.example.test"), issuer.CodeBadAttribute},
		{"DNS unicode", p.iss, "tls-server", "", "", good, with("dns_names", "lövelace.example.test"), issuer.CodeBadAttribute},
		{"IP not an address", p.iss, "tls-server", "", "", good, with("ip_addresses", "192.0.2"), issuer.CodeBadAttribute},
		{"IP with zone", p.iss, "tls-server", "", "", good, with("ip_addresses", "fe80::1%eth0"), issuer.CodeBadAttribute},
		{"IP unspecified", p.iss, "tls-server", "", "", good, with("ip_addresses", "0.0.0.0"), issuer.CodeBadAttribute},
		{"email without domain", p.iss, "email-protection", "", "", good, map[string]string{"email": "ada@"}, issuer.CodeBadAttribute},
		{"email with display name", p.iss, "email-protection", "", "", good, map[string]string{"email": "Ada <ada@example.test>"}, issuer.CodeBadAttribute},
		{"email not ASCII", p.iss, "email-protection", "", "", good, map[string]string{"email": "adä@example.test"}, issuer.CodeBadAttribute},
		{"email double dot", p.iss, "email-protection", "", "", good, map[string]string{"email": "ada..l@example.test"}, issuer.CodeBadAttribute},
		{"too many names", p.iss, "tls-server", "", "", good, with("dns_names", manyNames(101)), issuer.CodeBadAttribute},
		{"HTML entity reaches the lints", p.iss, "tls-server", "", "", good, with("organization", "Lovelace &amp; Babbage"), issuer.CodeLintFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(tt.profile, tt.csr, tt.attrs)
			if tt.ca != "" {
				req.CAID = tt.ca
			}
			if tt.serial != "" {
				req.Serial = domain.Serial(tt.serial)
			}
			_, err := tt.iss.SignCertificate(context.Background(), req)
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, tt.code, secrets...)
		})
	}
}

func manyNames(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "h%d.example.test", i)
	}
	return b.String()
}
