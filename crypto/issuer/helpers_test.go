package issuer_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/domain"
)

// now is the fixed clock of every test.
var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

const baseURL = "https://ca.example.test:8443"

// Keys are generated once per test binary: RSA generation is slow under -race.
var (
	rsa2048 = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(2048) })
	rsa1024 = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(1024) })
	rsa3072 = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(3072) })
)

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

// newKey makes a subject key of the named type.
func newKey(t testing.TB, kt string) crypto.Signer {
	t.Helper()
	switch kt {
	case issuer.KeyP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	case issuer.KeyP384:
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	case "P-521":
		k, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	case issuer.KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	case issuer.KeyRSA, "RSA-2048":
		return rsa2048()
	case "RSA-1024":
		return rsa1024()
	case "RSA-3072":
		return rsa3072()
	}
	t.Fatalf("no key type %q", kt)
	return nil
}

// newCSR makes a DER CSR for key with a subject and requested SANs that the
// issuer must ignore.
func newCSR(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "Mallory Ignored", Organization: []string{"Evil Corp"}, Country: []string{"ZZ"}},
		DNSNames:       []string{"evil.example"},
		EmailAddresses: []string{"mallory@evil.example"},
		ExtraExtensions: []pkix.Extension{{
			Id: []int{2, 5, 29, 19}, Critical: true, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff}, // CA:TRUE
		}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// pki is a root, an intermediate under it and an issuer for both.
type pki struct {
	root, inter *x509.Certificate
	rootKey     crypto.Signer
	interKey    crypto.Signer
	iss         *issuer.Issuer
	roots       *x509.CertPool
	inters      *x509.CertPool
}

// newPKI makes a P-384 root CA ("root") and a P-256 intermediate ("issuing") with
// NewRoot and NewIntermediate, and an Issuer with profiles (DefaultProfiles when
// nil).
func newPKI(t testing.TB, profiles []issuer.Profile) *pki {
	t.Helper()
	ctx := context.Background()
	rootKey := newKey(t, issuer.KeyP384)
	root, err := issuer.NewRoot(ctx, rootKey, pkix.Name{Country: []string{"SE"}, Organization: []string{"caledger test"}, CommonName: "caledger test root"},
		20*365*24*time.Hour, big.NewInt(1), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	interKey := newKey(t, issuer.KeyP256)
	rootCA := issuer.CA{ID: "root", Certificate: root, Key: rootKey}
	inter, err := issuer.NewIntermediate(ctx, rootCA, interKey.Public(),
		pkix.Name{Country: []string{"SE"}, Organization: []string{"caledger test"}, CommonName: "caledger test issuing"},
		10*365*24*time.Hour, big.NewInt(2), now.Add(-time.Hour), issuer.Options{BaseURL: baseURL})
	if err != nil {
		t.Fatal(err)
	}
	if profiles == nil {
		profiles = issuer.DefaultProfiles()
	}
	iss, err := issuer.New([]issuer.CA{
		rootCA,
		{ID: "issuing", Certificate: inter, Key: interKey, Chain: []*x509.Certificate{root}},
	}, profiles, issuer.Options{BaseURL: baseURL})
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{root: root, inter: inter, rootKey: rootKey, interKey: interKey, iss: iss,
		roots: x509.NewCertPool(), inters: x509.NewCertPool()}
	p.roots.AddCert(root)
	p.inters.AddCert(inter)
	return p
}

// request is a SignRequest from the intermediate with serial 1f.
func request(profile string, csr []byte, attrs map[string]string) domain.SignRequest {
	return domain.SignRequest{CAID: "issuing", Serial: "1f", Profile: profile, Attributes: attrs, CSR: csr, Now: now}
}

// wantCode checks that err is a *domain.Error of KindInvalid with code, whose
// messages hold none of the secrets.
func wantCode(t *testing.T, err error, code string, secrets ...string) *domain.Error {
	t.Helper()
	var de *domain.Error
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T), want a *domain.Error with code %s", err, err, code)
	}
	if !errors.Is(err, domain.ErrInvalid) || de.Code != code {
		t.Fatalf("error kind %v code %q (%v), want invalid %q", de.Kind, de.Code, err, code)
	}
	for _, s := range secrets {
		if s != "" && (strings.Contains(de.Detail, s) || strings.Contains(err.Error(), s)) {
			t.Errorf("error %q reveals %q", err, s)
		}
	}
	return de
}
