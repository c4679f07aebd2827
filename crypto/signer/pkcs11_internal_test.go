package signer

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"errors"
	"strings"
	"testing"

	"github.com/ThalesGroup/crypto11"

	"github.com/caledger/caledger/crypto/hsm/softhsmtest"
)

func openTestPKCS11(t testing.TB) *PKCS11 {
	t.Helper()
	tok := softhsmtest.NewToken(t)
	p, err := OpenPKCS11(context.Background(), PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// The CA key must never be readable off the token, whatever the token's defaults.
func TestPKCS11KeyAttributes(t *testing.T) {
	p := openTestPKCS11(t)
	s, _, err := p.Generate(context.Background(), "ca-1", P384)
	if err != nil {
		t.Fatal(err)
	}
	raw := s.(*key).signer
	attrs, err := p.p11.GetAttributes(raw, []crypto11.AttributeType{
		crypto11.CkaToken, crypto11.CkaPrivate, crypto11.CkaSensitive, crypto11.CkaAlwaysSensitive,
		crypto11.CkaExtractable, crypto11.CkaNeverExtractable, crypto11.CkaSign, crypto11.CkaDerive,
		crypto11.CkaId, crypto11.CkaLabel,
	})
	if err != nil {
		t.Fatal(err)
	}
	for attr, want := range map[crypto11.AttributeType]bool{
		crypto11.CkaToken:            true,
		crypto11.CkaPrivate:          true,
		crypto11.CkaSensitive:        true,
		crypto11.CkaAlwaysSensitive:  true,
		crypto11.CkaExtractable:      false,
		crypto11.CkaNeverExtractable: true,
		crypto11.CkaSign:             true,
		crypto11.CkaDerive:           false,
	} {
		v := attrs[attr].Value
		if got := len(v) == 1 && v[0] != 0; got != want {
			t.Errorf("attribute %#x is %v (%x), want %v", uint(attr), got, v, want)
		}
	}
	for _, attr := range []crypto11.AttributeType{crypto11.CkaId, crypto11.CkaLabel} {
		if v := attrs[attr].Value; !bytes.Equal(v, []byte("ca-1")) {
			t.Errorf("attribute %#x is %q, want the label", uint(attr), v)
		}
	}
}

// Keys made outside Generate (another process racing, or a tool) can share a label;
// Load must refuse to guess between them.
func TestPKCS11DuplicateLabel(t *testing.T) {
	p := openTestPKCS11(t)
	for _, id := range []string{"a", "b"} {
		if _, err := p.p11.GenerateECDSAKeyPairWithLabel([]byte(id), []byte("ca-1"), elliptic.P256()); err != nil {
			t.Fatal(err)
		}
	}
	_, err := p.Load(context.Background(), Ref{Provider: ProviderPKCS11, Label: "ca-1", Algorithm: P256})
	if err == nil || !strings.Contains(err.Error(), "2 key pairs") {
		t.Fatalf("got %v, want a refusal naming the duplicates", err)
	}
	if _, _, err := p.Generate(context.Background(), "ca-1", P256); !errors.Is(err, ErrExists) {
		t.Fatalf("Generate: %v, want ErrExists", err)
	}
}
