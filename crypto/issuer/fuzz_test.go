package issuer_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/domain"
)

// FuzzParseCSR: ParseCSR never panics, rejects only with a *domain.Error of
// KindInvalid, and whatever it accepts has a signature that verifies and an
// accepted key.
func FuzzParseCSR(f *testing.F) {
	for _, kt := range []string{issuer.KeyP256, issuer.KeyP384, issuer.KeyEd25519, issuer.KeyRSA, "RSA-1024", "P-521"} {
		csr := newCSR(f, newKey(f, kt))
		f.Add(csr)
		f.Add(forge(f, csr))
		f.Add(csr[:len(csr)/2])
	}
	for _, name := range []string{"openssl-p256.csr", "openssl-p384.csr", "openssl-ed25519.csr", "openssl-rsa2048.csr", "openssl-p256.csr.pem"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80})
	f.Add([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("not a CSR at all"))

	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := issuer.ParseCSR(der)
		if err != nil {
			var de *domain.Error
			if !errors.As(err, &de) || de.Kind != domain.KindInvalid || de.Code == "" {
				t.Fatalf("rejection %v is not an invalid *domain.Error", err)
			}
			if csr != nil {
				t.Fatal("a CSR with an error")
			}
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
		}
		if len(der) > issuer.MaxCSRSize {
			t.Fatalf("accepted %d bytes", len(der))
		}
		switch csr.PublicKeyAlgorithm.String() {
		case "ECDSA", "Ed25519", "RSA":
		default:
			t.Fatalf("accepted a %v key", csr.PublicKeyAlgorithm)
		}
	})
}
