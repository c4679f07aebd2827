package kek

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
)

// PKCS11Config says where a PKCS11 KEK lives.
type PKCS11Config struct {
	// Library is the path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
	Library string
	// TokenLabel selects the token.
	TokenLabel string
	// PIN is the user PIN. It never appears in errors.
	PIN string
	// KeyLabel is the CKA_LABEL of the AES-256 secret key. Exactly one secret key on
	// the token may carry it.
	KeyLabel string
	// Generate creates the key (sensitive, non-extractable) when the token has none
	// with KeyLabel. Without it, a missing key is an error matching ErrKeyNotFound,
	// which is what a production start wants: a typo must not silently mint a new KEK.
	Generate bool
	// Exclusive, with Generate, refuses a key that already carries KeyLabel
	// (ErrKeyExists): a new KEK must not turn out to be a key another user of the
	// token made, and may one day destroy.
	Exclusive bool
}

// ErrKeyNotFound is matched by the error of OpenPKCS11 when no secret key on the
// token carries the label and Generate is not set.
var ErrKeyNotFound = errors.New("kek: pkcs11: no secret key carries this label")

// ErrKeyExists is matched by the error of OpenPKCS11 when Exclusive is set and a
// secret key on the token already carries the label.
var ErrKeyExists = errors.New("kek: pkcs11: a secret key already carries this label")

const (
	gcmNonceSize = 12
	gcmTagSize   = 16
)

// PKCS11 is a KEK that never leaves an HSM: an AES-256 key used with CKM_AES_GCM
// through crypto11. A Wrap output is a random 12-byte nonce followed by the GCM
// ciphertext and tag. It is safe for concurrent use (crypto11 keeps a session pool).
type PKCS11 struct {
	p11       *crypto11.Context
	gcm       cipher.AEAD
	id        string
	closeOnce sync.Once
}

// OpenPKCS11 logs in to the token and finds (or, with Generate, creates) the key.
// The caller MUST Close it.
func OpenPKCS11(ctx context.Context, cfg PKCS11Config) (*PKCS11, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.Library == "" || cfg.TokenLabel == "" || cfg.KeyLabel == "" {
		return nil, errors.New("kek: pkcs11: library, token label and key label are required")
	}
	p11, err := crypto11.Configure(&crypto11.Config{
		Path:       cfg.Library,
		TokenLabel: cfg.TokenLabel,
		Pin:        cfg.PIN,
		// crypto11's default is 16, which only sets what NonceSize reports; 12 is the
		// GCM nonce size that needs no GHASH of the IV and that every HSM accepts.
		GCMIVLength: gcmNonceSize,
	})
	if err != nil {
		return nil, fmt.Errorf("kek: pkcs11: token %q: %w", cfg.TokenLabel, err)
	}
	k, err := openKey(p11, cfg)
	if err != nil {
		p11.Close()
		return nil, err
	}
	return k, nil
}

func openKey(p11 *crypto11.Context, cfg PKCS11Config) (*PKCS11, error) {
	where := fmt.Sprintf("kek: pkcs11: token %q key %q", cfg.TokenLabel, cfg.KeyLabel)
	keys, err := p11.FindKeys(nil, []byte(cfg.KeyLabel))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	switch {
	case len(keys) > 1:
		return nil, fmt.Errorf("%s: %d secret keys carry this label; keep exactly one", where, len(keys))
	case len(keys) > 0 && cfg.Generate && cfg.Exclusive:
		return nil, fmt.Errorf("%s: %w", where, ErrKeyExists)
	case len(keys) == 0 && !cfg.Generate:
		return nil, fmt.Errorf("%s: %w", where, ErrKeyNotFound)
	case len(keys) == 0:
		var id [16]byte
		if _, err := rand.Read(id[:]); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		key, err := p11.GenerateSecretKeyWithLabel(id[:], []byte(cfg.KeyLabel), 256, crypto11.CipherAES)
		if err != nil {
			return nil, fmt.Errorf("%s: generate: %w", where, err)
		}
		keys = append(keys, key)
	}
	key := keys[0]
	if key.Cipher != crypto11.CipherAES {
		return nil, fmt.Errorf("%s: not an AES key", where)
	}
	attr, err := p11.GetAttribute(key, crypto11.CkaValueLen)
	if err != nil {
		return nil, fmt.Errorf("%s: read CKA_VALUE_LEN: %w", where, err)
	}
	if n := ulong(attr.Value); n != 32 {
		return nil, fmt.Errorf("%s: key is %d bytes, want 32 (AES-256)", where, n)
	}
	gcm, err := key.NewGCM()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return &PKCS11{p11: p11, gcm: gcm, id: PKCS11ID(cfg.TokenLabel, cfg.KeyLabel)}, nil
}

// DestroyPKCS11 deletes every secret key carrying cfg.KeyLabel from the token
// (C_DestroyObject), through a Context of its own; cfg.Generate is ignored. A
// token with no such key is not an error: a destroy that was interrupted is
// completed by calling it again. A PKCS11 open on the key fails from then on.
func DestroyPKCS11(ctx context.Context, cfg PKCS11Config) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if cfg.Library == "" || cfg.TokenLabel == "" || cfg.KeyLabel == "" {
		return errors.New("kek: pkcs11: library, token label and key label are required")
	}
	where := fmt.Sprintf("kek: pkcs11: destroy token %q key %q", cfg.TokenLabel, cfg.KeyLabel)
	p11, err := crypto11.Configure(&crypto11.Config{Path: cfg.Library, TokenLabel: cfg.TokenLabel, Pin: cfg.PIN})
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	keys, err := p11.FindKeys(nil, []byte(cfg.KeyLabel))
	for _, key := range keys {
		if err != nil {
			break
		}
		err = key.Delete()
	}
	if cerr := p11.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

// ulong decodes a CK_ULONG attribute value, which is in the host's byte order.
func ulong(b []byte) uint64 {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b)
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return 0
}

// PKCS11ID returns the ID of the PKCS11 KEK labelled key on the token labelled
// token: "pkcs11:<token label>/<key label>".
func PKCS11ID(token, key string) string { return "pkcs11:" + token + "/" + key }

// ID returns PKCS11ID of its token and key. A new KEK epoch uses a new key label.
func (k *PKCS11) ID() string { return k.id }

// Wrap encrypts plaintext with ad as associated data in the HSM.
func (k *PKCS11) Wrap(ctx context.Context, plaintext, ad []byte) (out []byte, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nonce := make([]byte, gcmNonceSize, gcmNonceSize+len(plaintext)+gcmTagSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("kek: pkcs11 wrap: %w", err)
	}
	// crypto11's cipher.AEAD has no error return from Seal, so it panics when the
	// token fails (session lost, token removed). That must reach the caller as an
	// error, not take the process down.
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("kek: pkcs11 wrap (%s): %v", k.id, r)
		}
	}()
	return k.gcm.Seal(nonce, nonce, plaintext, ad), nil
}

// Unwrap decrypts a Wrap output in the HSM; it fails with ErrInvalidCiphertext unless
// ad is the one given to Wrap.
func (k *PKCS11) Unwrap(ctx context.Context, ciphertext, ad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(ciphertext) < gcmNonceSize+gcmTagSize {
		return nil, fmt.Errorf("%w (%s): too short", ErrInvalidCiphertext, k.id)
	}
	pt, err := k.gcm.Open(nil, ciphertext[:gcmNonceSize], ciphertext[gcmNonceSize:], ad)
	if err != nil {
		// crypto11 formats the PKCS#11 return value into the message and loses its
		// type, and tokens disagree on the code for a failed tag check (SoftHSM2
		// 2.6.1 says CKR_GENERAL_ERROR, the standard says CKR_ENCRYPTED_DATA_INVALID).
		// What can be told apart is the step: C_DecryptInit succeeded, so the session
		// and key are fine, and a failing C_Decrypt is the ciphertext's fault.
		if strings.HasPrefix(err.Error(), "C_Decrypt:") {
			return nil, fmt.Errorf("%w (%s): %v", ErrInvalidCiphertext, k.id, err)
		}
		return nil, fmt.Errorf("kek: pkcs11 unwrap (%s): %w", k.id, err)
	}
	return pt, nil
}

// Close releases the sessions, and finalises the library when no other Context in the
// process uses it. Close is idempotent; the PKCS11 must not be used after it.
func (k *PKCS11) Close() error {
	// crypto11's Context.Close is not idempotent: a second call decrements the
	// library's shared reference count again, finalising it under other users'
	// feet, or panics when it is already gone.
	var err error
	k.closeOnce.Do(func() { err = k.p11.Close() })
	return err
}
