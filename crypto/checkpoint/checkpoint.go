// Package checkpoint signs the heads of the ledger's Merkle tree as C2SP
// tlog-checkpoints: a signed note (golang.org/x/mod/sumdb/note) whose text is
// the log's origin, its size and its RFC 6962 root hash
// (github.com/transparency-dev/formats/log). An auditor who holds the
// verifier key checks a checkpoint with any tlog-checkpoint tool, then checks
// events against it with inclusion and consistency proofs.
//
// The key is an Ed25519 note key of the node, apart from the CA keys: a
// checkpoint says "this node saw the ledger so", which is a different claim from
// a certificate, and the CA key may live in an HSM that note cannot use.
package checkpoint

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Signer signs checkpoints for one log.
type Signer struct {
	origin   string
	signer   note.Signer
	verifier note.Verifier
	vkey     string
}

// GenerateKey makes a new key for the log named origin. It returns the key
// file's contents: the note signer key, then the verifier key, one per line.
func GenerateKey(origin string) ([]byte, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return []byte(skey + "\n" + vkey + "\n"), nil
}

// New reads a key file GenerateKey made and checks that its two keys are a
// pair. The log's origin is the name the key was made for: it stays the same
// for the key's life, whatever else changes on the node.
func New(keyFile []byte) (*Signer, error) {
	lines := strings.Split(strings.TrimSuffix(string(keyFile), "\n"), "\n")
	if len(lines) != 2 {
		return nil, errors.New("checkpoint: the key file must hold a signer key and a verifier key, one per line")
	}
	signer, err := note.NewSigner(lines[0])
	if err != nil {
		return nil, fmt.Errorf("checkpoint: signer key: %w", err)
	}
	verifier, err := note.NewVerifier(lines[1])
	if err != nil {
		return nil, fmt.Errorf("checkpoint: verifier key: %w", err)
	}
	s := &Signer{origin: signer.Name(), signer: signer, verifier: verifier, vkey: lines[1]}
	// The keys must be a pair, or every checkpoint would fail its check later.
	probe, err := s.Sign(0, make([]byte, 32))
	if err != nil {
		return nil, err
	}
	if _, err := s.Verify(probe); err != nil {
		return nil, fmt.Errorf("checkpoint: the signer and verifier keys are not a pair: %w", err)
	}
	return s, nil
}

// Origin is the log's name, the first line of every checkpoint.
func (s *Signer) Origin() string { return s.origin }

// VerifierKey is the note verifier key auditors check checkpoints with.
func (s *Signer) VerifierKey() string { return s.vkey }

// Sign returns the signed checkpoint for the tree of size leaves with root hash
// root.
func (s *Signer) Sign(size uint64, root []byte) ([]byte, error) {
	text := log.Checkpoint{Origin: s.origin, Size: size, Hash: root}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(text)}, s.signer)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: sign: %w", err)
	}
	return signed, nil
}

// Verify opens a checkpoint signed by this log's key and returns it.
func (s *Signer) Verify(signed []byte) (log.Checkpoint, error) {
	c, _, _, err := log.ParseCheckpoint(signed, s.origin, s.verifier)
	if err != nil {
		return log.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	return *c, nil
}
