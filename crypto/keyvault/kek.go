package keyvault

import (
	"context"
	"encoding/binary"
)

// KEK is a key-encryption key: the vault stores data keys only as KEK.Wrap output.
// crypto/kek provides implementations (a local Tink keyset file, an AES key in an HSM
// through PKCS#11).
//
// Wrap and Unwrap MUST be safe for concurrent use. Unwrap MUST fail, and return no
// plaintext, unless ciphertext is a Wrap output of this KEK with exactly ad. Errors
// MUST NOT contain plaintext, key material or ad.
type KEK interface {
	// ID names the KEK. It is stored beside every wrapped key, so that keys can be
	// re-wrapped under a new KEK and the vault can tell which rows still need the old
	// one. It MUST be stable across restarts and MUST differ between distinct keys.
	ID() string
	Wrap(ctx context.Context, plaintext, ad []byte) ([]byte, error)
	Unwrap(ctx context.Context, ciphertext, ad []byte) ([]byte, error)
}

// kekAEAD lets keyset.Handle.WriteWithContext and keyset.ReadWithContext encrypt a
// keyset with a KEK.
type kekAEAD struct{ kek KEK }

func (a kekAEAD) EncryptWithContext(ctx context.Context, plaintext, ad []byte) ([]byte, error) {
	return a.kek.Wrap(ctx, plaintext, ad)
}

func (a kekAEAD) DecryptWithContext(ctx context.Context, ciphertext, ad []byte) ([]byte, error) {
	return a.kek.Unwrap(ctx, ciphertext, ad)
}

// wrapAD is the associated data of a wrapped keyset. It binds the keyset to its
// (subject, group), so that a row copied to another subject fails to unwrap instead of
// silently handing one person's key to another. The KEK id is left out on purpose:
// re-wrapping under a new KEK must not need to know the old one's name.
func wrapAD(subject, group string) []byte {
	const label = "caledger keyvault data key v1\x00"
	ad := make([]byte, 0, len(label)+8+len(subject)+len(group))
	ad = append(ad, label...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(subject)))
	ad = append(ad, subject...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(group)))
	ad = append(ad, group...)
	return ad
}
