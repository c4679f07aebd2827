package kek

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

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
	return ParseFile(b, path)
}

// ParseFile loads a KEK from the bytes b of a KEK file, which name names in
// errors: for a caller that reads the file itself (with secretfile.Read) and
// needs its bytes, as a restore that installs them.
func ParseFile(b []byte, name string) (*File, error) {
	// The parser's error is not passed on: it may quote the file, that is, the key.
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(b)))
	if err != nil {
		return nil, fmt.Errorf("kek: %s is not a Tink JSON keyset", name)
	}
	return newFile(h, name)
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
	if err := secretfile.SyncDir(dir); err != nil {
		return fmt.Errorf("kek: sync %s: %w", dir, err)
	}
	return nil
}

func newFile(h *keyset.Handle, name string) (*File, error) {
	// Tink's errors are not passed on either: they quote the keyset's
	// fields, which come from the file.
	p, err := h.Primary()
	if err != nil {
		return nil, fmt.Errorf("kek: %s has no usable primary key", name)
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("kek: %s is not a keyset of AEAD keys, such as the AES-256-GCM key caledger makes", name)
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

// ReplaceFile makes the KEK file at next the KEK file at path, and destroys
// the file that was at path. All three paths must be in one directory, and
// path and next must hold two different KEKs. The steps, each durable before
// the next:
//
//  1. path's file is linked to retired as well (a rerun finds the link
//     there and goes on);
//  2. next is renamed over path;
//  3. DestroyFile(retired) overwrites the old KEK's bytes and removes it.
//
// A stop after step 2 leaves the old KEK at retired, where DestroyFile
// finishes the work; the caller tells the case from the KEK at path.
func ReplaceFile(ctx context.Context, path, next, retired string) error {
	dir := filepath.Dir(filepath.Clean(path))
	if filepath.Dir(filepath.Clean(next)) != dir || filepath.Dir(filepath.Clean(retired)) != dir {
		return fmt.Errorf("kek: %s, %s and %s are not in one directory", path, next, retired)
	}
	nk, err := OpenFile(ctx, next)
	if err != nil {
		return err
	}
	ck, err := OpenFile(ctx, path)
	if err != nil {
		return err
	}
	if nk.ID() == ck.ID() {
		return fmt.Errorf("kek: %s and %s hold the same KEK %s", path, next, ck.ID())
	}
	oldFi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	switch fi, err := os.Lstat(retired); {
	case errors.Is(err, os.ErrNotExist):
		if err := os.Link(path, retired); err != nil {
			return fmt.Errorf("kek: %w", err)
		}
	case err != nil:
		return fmt.Errorf("kek: %w", err)
	case !os.SameFile(fi, oldFi):
		return fmt.Errorf("kek: %s exists and is not %s", retired, path)
	}
	if err := secretfile.SyncDir(dir); err != nil {
		return fmt.Errorf("kek: sync %s: %w", dir, err)
	}
	if err := os.Rename(next, path); err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	if err := secretfile.SyncDir(dir); err != nil {
		return fmt.Errorf("kek: sync %s: %w", dir, err)
	}
	return DestroyFile(ctx, retired)
}

// DestroyFile overwrites the bytes of the KEK file at path with zeros, syncs
// them, removes the file and syncs its directory. A missing file is not an
// error (a rerun after the removal).
//
// Overwriting reaches the bytes the file system still maps to the file;
// journaling and copy-on-write file systems, snapshots and flash remapping may
// keep older copies, and copies made elsewhere (of the file, or of the disk)
// are the operator's to destroy.
func DestroyFile(ctx context.Context, path string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// The checks are of the file opened, not of the path: a symlink is not
	// followed. The overwrite reaches the file's every name: a caller must
	// not pass a name that shares the live KEK's file (a hard link, as in
	// ReplaceFile's first step).
	// O_NONBLOCK: opening a FIFO put there must not wait for a reader.
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case errors.Is(err, syscall.ELOOP):
		return fmt.Errorf("kek: %s is a symlink, which is not followed", path)
	case err != nil:
		return fmt.Errorf("kek: %w", err)
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = errors.New("not a regular file")
	default:
		if _, err = f.WriteAt(make([]byte, fi.Size()), 0); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kek: overwrite %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	if err := secretfile.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("kek: sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}
