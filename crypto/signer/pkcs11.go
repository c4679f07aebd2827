package signer

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThalesGroup/crypto11"
)

// PKCS11Config says which token holds the CA keys.
type PKCS11Config struct {
	// Library is the path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
	Library string
	// TokenLabel selects the token.
	TokenLabel string
	// PIN is the user PIN. It never appears in errors.
	PIN string
	// MaxSessions bounds the sessions opened on the token, one of which stays open to
	// hold the login; concurrent signatures beyond the rest wait for a session. 0
	// means crypto11's default (1024); the token's own limit applies too. It must not
	// be 1.
	MaxSessions int
}

// PKCS11 keeps CA keys in an HSM reached through PKCS#11 (crypto11): ECDSA P-256 and
// P-384 key pairs generated on the token, sensitive and non-extractable, found by
// CKA_LABEL. Ed25519 is refused with ErrUnsupportedAlgorithm (crypto11 has no
// EdDSA). It is safe for concurrent use: every signature takes a session from
// crypto11's pool.
type PKCS11 struct {
	p11   *crypto11.Context
	token string
	// mu makes Generate's look-then-create atomic within this PKCS11. Two processes
	// (or two PKCS11 values) can still race and make two keys with one label; Load
	// then refuses the label instead of picking one.
	mu        sync.Mutex
	closed    atomic.Bool
	closeOnce sync.Once
}

var _ Provider = (*PKCS11)(nil)

// OpenPKCS11 logs in to the token. The caller MUST Close it: crypto11 finalises the
// library only when the last Context on it is closed.
func OpenPKCS11(ctx context.Context, cfg PKCS11Config) (*PKCS11, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.Library == "" || cfg.TokenLabel == "" {
		return nil, errors.New("signer: pkcs11: library and token label are required")
	}
	if cfg.MaxSessions < 0 || cfg.MaxSessions == 1 {
		return nil, fmt.Errorf("signer: pkcs11: MaxSessions is %d; want 0 (default) or at least 2", cfg.MaxSessions)
	}
	p11, err := crypto11.Configure(&crypto11.Config{
		Path:        cfg.Library,
		TokenLabel:  cfg.TokenLabel,
		Pin:         cfg.PIN,
		MaxSessions: cfg.MaxSessions,
	})
	if err != nil {
		return nil, fmt.Errorf("signer: pkcs11: token %q: %w", cfg.TokenLabel, err)
	}
	return &PKCS11{p11: p11, token: cfg.TokenLabel}, nil
}

func (p *PKCS11) where(label string) string {
	return fmt.Sprintf("signer: pkcs11: token %q key %q", p.token, label)
}

func (p *PKCS11) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.closed.Load() {
		return fmt.Errorf("%w: pkcs11 token %q", ErrClosed, p.token)
	}
	return nil
}

// Generate creates an ECDSA key pair on the token with CKA_LABEL and CKA_ID set to
// label. The private half is a token object that is private, sensitive,
// non-extractable, may sign and may not derive.
func (p *PKCS11) Generate(ctx context.Context, label string, alg Algorithm) (crypto.Signer, Ref, error) {
	ref := Ref{Provider: ProviderPKCS11, Label: label, Algorithm: alg}
	if err := CheckLabel(label); err != nil {
		return nil, Ref{}, err
	}
	curve, err := alg.curve()
	if err != nil {
		return nil, Ref{}, err
	}
	if curve == nil {
		return nil, Ref{}, fmt.Errorf("%w: %s through PKCS#11 (crypto11 has no EdDSA); use %s or %s", ErrUnsupportedAlgorithm, alg, P256, P384)
	}
	if err := p.usable(ctx); err != nil {
		return nil, Ref{}, err
	}
	where := p.where(label)
	p.mu.Lock()
	defer p.mu.Unlock()

	// Any private key with the label counts, not only complete key pairs: Load must
	// never have two candidates.
	existing, err := p.p11.FindPrivateKeys(nil, []byte(label))
	if err != nil {
		return nil, Ref{}, fmt.Errorf("%s: look for an existing key: %w", where, err)
	}
	if len(existing) > 0 {
		return nil, Ref{}, fmt.Errorf("%w: %s", ErrExists, where)
	}

	id, lbl := []byte(label), []byte(label)
	public, err := crypto11.NewAttributeSetWithIDAndLabel(id, lbl)
	if err != nil {
		return nil, Ref{}, fmt.Errorf("%s: %w", where, err)
	}
	private, err := crypto11.NewAttributeSetWithIDAndLabel(id, lbl)
	if err != nil {
		return nil, Ref{}, fmt.Errorf("%s: %w", where, err)
	}
	// crypto11 adds CKA_TOKEN, CKA_SIGN, CKA_SENSITIVE and CKA_EXTRACTABLE=false
	// itself; they are set here as well so that this code states the policy.
	for attr, v := range map[crypto11.AttributeType]bool{
		crypto11.CkaToken:       true,
		crypto11.CkaPrivate:     true,
		crypto11.CkaSensitive:   true,
		crypto11.CkaExtractable: false,
		crypto11.CkaSign:        true,
		crypto11.CkaDerive:      false,
	} {
		if err := private.Set(attr, v); err != nil {
			return nil, Ref{}, fmt.Errorf("%s: %w", where, err)
		}
	}
	k, err := p.p11.GenerateECDSAKeyPairWithAttributes(public, private, curve)
	if err != nil {
		return nil, Ref{}, fmt.Errorf("%s: generate %s: %w", where, alg, err)
	}
	return &key{ref: ref, pub: k.Public(), signer: k, closed: &p.closed}, ref, nil
}

// Load finds the key pair whose private half has CKA_LABEL ref.Label and checks that
// its public key is of ref.Algorithm.
func (p *PKCS11) Load(ctx context.Context, ref Ref) (crypto.Signer, error) {
	if err := checkRef(ref, ProviderPKCS11); err != nil {
		return nil, err
	}
	if ref.Algorithm == Ed25519 {
		return nil, fmt.Errorf("%w: %s through PKCS#11", ErrUnsupportedAlgorithm, ref.Algorithm)
	}
	if err := p.usable(ctx); err != nil {
		return nil, err
	}
	where := p.where(ref.Label)
	keys, err := p.p11.FindKeyPairs(nil, []byte(ref.Label))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, where)
	case 1:
	default:
		return nil, fmt.Errorf("%s: %d key pairs carry this label; keep exactly one", where, len(keys))
	}
	k := keys[0]
	if got := algorithmOf(k.Public()); got != ref.Algorithm {
		if got == "" {
			got = "another type"
		}
		return nil, fmt.Errorf("%w: %s is %s, the ref says %s", ErrWrongAlgorithm, where, got, ref.Algorithm)
	}
	return &key{ref: ref, pub: k.Public(), signer: k, closed: &p.closed}, nil
}

// Close waits for signatures in progress, closes the sessions, and finalises the
// library when no other Context in the process uses it. Close is idempotent.
func (p *PKCS11) Close() error {
	p.closed.Store(true)
	// crypto11's Context.Close is not idempotent: a second call decrements the
	// library's shared reference count again, finalising it under other users.
	var err error
	p.closeOnce.Do(func() { err = p.p11.Close() })
	return err
}
