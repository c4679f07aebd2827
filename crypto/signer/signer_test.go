package signer_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/signer"
)

// The Ref is recorded in the ledger: its JSON form is a stored format.
func TestRefJSON(t *testing.T) {
	ref := signer.Ref{Provider: signer.ProviderPKCS11, Label: "root-2026", Algorithm: signer.P384}
	b, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"provider":"pkcs11","label":"root-2026","algorithm":"P-384"}`
	if string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
	var back signer.Ref
	if err := json.Unmarshal(b, &back); err != nil || back != ref {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

func TestCheckLabel(t *testing.T) {
	for _, tc := range []struct {
		label string
		ok    bool
	}{
		{"a", true},
		{"ca-1", true},
		{"0", true},
		{"-", true},
		{strings.Repeat("z", 64), true},
		{"", false},
		{strings.Repeat("z", 65), false},
		{"Ca", false},
		{"ca_1", false},
		{"ca.key", false},
		{"a/b", false},
		{"ca 1", false},
		{"caé", false},
	} {
		err := signer.CheckLabel(tc.label)
		if tc.ok != (err == nil) {
			t.Errorf("CheckLabel(%q) = %v, want ok=%v", tc.label, err, tc.ok)
		}
		if err != nil && !errors.Is(err, signer.ErrInvalidLabel) {
			t.Errorf("CheckLabel(%q) = %v, want ErrInvalidLabel", tc.label, err)
		}
		if err != nil && tc.label != "" && strings.Contains(err.Error(), tc.label) {
			t.Errorf("CheckLabel(%q) quotes its input: %v", tc.label, err)
		}
	}
}
