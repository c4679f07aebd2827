package sharedvault

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/domain"
)

// KEK is a key-encryption key of one epoch, with datakey.KEK's contract
// (crypto/kek's File and PKCS11 satisfy it). Its ID MUST be the same on every
// node that opens the same key: the vault checks it against the one recorded
// when the epoch started.
type KEK = datakey.KEK

// Destroyer is a KEK that can destroy itself. Destroy MUST NOT return nil unless the
// key is gone from wherever it lives (the HSM token, the file), so that no process
// can unwrap with it again; after it, Wrap and Unwrap MUST fail. Destroying a KEK
// that is already gone succeeds.
type Destroyer interface {
	Destroy(ctx context.Context) error
}

// Keyring gives the KEK of an epoch. Every node MUST get the same key for the same
// epoch (the vault checks the ID against the one recorded when the epoch started).
// The keyring owns the KEKs it returns: the vault never closes them.
type Keyring interface {
	KEK(ctx context.Context, epoch uint32) (KEK, error)
}

// KeyringFunc adapts a function to Keyring.
type KeyringFunc func(ctx context.Context, epoch uint32) (KEK, error)

// KEK calls f.
func (f KeyringFunc) KEK(ctx context.Context, epoch uint32) (KEK, error) { return f(ctx, epoch) }

// ErrDestroyed is matched by Wrap and Unwrap errors of a FileKEK or PKCS11KEK after
// Destroy.
var ErrDestroyed = errors.New("sharedvault: KEK destroyed")

// EpochKeyLabel is the PKCS#11 CKA_LABEL of epoch n's KEK: "caledger-kek-epoch-<n>".
func EpochKeyLabel(n uint32) string { return fmt.Sprintf("caledger-kek-epoch-%d", n) }

// wrapAD is the associated data of a wrapped keyset. It binds the keyset to its
// subject, group and epoch: a wrap copied into another subject's stream, relabelled
// to another group, or replayed as another epoch's fails to unwrap. Unlike
// keyvault's it names the epoch, because here the epoch number (not the KEK id) is
// what events carry and what a KEK is looked up by.
func wrapAD(subject domain.SubjectID, group string, epoch uint32) []byte {
	const label = "caledger sharedvault data key v1\x00"
	ad := make([]byte, 0, len(label)+12+len(subject)+len(group))
	ad = append(ad, label...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(subject)))
	ad = append(ad, subject...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(group)))
	ad = append(ad, group...)
	return binary.BigEndian.AppendUint32(ad, epoch)
}

// FileKEK is a kek.File that can be destroyed. It is for tests and for a single
// node: a file copied to several nodes is several keys as far as destruction goes,
// and deleting one copy proves nothing about the others.
type FileKEK struct {
	path string
	id   string
	mu   sync.RWMutex
	f    *kek.File // nil once destroyed
}

// OpenFileKEK opens the kek.File at path, creating it first if create is set.
func OpenFileKEK(ctx context.Context, path string, create bool) (*FileKEK, error) {
	open := kek.OpenFile
	if create {
		open = kek.OpenOrCreateFile
	}
	f, err := open(ctx, path)
	if err != nil {
		return nil, err
	}
	return &FileKEK{path: path, id: f.ID(), f: f}, nil
}

// ID returns the kek.File's ID.
func (k *FileKEK) ID() string { return k.id }

// Wrap implements KEK.
func (k *FileKEK) Wrap(ctx context.Context, plaintext, ad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.f == nil {
		return nil, fmt.Errorf("%w (%s)", ErrDestroyed, k.id)
	}
	return k.f.Wrap(ctx, plaintext, ad)
}

// Unwrap implements KEK.
func (k *FileKEK) Unwrap(ctx context.Context, ciphertext, ad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.f == nil {
		return nil, fmt.Errorf("%w (%s)", ErrDestroyed, k.id)
	}
	return k.f.Unwrap(ctx, ciphertext, ad)
}

// Destroy overwrites the file with zeros, syncs it, removes it and syncs its
// directory (kek.DestroyFile), then makes Wrap and Unwrap fail. The overwrite is best effort: on a
// copy-on-write or journaling filesystem, or flash, the old blocks may survive (see
// docs/keyvault.md); the in-memory keyset is dropped, not zeroed.
func (k *FileKEK) Destroy(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := kek.DestroyFile(ctx, k.path); err != nil {
		return fmt.Errorf("sharedvault: destroy KEK %s: %w", k.id, err)
	}
	k.f = nil
	return nil
}

// PKCS11KEK is a kek.PKCS11 that can be destroyed: Destroy deletes the AES key from
// the token (kek.DestroyPKCS11, which finds the key again by its label).
type PKCS11KEK struct {
	cfg kek.PKCS11Config
	id  string
	mu  sync.RWMutex
	k   *kek.PKCS11 // nil once destroyed or closed
}

// OpenPKCS11KEK opens epoch's KEK on the token cfg names: the AES key labelled
// EpochKeyLabel(epoch) (cfg.KeyLabel is ignored), generated if generate is set and
// the token has none. The caller MUST Close it.
func OpenPKCS11KEK(ctx context.Context, cfg kek.PKCS11Config, epoch uint32, generate bool) (*PKCS11KEK, error) {
	cfg.KeyLabel, cfg.Generate = EpochKeyLabel(epoch), generate
	k, err := kek.OpenPKCS11(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &PKCS11KEK{cfg: cfg, id: k.ID(), k: k}, nil
}

// ID returns the kek.PKCS11's ID, "pkcs11:<token label>/caledger-kek-epoch-<n>".
func (k *PKCS11KEK) ID() string { return k.id }

// Wrap implements KEK.
func (k *PKCS11KEK) Wrap(ctx context.Context, plaintext, ad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.k == nil {
		return nil, fmt.Errorf("%w or closed (%s)", ErrDestroyed, k.id)
	}
	return k.k.Wrap(ctx, plaintext, ad)
}

// Unwrap implements KEK.
func (k *PKCS11KEK) Unwrap(ctx context.Context, ciphertext, ad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.k == nil {
		return nil, fmt.Errorf("%w or closed (%s)", ErrDestroyed, k.id)
	}
	return k.k.Unwrap(ctx, ciphertext, ad)
}

// Destroy deletes every secret key carrying the epoch's label from the token, then
// closes the KEK. A token that no longer has the key is not an error.
func (k *PKCS11KEK) Destroy(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := kek.DestroyPKCS11(ctx, k.cfg); err != nil {
		return fmt.Errorf("sharedvault: destroy KEK %s: %w", k.id, err)
	}
	var err error
	if k.k != nil {
		err = k.k.Close()
		k.k = nil
	}
	return err
}

// Close releases the KEK's sessions without destroying the key.
func (k *PKCS11KEK) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.k == nil {
		return nil
	}
	err := k.k.Close()
	k.k = nil
	return err
}

// PKCS11Keyring opens each epoch's KEK on one token by its label (EpochKeyLabel). It
// is safe for concurrent use; Close closes every KEK it opened.
type PKCS11Keyring struct {
	cfg  kek.PKCS11Config
	mu   sync.Mutex
	keks map[uint32]*PKCS11KEK
}

// NewPKCS11Keyring returns a keyring on the token cfg names (cfg.KeyLabel and
// cfg.Generate are ignored). It opens nothing until asked.
func NewPKCS11Keyring(cfg kek.PKCS11Config) *PKCS11Keyring {
	return &PKCS11Keyring{cfg: cfg, keks: map[uint32]*PKCS11KEK{}}
}

// KEK opens epoch's KEK, which MUST already exist on the token.
func (r *PKCS11Keyring) KEK(ctx context.Context, epoch uint32) (KEK, error) {
	return r.open(ctx, epoch, false)
}

// Generate opens epoch's KEK, creating it on the token if it has none: the step
// before Rotate (or, for epoch 1, before the first node starts).
func (r *PKCS11Keyring) Generate(ctx context.Context, epoch uint32) (*PKCS11KEK, error) {
	return r.open(ctx, epoch, true)
}

func (r *PKCS11Keyring) open(ctx context.Context, epoch uint32, generate bool) (*PKCS11KEK, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k, ok := r.keks[epoch]; ok {
		return k, nil
	}
	k, err := OpenPKCS11KEK(ctx, r.cfg, epoch, generate)
	if err != nil {
		return nil, err
	}
	r.keks[epoch] = k
	return k, nil
}

// Close closes every KEK the keyring opened.
func (r *PKCS11Keyring) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for n, k := range r.keks {
		errs = append(errs, k.Close())
		delete(r.keks, n)
	}
	return errors.Join(errs...)
}
