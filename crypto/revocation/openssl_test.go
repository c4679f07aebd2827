package revocation

import (
	"context"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOCSPOpenSSL has `openssl ocsp` query the responder over HTTP (POST, with
// the nonce OpenSSL sends by default) and verify the responses against the CA.
func TestOCSPOpenSSL(t *testing.T) {
	openssl := requireOpenSSL(t)
	for _, kt := range keyTypes {
		t.Run(kt.name, func(t *testing.T) {
			ca := newTestCA(t, kt.new(), "OpenSSL OCSP CA")
			revokedAt := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
			good := new(big.Int).SetBytes([]byte{0x81, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16})
			table := &statusTable{answers: map[string]Answer{
				good.String(): {Status: Good},
				"4660":        {Status: Revoked, RevokedAt: revokedAt, Reason: 1}, // 0x1234
			}}
			r := newTestResponder(t, ca, table, Options{}) // real clock: OpenSSL checks the validity window
			srv := newTestServer(t, r)
			caPEM := ca.writePEM(t, t.TempDir(), "ca.pem")

			run := func(serial string, extra ...string) string {
				t.Helper()
				args := append([]string{"ocsp", "-issuer", caPEM, "-serial", serial, "-url", srv.URL + "/ocsp", "-CAfile", caPEM, "-resp_text"}, extra...)
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, openssl, args...).CombinedOutput()
				if err != nil {
					t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			mustContain := func(out string, want ...string) {
				t.Helper()
				for _, w := range want {
					if !strings.Contains(out, w) {
						t.Errorf("openssl output lacks %q:\n%s", w, out)
					}
				}
				for _, bad := range []string{"WARNING", "nonce verify error", "verify error", "Response Verify Failure"} {
					if strings.Contains(out, bad) {
						t.Errorf("openssl output has %q:\n%s", bad, out)
					}
				}
			}

			goodHex := "0x" + good.Text(16)
			out := run(goodHex)
			mustContain(out, "Response verify OK", goodHex+": good", "OCSP Nonce:", "Cert Status: good")

			out = run("0x1234")
			mustContain(out, "Response verify OK", "0x1234: revoked", "OCSP Nonce:", "Reason: keyCompromise",
				"Revocation Time: "+revokedAt.Format("Jan _2 15:04:05 2006 GMT"))

			out = run("0x999999")
			mustContain(out, "Response verify OK", "0x999999: unknown")

			// Without a nonce, from the cache the second time.
			first := run(goodHex, "-no_nonce")
			mustContain(first, "Response verify OK", goodHex+": good")
			if strings.Contains(first, "OCSP Nonce:") {
				t.Errorf("nonce in the response to a request without one:\n%s", first)
			}
			run(goodHex, "-no_nonce")
		})
	}
}

// TestOCSPOpenSSLFiles drives openssl with request and response files
// (-reqout / -respin), the offline path some relying parties use.
func TestOCSPOpenSSLFiles(t *testing.T) {
	openssl := requireOpenSSL(t)
	ca := newTestCA(t, newP256(t), "OpenSSL files CA")
	r := newTestResponder(t, ca, &statusTable{answers: map[string]Answer{"42": {Status: Good}}}, Options{})
	dir := t.TempDir()
	caPEM := ca.writePEM(t, dir, "ca.pem")
	reqPath, respPath := filepath.Join(dir, "req.der"), filepath.Join(dir, "resp.der")

	out, err := exec.CommandContext(t.Context(), openssl, "ocsp", "-issuer", caPEM, "-serial", "42", "-reqout", reqPath).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl -reqout: %v\n%s", err, out)
	}
	req, err := os.ReadFile(reqPath)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.Respond(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(respPath, resp, 0o600); err != nil {
		t.Fatal(err)
	}
	// -reqin, not -serial, so that OpenSSL checks the nonce of the saved request.
	out, err = exec.CommandContext(t.Context(), openssl, "ocsp", "-reqin", reqPath, "-respin", respPath, "-issuer", caPEM, "-CAfile", caPEM, "-resp_text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl -respin: %v\n%s", err, out)
	}
	for _, w := range []string{"Response verify OK", "Serial Number: 2A", "Cert Status: good", "OCSP Nonce:"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("openssl output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(strings.ToLower(string(out)), "error") {
		t.Errorf("openssl reports an error:\n%s", out)
	}
}
