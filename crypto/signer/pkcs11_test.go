package signer_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/caledger/caledger/crypto/hsm/softhsmtest"
	"github.com/caledger/caledger/crypto/signer"
	"github.com/caledger/caledger/crypto/signer/signertest"
)

func openPKCS11(t *testing.T, tok softhsmtest.Config) *signer.PKCS11 {
	t.Helper()
	p, err := signer.OpenPKCS11(context.Background(), signer.PKCS11Config{
		Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPKCS11Conformance(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	signertest.Run(t, func(t *testing.T) signer.Provider { return openPKCS11(t, tok) },
		[]signer.Algorithm{signer.P256, signer.P384})
}

func TestPKCS11Ed25519Refused(t *testing.T) {
	p := openPKCS11(t, softhsmtest.NewToken(t))
	_, _, err := p.Generate(context.Background(), "ca-1", signer.Ed25519)
	if !errors.Is(err, signer.ErrUnsupportedAlgorithm) || !strings.Contains(err.Error(), "Ed25519") {
		t.Fatalf("got %v, want ErrUnsupportedAlgorithm naming Ed25519", err)
	}
}

func TestPKCS11WrongPIN(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	const pin = "98765"
	p, err := signer.OpenPKCS11(context.Background(), signer.PKCS11Config{
		Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: pin,
	})
	if err == nil {
		p.Close()
		t.Fatal("logged in with a wrong PIN")
	}
	if strings.Contains(err.Error(), pin) {
		t.Fatalf("error contains the PIN: %v", err)
	}
}

func TestPKCS11Config(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	for name, cfg := range map[string]signer.PKCS11Config{
		"no library":       {TokenLabel: tok.TokenLabel, PIN: tok.PIN},
		"no token":         {Library: tok.Library, PIN: tok.PIN},
		"one session":      {Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, MaxSessions: 1},
		"negative session": {Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, MaxSessions: -1},
		"absent token":     {Library: tok.Library, TokenLabel: tok.TokenLabel + "-absent", PIN: tok.PIN},
	} {
		p, err := signer.OpenPKCS11(context.Background(), cfg)
		if err == nil {
			p.Close()
			t.Errorf("%s: OpenPKCS11 succeeded", name)
		}
	}
}

// MaxSessions 2 leaves one session for operations: concurrent signers must wait for
// it, not fail.
func TestPKCS11FewSessions(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	p, err := signer.OpenPKCS11(context.Background(), signer.PKCS11Config{
		Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, MaxSessions: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	s, _ := generate(t, p, "ca-1", signer.P256)
	digest := sha256.Sum256([]byte("x"))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 4 {
				sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
				if err != nil {
					t.Error(err)
					return
				}
				if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
					t.Error("signature does not verify")
					return
				}
			}
		})
	}
	wg.Wait()
}
