package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/hsm/softhsmtest"
)

// TestPKCS11CA runs init with the CA keys on a SoftHSM2 token, then issues
// through the server: the CA keys never exist outside the token.
func TestPKCS11CA(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	env := map[string]string{"CALEDGER_PKCS11_PIN": tok.PIN}
	data := filepath.Join(t.TempDir(), "data")
	var out bytes.Buffer
	err := run(t.Context(), []string{"init", "--data", data, "--key-provider", "pkcs11",
		"--pkcs11-library", tok.Library, "--pkcs11-token", tok.TokenLabel}, func(k string) string { return env[k] }, &out, io.Discard)
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(data, caKeysDir)); len(entries) != 0 {
		t.Errorf("software CA key files exist: %v", entries)
	}
	cfg, err := os.ReadFile(filepath.Join(data, configFile))
	if err != nil || bytes.Contains(cfg, []byte(tok.PIN)) || !bytes.Contains(cfg, []byte(`"pkcs11"`)) {
		t.Fatalf("config %s (%v): PIN stored or provider missing", cfg, err)
	}

	// Without the PIN, serve refuses to start with a clear error.
	err = run(t.Context(), []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "CALEDGER_PKCS11_PIN") {
		t.Fatalf("serve without PIN: %v", err)
	}

	s := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, env)
	admin := mtlsClient(t, data, "https://"+s.addr, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
	var subject struct{ ID string }
	admin.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "HSM Person"}}, http.StatusCreated, &subject)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	b := admin.json("POST", "/v1/certificates", map[string]string{"subject_id": subject.ID, "profile": "tls-client",
		"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, http.StatusCreated, nil)
	var issued struct{ Chain string }
	if err := json.Unmarshal(b, &issued); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	rootPEMBytes, _ := os.ReadFile(filepath.Join(data, rootPEM))
	roots.AppendCertsFromPEM(rootPEMBytes)
	inter := x509.NewCertPool()
	rest := []byte(issued.Chain)
	var leaf *x509.Certificate
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if leaf == nil {
			leaf = c
		} else {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("chain from the HSM CA does not verify: %v", err)
	}
}
