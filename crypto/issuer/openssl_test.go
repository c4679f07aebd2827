package issuer_test

import (
	"context"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/issuer"
)

// TestOpenSSLInterop has OpenSSL make the key and CSR, issues from the CSR, and
// has OpenSSL verify the chain strictly. OpenSSL is a required peer here: the
// test fails, not skips, without it.
func TestOpenSSLInterop(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required: %v", err)
	}
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	write := func(name string, der []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := newPKI(t, nil)
	write("root.pem", p.root.Raw)
	write("intermediate.pem", p.inter.Raw)

	tests := []struct {
		profile, purpose string
		attrs            map[string]string
		newKey           []string
	}{
		{"tls-client", "sslclient", map[string]string{"common_name": "Ada Lovelace", "country": "GB"}, []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}},
		{"tls-server", "sslserver", map[string]string{"dns_names": "www.example.test", "ip_addresses": "192.0.2.1"}, []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"}},
		{"email-protection", "smimesign", map[string]string{"email": "ada@example.test"}, []string{"-newkey", "ed25519"}},
		{"officer", "sslclient", map[string]string{"common_name": "Officer One"}, []string{"-newkey", "rsa:2048"}},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			args := append([]string{"req", "-new"}, tt.newKey...)
			args = append(args, "-nodes", "-keyout", tt.profile+".key", "-subj", "/CN=ignored", "-outform", "DER", "-out", tt.profile+".csr")
			run(args...)
			csr, err := os.ReadFile(filepath.Join(dir, tt.profile+".csr"))
			if err != nil {
				t.Fatal(err)
			}
			signed, err := p.iss.SignCertificate(context.Background(), request(tt.profile, csr, tt.attrs))
			if err != nil {
				t.Fatal(err)
			}
			write("leaf.pem", signed.DER)
			out := run("verify", "-x509_strict", "-attime", strconv.FormatInt(now.Unix(), 10), "-purpose", tt.purpose, "-CAfile", "root.pem", "-untrusted", "intermediate.pem", "leaf.pem")
			if strings.TrimSpace(out) != "leaf.pem: OK" {
				t.Fatalf("openssl verify: %s", out)
			}
			text := run("x509", "-in", "leaf.pem", "-noout", "-text")
			if strings.Contains(text, "ignored") {
				t.Errorf("the CSR's subject reached the certificate:\n%s", text)
			}
			if tt.profile == "officer" && !strings.Contains(text, issuer.OIDRoles.String()) {
				t.Errorf("no roles extension %v in:\n%s", issuer.OIDRoles, text)
			}
		})
	}
}
