// Package datakey is what the two key vaults share about data keys: the embedded
// one (crypto/keyvault, a SQLite file) and the one kept in the ledger
// (crypto/sharedvault). A data key is one AES-256-GCM key per (subject, key
// group), held as a Tink keyset with Tink's output prefix; the vaults differ in
// where they keep its wrapped copy and how they destroy it, not in the key, how
// it is wrapped under a KEK, the names it is filed under or the cache of
// unwrapped keys.
package datakey

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/aead/aesgcm"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/caledger/caledger/domain"
)

// Key is an unwrapped data key, ready to use. The zero Key has no primitive and
// serves only tests of the cache.
type Key struct {
	aead tink.AEAD
	id   uint32 // the keyset's primary key id: what domain.Sealed.KeyID holds
}

// ID returns the key id that sealed parts under this key carry.
func (k Key) ID() uint32 { return k.id }

// New makes a fresh data key and returns its keyset (to be wrapped and stored)
// and the key.
func New() (*keyset.Handle, Key, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, Key{}, fmt.Errorf("datakey: new key: %w", err)
	}
	k, err := FromHandle(h)
	return h, k, err
}

// FromHandle accepts only what New makes: one AES-256-GCM key with Tink's output
// prefix, which Open relies on to check the key id.
func FromHandle(h *keyset.Handle) (Key, error) {
	e, err := h.Primary()
	if err != nil {
		return Key{}, fmt.Errorf("datakey: data keyset: %w", err)
	}
	k, ok := e.Key().(*aesgcm.Key)
	if !ok || h.Len() != 1 {
		return Key{}, errors.New("datakey: data keyset is not a single AES-GCM key")
	}
	p, ok := k.Parameters().(*aesgcm.Parameters)
	if !ok || p.KeySizeInBytes() != 32 || p.Variant() != aesgcm.VariantTink {
		return Key{}, errors.New("datakey: data key is not AES-256-GCM with a Tink prefix")
	}
	a, err := aead.New(h)
	if err != nil {
		return Key{}, fmt.Errorf("datakey: data key primitive: %w", err)
	}
	return Key{aead: a, id: e.KeyID()}, nil
}

// Seal encrypts plaintext with ad as associated data into the sealed part of
// (subject, group).
func (k Key) Seal(subject domain.SubjectID, group string, plaintext, ad []byte) (domain.Sealed, error) {
	ct, err := k.aead.Encrypt(plaintext, ad)
	if err != nil {
		return domain.Sealed{}, err
	}
	return domain.Sealed{SubjectID: subject, KeyGroup: group, KeyID: k.id, Ciphertext: ct}, nil
}

// Open decrypts s's ciphertext with ad. It reports false, and no plaintext,
// when the ciphertext does not authenticate; Tink's error says nothing a caller
// could act on.
func (k Key) Open(s *domain.Sealed, ad []byte) ([]byte, bool) {
	pt, err := k.aead.Decrypt(s.Ciphertext, ad)
	if err != nil {
		return nil, false
	}
	return pt, true
}

// PrefixMatches reports whether s's ciphertext starts with Tink's output prefix
// (0x01, then the key id) for s.KeyID, so that an edited KeyID is caught as
// tampering before any key is looked up, rather than ignored.
func PrefixMatches(s *domain.Sealed) bool {
	ct := s.Ciphertext
	return len(ct) >= 5 && ct[0] == 1 && binary.BigEndian.Uint32(ct[1:5]) == s.KeyID
}

// Printable applies the domain's rule for names in sealed parts and key streams:
// 1 to maxLen bytes of printable ASCII without spaces, not starting with '$'
// (which stores reserve).
func Printable(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen || s[0] == '$' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// ValidGroup reports whether group may name a key group: printable, and not "*",
// which tombstones use for "every group".
func ValidGroup(group string) bool { return Printable(group, domain.MaxNameLen) && group != "*" }

// Covers reports whether the tombstones of a subject (its shredded key
// groups, "*" for every group) cover an erasure of groups, or of every group
// when groups is empty. An older tombstone of another group covers nothing
// more.
func Covers(tombstones []string, groups ...string) bool {
	if slices.Contains(tombstones, "*") {
		return true
	}
	if len(groups) == 0 {
		return false
	}
	for _, g := range groups {
		if !slices.Contains(tombstones, g) {
			return false
		}
	}
	return true
}

// KEK is a key-encryption key: the vaults store data keys only as Wrap output
// (crypto/kek provides a local Tink keyset file and an AES key in an HSM
// through PKCS#11).
//
// Wrap and Unwrap MUST be safe for concurrent use. Unwrap MUST fail, and return
// no plaintext, unless ciphertext is a Wrap output of this KEK with exactly ad.
// Errors MUST NOT contain plaintext, key material or ad.
type KEK interface {
	// ID names the KEK. It MUST be stable across restarts (and the same on
	// every node that opens the same key) and MUST differ between keys.
	ID() string
	Wrap(ctx context.Context, plaintext, ad []byte) ([]byte, error)
	Unwrap(ctx context.Context, ciphertext, ad []byte) ([]byte, error)
}

// Wrap returns data keyset h encrypted under kek with ad (which binds it to
// where it is filed): the form in which a vault stores it.
func Wrap(ctx context.Context, h *keyset.Handle, kek KEK, ad []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := h.WriteWithContext(ctx, keyset.NewBinaryWriter(&buf), kekAEAD{kek}, ad); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Unwrap decrypts a keyset that Wrap wrapped under kek with the same ad.
func Unwrap(ctx context.Context, wrapped []byte, kek KEK, ad []byte) (*keyset.Handle, error) {
	return keyset.ReadWithContext(ctx, keyset.NewBinaryReader(bytes.NewReader(wrapped)), kekAEAD{kek}, ad)
}

// kekAEAD lets keyset.Handle.WriteWithContext and keyset.ReadWithContext encrypt
// a keyset with a KEK.
type kekAEAD struct{ kek KEK }

func (a kekAEAD) EncryptWithContext(ctx context.Context, plaintext, ad []byte) ([]byte, error) {
	return a.kek.Wrap(ctx, plaintext, ad)
}

func (a kekAEAD) DecryptWithContext(ctx context.Context, ciphertext, ad []byte) ([]byte, error) {
	return a.kek.Unwrap(ctx, ciphertext, ad)
}
