package signer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// Algorithm names a CA key type.
type Algorithm string

const (
	// P256 is ECDSA on NIST P-256.
	P256 Algorithm = "P-256"
	// P384 is ECDSA on NIST P-384.
	P384 Algorithm = "P-384"
	// Ed25519 is EdDSA on edwards25519. Only the software provider has it: crypto11
	// has no EdDSA.
	Ed25519 Algorithm = "Ed25519"
)

// Provider names recorded in Ref.Provider.
const (
	ProviderSoftware = "software"
	ProviderPKCS11   = "pkcs11"
)

// Errors matched with errors.Is. Other failures (I/O, a token that is down, a key
// file that does not authenticate) are plain errors.
var (
	// ErrExists: Generate was asked for a label that already names a key.
	ErrExists = errors.New("signer: a key with this label exists")
	// ErrNotFound: Load found no key for the Ref's label.
	ErrNotFound = errors.New("signer: no key with this label")
	// ErrWrongProvider: the Ref names another provider.
	ErrWrongProvider = errors.New("signer: the key belongs to another provider")
	// ErrWrongAlgorithm: the key under the Ref's label is of another algorithm.
	ErrWrongAlgorithm = errors.New("signer: the key is of another algorithm")
	// ErrInvalidLabel: the label is not 1-64 characters of [a-z0-9-].
	ErrInvalidLabel = errors.New("signer: invalid key label")
	// ErrUnsupportedAlgorithm: the algorithm is unknown or this provider cannot make it.
	ErrUnsupportedAlgorithm = errors.New("signer: unsupported algorithm")
	// ErrClosed: the Provider, or the Provider of a signer, was closed.
	ErrClosed = errors.New("signer: provider is closed")
)

// Ref is the public, non-secret reference to a CA key, recorded in the ledger (JSON).
// Its zero value refers to no key.
type Ref struct {
	// Provider is ProviderSoftware or ProviderPKCS11. Which directory or token it
	// means is configuration, not part of the Ref.
	Provider string `json:"provider"`
	// Label names the key within its provider: 1-64 characters of [a-z0-9-].
	Label string `json:"label"`
	// Algorithm is the key's type; Load refuses a key of another type.
	Algorithm Algorithm `json:"algorithm"`
}

// String returns "provider:label (algorithm)".
func (r Ref) String() string {
	return fmt.Sprintf("%s:%s (%s)", r.Provider, r.Label, r.Algorithm)
}

// Provider creates and finds CA signing keys. Implementations are safe for
// concurrent use, and so are the crypto.Signers they return.
type Provider interface {
	// Generate creates a new key under label; it fails with ErrExists if one exists,
	// with ErrInvalidLabel for a bad label, and with ErrUnsupportedAlgorithm for an
	// algorithm the provider cannot make.
	Generate(ctx context.Context, label string, alg Algorithm) (crypto.Signer, Ref, error)
	// Load finds the key ref names; ErrNotFound if there is none, ErrWrongProvider if
	// ref is another provider's, ErrWrongAlgorithm if the key is not of
	// ref.Algorithm.
	Load(ctx context.Context, ref Ref) (crypto.Signer, error)
	// Close releases the provider. Afterwards Generate, Load and Sign on every signer
	// it returned fail with ErrClosed. Close is idempotent.
	Close() error
}

// CheckLabel returns an error matching ErrInvalidLabel unless label is 1-64
// characters of [a-z0-9-]. The rule keeps labels safe as file names, PKCS#11
// CKA_LABEL values and stream names, with no case folding to disagree on.
func CheckLabel(label string) error {
	if len(label) == 0 || len(label) > 64 {
		return fmt.Errorf("%w: %d characters, want 1 to 64", ErrInvalidLabel, len(label))
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			// The label may be anything a caller passed; say where, not what.
			return fmt.Errorf("%w: character %d is not one of [a-z0-9-]", ErrInvalidLabel, i+1)
		}
	}
	return nil
}

// curve returns the ECDSA curve of alg, or nil for Ed25519; it fails for an unknown
// algorithm.
func (a Algorithm) curve() (elliptic.Curve, error) {
	switch a {
	case P256:
		return elliptic.P256(), nil
	case P384:
		return elliptic.P384(), nil
	case Ed25519:
		return nil, nil
	}
	return nil, fmt.Errorf("%w: %q (want %s, %s or %s)", ErrUnsupportedAlgorithm, string(a), P256, P384, Ed25519)
}

// algorithmOf returns the Algorithm of a public key, or "" for any other key.
func algorithmOf(pub crypto.PublicKey) Algorithm {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return P256
		case elliptic.P384():
			return P384
		}
	case ed25519.PublicKey:
		return Ed25519
	}
	return ""
}

// checkRef validates ref for the provider named provider.
func checkRef(ref Ref, provider string) error {
	if ref.Provider != provider {
		return fmt.Errorf("%w: ref names provider %q, this is %q", ErrWrongProvider, ref.Provider, provider)
	}
	if err := CheckLabel(ref.Label); err != nil {
		return err
	}
	_, err := ref.Algorithm.curve()
	return err
}

// key is the crypto.Signer every Provider returns. It hides the implementation's
// private key from type assertions and from fmt (a *ecdsa.PrivateKey printed with
// %v shows D), refuses to sign once its Provider is closed, and checks what crypto11
// does not: that a digest has the length its hash says.
type key struct {
	ref    Ref
	pub    crypto.PublicKey
	signer crypto.Signer
	closed *atomic.Bool
}

func (k *key) Public() crypto.PublicKey { return k.pub }

// Sign signs digest (for ECDSA, a hash named by opts; for Ed25519, the message with
// opts.HashFunc() == 0). An ECDSA signature is ASN.1 DER, as crypto/ecdsa writes it.
func (k *key) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if k.closed.Load() {
		return nil, fmt.Errorf("%w: %s", ErrClosed, k.ref)
	}
	if opts == nil {
		return nil, fmt.Errorf("signer: %s: nil SignerOpts", k.ref)
	}
	h := opts.HashFunc()
	if k.ref.Algorithm != Ed25519 && h == 0 {
		return nil, fmt.Errorf("signer: %s: ECDSA signs a hash; SignerOpts names none", k.ref)
	}
	if h != 0 && len(digest) != h.Size() {
		return nil, fmt.Errorf("signer: %s: digest is %d bytes, %v makes %d", k.ref, len(digest), h, h.Size())
	}
	sig, err := k.signer.Sign(rand, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("signer: %s: sign: %w", k.ref, err)
	}
	return sig, nil
}

// String names the key, never its material.
func (k *key) String() string { return "signer key " + k.ref.String() }

// GoString keeps %#v from printing the private key too.
func (k *key) GoString() string { return k.String() }
