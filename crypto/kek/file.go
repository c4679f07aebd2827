package kek

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/caledger/caledger/crypto/secretfile"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// ErrInvalidCiphertext is matched by Unwrap errors for a ciphertext that does not
// authenticate under the KEK with the given associated data.
var ErrInvalidCiphertext = errors.New("kek: ciphertext does not authenticate")

// maxFileSize bounds what File reads: a one-key keyset is a few hundred bytes.
const maxFileSize = 1 << 20

// File is a KEK held in a local file as a cleartext Tink JSON keyset (the format
// tinkey writes). It is the embedded default; the file is the one secret that makes
// the vault readable, so it must not sit beside the vault in backups.
//
// The keyset's primary key is the KEK; its key id names it (ID). Replacing the file
// with another keyset is a new KEK epoch, not a rotation: the vault refuses keys
// wrapped under another ID.
type File struct {
	id   string
	aead tink.AEAD
}

// OpenFile loads the KEK file at path. It refuses a file whose mode grants group or
// others any access.
func OpenFile(ctx context.Context, path string) (*File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := secretfile.Read(path, maxFileSize)
	if err != nil {
		return nil, fmt.Errorf("kek: %w", err)
	}
	// The parser's error is not passed on: it may quote the file, that is, the key.
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(b)))
	if err != nil {
		return nil, fmt.Errorf("kek: %s is not a Tink JSON keyset", path)
	}
	return newFile(h)
}

// OpenOrCreateFile loads the KEK file at path, first creating it with a new
// AES-256-GCM key if it does not exist. The file gets mode 0600 and, if it is
// created, its directory mode 0700.
//
// Creation writes a temporary file, syncs it, and links it into place, then syncs the
// directory: the file appears complete or not at all, and a file that appeared
// meanwhile (another process's) is kept and loaded rather than replaced, because
// keys may already be wrapped under it.
func OpenOrCreateFile(ctx context.Context, path string) (*File, error) {
	f, err := OpenFile(ctx, path)
	if !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	if err := create(path); err != nil {
		return nil, err
	}
	return OpenFile(ctx, path)
}

func create(path string) error {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return fmt.Errorf("kek: new key: %w", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return fmt.Errorf("kek: encode key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".kek-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(buf.Bytes())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kek: write %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return fmt.Errorf("kek: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("kek: sync %s: %w", dir, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func newFile(h *keyset.Handle) (*File, error) {
	p, err := h.Primary()
	if err != nil {
		return nil, fmt.Errorf("kek: keyset: %w", err)
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("kek: keyset is not an AEAD keyset: %w", err)
	}
	return &File{id: fmt.Sprintf("file:%08x", p.KeyID()), aead: a}, nil
}

// ID returns "file:" and the primary key id in hex.
func (f *File) ID() string { return f.id }

// Wrap encrypts plaintext with ad as associated data.
func (f *File) Wrap(ctx context.Context, plaintext, ad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ct, err := f.aead.Encrypt(plaintext, ad)
	if err != nil {
		return nil, fmt.Errorf("kek: wrap: %w", err)
	}
	return ct, nil
}

// Unwrap decrypts a Wrap output; it fails with ErrInvalidCiphertext unless ad is the
// one given to Wrap.
func (f *File) Unwrap(ctx context.Context, ciphertext, ad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pt, err := f.aead.Decrypt(ciphertext, ad)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", ErrInvalidCiphertext, f.id)
	}
	return pt, nil
}

// ErrNotOverwritten is matched by a ReplaceFile error when the new KEK file is
// in place but the old file's bytes could not be overwritten.
var ErrNotOverwritten = errors.New("kek: the old KEK file's bytes were not overwritten")

// ReplaceFile makes the KEK file at next the KEK file at path, and destroys
// the file that was at path: it checks that next holds a KEK, renames it over
// path, syncs the directory, then overwrites the old file's bytes with zeros
// (through a descriptor opened before the rename) and syncs them. Both paths
// must be in the same directory.
//
// Overwriting reaches the bytes the filesystem still maps to the old file;
// journaling and copy-on-write filesystems, snapshots and flash remapping may
// keep older copies, and copies made elsewhere (of the file, or of the disk)
// are the operator's to destroy. If only the overwrite fails, the error
// matches ErrNotOverwritten and the new KEK is in place.
func ReplaceFile(ctx context.Context, path, next string) error {
	if filepath.Dir(filepath.Clean(path)) != filepath.Dir(filepath.Clean(next)) {
		return fmt.Errorf("kek: %s and %s are not in one directory", path, next)
	}
	if _, err := OpenFile(ctx, next); err != nil {
		return err
	}
	old, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	defer old.Close()
	fi, err := old.Stat()
	if err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("kek: %s is not a regular file", path)
	}
	if err := os.Rename(next, path); err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("kek: sync %s: %w", filepath.Dir(path), err)
	}
	_, err = old.WriteAt(make([]byte, fi.Size()), 0)
	if err == nil {
		err = old.Sync()
	}
	if cerr := old.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotOverwritten, err)
	}
	return nil
}
