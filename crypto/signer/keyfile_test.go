package signer

import (
	"bytes"
	"testing"
)

func TestKeyFileRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		alg   Algorithm
		kekID string
	}{
		{P256, "file:0123abcd"},
		{Ed25519, "pkcs11:token/kek-1"},
		{P384, string(bytes.Repeat([]byte("k"), maxKEKIDLen))},
	} {
		f, err := newKeyFile(tc.alg, tc.kekID)
		if err != nil {
			t.Fatal(err)
		}
		f.ciphertext = []byte("ciphertext")
		g, err := parseKeyFile(f.encode())
		if err != nil {
			t.Fatalf("%s: %v", tc.alg, err)
		}
		if g.alg != tc.alg || g.kekID != tc.kekID || !bytes.Equal(g.ciphertext, f.ciphertext) || !bytes.Equal(g.header, f.header) {
			t.Fatalf("%s: round trip gave %+v", tc.alg, g)
		}
		if !bytes.Equal(g.ad("ca-1"), f.ad("ca-1")) || bytes.Equal(f.ad("ca-1"), f.ad("ca-2")) {
			t.Fatalf("%s: associated data does not follow the label", tc.alg)
		}
	}
	for _, kekID := range []string{"", string(bytes.Repeat([]byte("k"), maxKEKIDLen+1))} {
		if _, err := newKeyFile(P256, kekID); err == nil {
			t.Errorf("newKeyFile accepted a KEK id of %d bytes", len(kekID))
		}
	}
}

// FuzzParseKeyFile: key files are read from disk, which others may write. The parser
// must not panic, and what it accepts must re-encode to the same bytes.
func FuzzParseKeyFile(f *testing.F) {
	good, err := newKeyFile(P256, "file:0123abcd")
	if err != nil {
		f.Fatal(err)
	}
	good.ciphertext = []byte{1, 2, 3}
	f.Add(good.encode())
	f.Add(good.header)
	f.Add([]byte(fileMagic))
	f.Add([]byte(fileMagic + "\x01\x00"))
	f.Add([]byte(fileMagic + "\x01\x05P-256\xff\xff"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		kf, err := parseKeyFile(b)
		if err != nil {
			if kf != nil {
				t.Fatal("parseKeyFile returned a file with its error")
			}
			return
		}
		if !bytes.Equal(kf.encode(), b) {
			t.Fatal("accepted input does not re-encode to itself")
		}
		if len(kf.ciphertext) == 0 || kf.kekID == "" || kf.alg == "" {
			t.Fatalf("accepted a file with an empty field: %+v", kf)
		}
		g, err := newKeyFile(kf.alg, kf.kekID)
		if err != nil {
			t.Fatalf("accepted a header newKeyFile refuses: %v", err)
		}
		if !bytes.Equal(g.header, kf.header) {
			t.Fatal("the parsed header differs from the one newKeyFile builds")
		}
	})
}
