package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestReadmeQuickStart runs the shell blocks of the README's quick start that
// talk to the server against a freshly initialised and served data directory,
// and checks what they print. The lines run as printed but for the two port
// numbers, under "set -euo pipefail" and with curl failing on HTTP errors. It
// is what keeps "the README's lines work as printed" true.
func TestReadmeQuickStart(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Quick start\n")
	if !ok {
		t.Fatal("README.md has no Quick start section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		if strings.Contains(m[1], "curl") {
			blocks = append(blocks, m[1])
		}
	}
	if len(blocks) != 3 {
		t.Fatalf("the quick start has %d shell blocks with curl lines; this test runs the anonymous one, the officer one and the staff one", len(blocks))
	}

	// The README's ports may be taken on the machine running the tests, so the
	// server listens on free ones, and the lines name those. Every URL the
	// lines use is explicit, so the base URL in the certificates is not used.
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := run(t.Context(), []string{"init", "--data", data}, noEnv, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0", "--public-addr", "127.0.0.1:0"}, nil)
	_, port, _ := net.SplitHostPort(s.addr)
	_, public, _ := net.SplitHostPort(s.public)

	// The lines unchanged, but a curl that gets an HTTP error fails the script.
	script := "set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n" +
		strings.Join(blocks, "\n") + "\necho \"README-SERIAL=$SERIAL README-ID=$ID\"\n"
	script = strings.NewReplacer("localhost:8443", "localhost:"+port, "localhost:8080", "localhost:"+public).Replace(script)
	if strings.Contains(script, ":8443") || strings.Contains(script, ":8080") {
		t.Fatal("the quick start names the default ports other than as localhost:8443 and localhost:8080")
	}
	caledgerWrapper(t, dir) // the lines run bin/caledger
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("the quick start failed: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`README-SERIAL=([0-9a-f]+) README-ID=([0-9a-f]{32})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the quick start set no serial or subject id:\n%s", out)
	}
	serial, id := m[1], m[2]
	for _, want := range []string{
		`"id":"issuing"`,              // GET /v1/cas
		"ada.pem: OK",                 // openssl verify
		"Response verify OK",          // openssl ocsp checked the response's signature
		"ada.pem: good",               // before the revocation
		"ada.pem: revoked",            // after it
		`"status":"valid"`,            // the certificate's record, before the revocation
		`"reason":"keyCompromise"`,    // the revocation's answer
		"Certificate Revocation List", // openssl crl read the DER CRL
		"Key Compromise",              // the CRL's entry
		`[{"id":"` + id + `"`,         // the search found the subject
		`"reissued":[]`,               // the correction: nothing valid to reissue
		"\n204\n",                     // the deletion
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the quick start's output lacks %q", want)
		}
	}
	// The auditor's credential, issued online, lists the first certificate:
	// an admin's or a staff member's, of a role profile.
	if !regexp.MustCompile(`\[\{"serial":"[0-9a-f]+","ca":"issuing","subject_id":"[0-9a-f]{32}","profile":"[a-z-]+"`).MatchString(out) {
		t.Error("the auditor's list of certificates is missing")
	}
	// The auditor's checkpoint: origin, size, root, then the signature line.
	if !regexp.MustCompile(`(?m)^caledger\.ledger/[0-9a-f]{16}\n[0-9]+\n[A-Za-z0-9+/]{43}=\n\n— caledger\.ledger/[0-9a-f]{16} `).MatchString(out) {
		t.Error("the auditor's checkpoint is missing")
	}
	// The auditor's audit of the whole ledger passed and kept its checkpoint.
	if !regexp.MustCompile(`(?m)^OK: [0-9]+ events verified; the checkpoint is kept in audit\.checkpoint$`).MatchString(out) {
		t.Error("the auditor's audit did not pass")
	}
	// The soft token opened with its password, and holds the person's
	// client certificate.
	if !regexp.MustCompile(`(?m)^subject=CN ?= ?Grace Hopper$`).MatchString(out) || !strings.Contains(out, "TLS Web Client Authentication") {
		t.Error("openssl did not read the soft token's certificate")
	}
	if strings.Count(out, `"common_name":"Ada Lovelace"`) != 2 {
		t.Error("the read and the search did not both return the subject's name")
	}
	// openssl prints whole bytes: a serial of an odd number of digits gets a 0.
	if len(serial)%2 == 1 {
		serial = "0" + serial
	}
	if !strings.Contains(strings.ToLower(strings.ReplaceAll(out, ":", "")), "serial number "+serial) {
		t.Errorf("the CRL openssl printed does not list %s", serial)
	}
	if i, j := strings.Index(out, "ada.pem: good"), strings.Index(out, "ada.pem: revoked"); i > j {
		t.Error("OCSP said revoked before good")
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
