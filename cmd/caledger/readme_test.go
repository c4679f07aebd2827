package main

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestReadmeQuickStart runs the shell blocks of the README's quick start that
// talk to the server, as printed but for the two port numbers, against a
// freshly initialised and served data directory, and checks what they print.
// It is what keeps "the README's lines work as printed" true.
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
	if len(blocks) != 2 {
		t.Fatalf("the quick start has %d shell blocks with curl lines; this test runs the anonymous one and the officer one", len(blocks))
	}

	// The README's ports may be taken on the machine running the tests.
	port, public := freePort(t), freePort(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := run(t.Context(), []string{"init", "--data", data, "--base-url", "http://localhost:" + public}, noEnv, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:" + port, "--public-addr", "127.0.0.1:" + public}, nil)

	script := "set -euo pipefail\n" + strings.Join(blocks, "\n") + "\necho \"README-SERIAL=$SERIAL README-ID=$ID\"\n"
	script = strings.NewReplacer("localhost:8443", "localhost:"+port, "localhost:8080", "localhost:"+public).Replace(script)
	cmd := exec.CommandContext(t.Context(), "bash", "-c", script)
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
	compact := strings.ToLower(strings.ReplaceAll(out, ":", ""))
	for _, want := range []string{
		`"id":"issuing"`,              // GET /v1/cas
		"ada.pem: OK",                 // openssl verify
		"Response verify OK",          // openssl ocsp checked the response's signature
		"ada.pem: good",               // before the revocation
		"ada.pem: revoked",            // after it
		"Key Compromise",              // the CRL's entry
		`"Ada Lovelace"`,              // the read with a reason
		`"id":"` + id + `"`,           // the search found the subject
		`"reissued":[]`,               // the correction: nothing valid to reissue
		"\n204\n",                     // the deletion
		`"serial":"` + serial + `"`,   // the certificate's public record
		`"reason":"keyCompromise"`,    // the revocation's answer
		"Certificate Revocation List", // openssl crl read the DER CRL
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the quick start's output lacks %q", want)
		}
	}
	if !strings.Contains(compact, "serial number "+strings.TrimLeft(serial, "0")) {
		t.Errorf("the CRL openssl printed does not list %s", serial)
	}
	if i, j := strings.Index(out, "ada.pem: good"), strings.Index(out, "ada.pem: revoked"); i > j {
		t.Error("OCSP said revoked before good")
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
