package checkpoint_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/checkpoint"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

func TestSignVerify(t *testing.T) {
	const origin = "caledger.ledger/0123456789abcdef"
	key, err := checkpoint.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.New(key)
	if err != nil {
		t.Fatal(err)
	}
	if s.Origin() != origin {
		t.Fatalf("origin %q, want %q", s.Origin(), origin)
	}
	root := bytes.Repeat([]byte{7}, 32)
	signed, err := s.Sign(42, root)
	if err != nil {
		t.Fatal(err)
	}
	// The C2SP text: origin, size, base64 root, then the signature block.
	if !strings.HasPrefix(string(signed), origin+"\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n— "+origin+" ") {
		t.Fatalf("checkpoint:\n%s", signed)
	}
	// An outside verifier with nothing but the verifier key accepts it.
	v, err := note.NewVerifier(s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	c, _, _, err := log.ParseCheckpoint(signed, origin, v)
	if err != nil {
		t.Fatal(err)
	}
	if c.Size != 42 || !bytes.Equal(c.Hash, root) {
		t.Fatalf("parsed %+v", c)
	}
	// An altered size fails the signature.
	forged := bytes.Replace(signed, []byte("\n42\n"), []byte("\n43\n"), 1)
	if _, err := s.Verify(forged); err == nil {
		t.Fatal("a checkpoint with an altered size verified")
	}
}

func TestNewRefuses(t *testing.T) {
	const origin = "caledger.ledger/a"
	key, err := checkpoint.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	other, err := checkpoint.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(key), "\n")
	otherLines := strings.Split(string(other), "\n")
	for name, file := range map[string]string{
		"keys of two pairs":  lines[0] + "\n" + otherLines[1] + "\n",
		"signer key only":    lines[0] + "\n",
		"empty":              "",
		"not a key":          "PRIVATE+KEY+x\n" + lines[1] + "\n",
		"verifier not a key": lines[0] + "\nnope\n",
		"three lines":        string(key) + "x\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := checkpoint.New([]byte(file)); err == nil {
				t.Fatal("accepted")
			} else if strings.Contains(err.Error(), "PRIVATE+KEY") {
				t.Fatalf("the error shows the private key: %v", err)
			}
		})
	}
}
