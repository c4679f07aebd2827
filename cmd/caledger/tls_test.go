package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestLoadOrCreateServerCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	sc, err := loadOrCreateServerCert(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if !sc.created || sc.certPath != filepath.Join(dir, serverCertFile) {
		t.Errorf("created %v at %s", sc.created, sc.certPath)
	}
	leaf := sc.cert.Leaf
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if !slices.Equal(leaf.DNSNames, []string{"localhost"}) {
		t.Errorf("DNS names %v", leaf.DNSNames)
	}
	wantIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(wantIPs[0]) || !leaf.IPAddresses[1].Equal(wantIPs[1]) {
		t.Errorf("IP addresses %v, want %v", leaf.IPAddresses, wantIPs)
	}
	if leaf.IsCA || !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("IsCA %v, ExtKeyUsage %v: want a server-auth leaf", leaf.IsCA, leaf.ExtKeyUsage)
	}
	if !leaf.NotBefore.Before(now) || !leaf.NotAfter.Equal(now.AddDate(1, 0, 0)) {
		t.Errorf("valid %v to %v, want from before %v for one year", leaf.NotBefore, leaf.NotAfter, now)
	}
	// Self-signed: it verifies against itself for both names.
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}

	again, err := loadOrCreateServerCert(dir, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if again.created || !bytes.Equal(again.cert.Certificate[0], sc.cert.Certificate[0]) {
		t.Error("second call did not load the same certificate")
	}
}

func TestLoadOrCreateServerCertOrphanKey(t *testing.T) {
	// A crash after the key was written but before the certificate: the next
	// start generates both.
	dir := t.TempDir()
	keyPath := filepath.Join(dir, serverKeyFile)
	if err := os.WriteFile(keyPath, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	sc, err := loadOrCreateServerCert(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !sc.created {
		t.Error("certificate not created")
	}
	if key, _ := os.ReadFile(keyPath); bytes.Equal(key, []byte("stale")) {
		t.Error("stale key kept")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.pem")
	if err := os.WriteFile(path, []byte("old"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("content %q, want new", b)
	}
	checkMode(t, path, 0o600)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d entries, want no temporary file left", len(entries))
	}
	if err := writeFileAtomic(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}
