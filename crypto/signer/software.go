package signer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/caledger/caledger/crypto/secretfile"
)

// Wrapper encrypts key material under a key-encryption key. crypto/kek.File and
// crypto/kek.PKCS11 satisfy it.
type Wrapper interface {
	// ID names the KEK; it is recorded in every key file so that a file wrapped
	// under another KEK is reported as such rather than as corrupt.
	ID() string
	// Wrap encrypts plaintext with ad as associated data.
	Wrap(ctx context.Context, plaintext, ad []byte) ([]byte, error)
	// Unwrap decrypts a Wrap output; it MUST fail unless ad is the one given to Wrap,
	// and its errors MUST NOT contain the plaintext.
	Unwrap(ctx context.Context, ciphertext, ad []byte) ([]byte, error)
}

// Software keeps CA keys in files under one directory, each PKCS#8 key wrapped by a
// Wrapper (see the package documentation for the format). It is safe for concurrent
// use, also by several processes on one directory: Generate never replaces a file.
type Software struct {
	dir    string
	w      Wrapper
	closed atomic.Bool
}

// NewSoftware returns a provider over dir, which Generate creates (mode 0700) if it
// does not exist; an existing directory's mode is left alone. w must not be nil.
// NewSoftware touches nothing until the provider is used.
func NewSoftware(dir string, w Wrapper) *Software {
	return &Software{dir: dir, w: w}
}

var _ Provider = (*Software)(nil)

func (s *Software) path(label string) string { return filepath.Join(s.dir, label+".key") }

// Generate creates a key of type alg, wraps it and writes it to <dir>/<label>.key
// with mode 0600. The file appears complete or not at all, and is durable when
// Generate returns: it is written to a temporary file, synced, linked to its name
// (which fails if the name exists, so two Generates never both succeed) and the
// directory is synced.
func (s *Software) Generate(ctx context.Context, label string, alg Algorithm) (crypto.Signer, Ref, error) {
	ref := Ref{Provider: ProviderSoftware, Label: label, Algorithm: alg}
	if err := CheckLabel(label); err != nil {
		return nil, Ref{}, err
	}
	curve, err := alg.curve()
	if err != nil {
		return nil, Ref{}, err
	}
	if err := s.usable(ctx); err != nil {
		return nil, Ref{}, err
	}
	where := "signer: software: key " + label
	path := s.path(label)
	if _, err := os.Lstat(path); err == nil {
		return nil, Ref{}, fmt.Errorf("%w: %s", ErrExists, where)
	}

	var priv crypto.Signer
	if curve != nil {
		priv, err = ecdsa.GenerateKey(curve, rand.Reader)
	} else {
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, Ref{}, fmt.Errorf("%s: generate: %w", where, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, Ref{}, fmt.Errorf("%s: encode: %w", where, err)
	}
	defer clear(der)
	f, err := newKeyFile(alg, s.w.ID())
	if err != nil {
		return nil, Ref{}, fmt.Errorf("%s: %w", where, err)
	}
	f.ciphertext, err = s.w.Wrap(ctx, der, f.ad(label))
	if err != nil {
		return nil, Ref{}, fmt.Errorf("%s: wrap: %w", where, err)
	}
	if err := s.writeNew(label, f.encode()); err != nil {
		return nil, Ref{}, err
	}
	return &key{ref: ref, pub: priv.Public(), signer: priv, closed: &s.closed}, ref, nil
}

// writeNew puts b at label's path, failing with ErrExists if something is there.
func (s *Software) writeNew(label string, b []byte) error {
	where := "signer: software: key " + label
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	tmp, err := s.writeTemp(label, b)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	defer os.Remove(tmp)
	// A link, not a rename: rename replaces an existing file, and a CA key that
	// another process created meanwhile must never be overwritten.
	if err := os.Link(tmp, s.path(label)); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, where)
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	if err := secretfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("%s: sync directory: %w", where, err)
	}
	return nil
}

// writeTemp writes b to a new hidden file (mode 0600) in the directory,
// synced, and returns its name; the caller removes it. Labels hold no '.', so
// a temporary name never collides with a key file.
func (s *Software) writeTemp(label string, b []byte) (string, error) {
	tmp, err := os.CreateTemp(s.dir, "."+label+"-*.tmp")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("write: %w", err)
	}
	return tmp.Name(), nil
}

// Load reads, unwraps and parses the key file of ref.Label.
func (s *Software) Load(ctx context.Context, ref Ref) (crypto.Signer, error) {
	if err := checkRef(ref, ProviderSoftware); err != nil {
		return nil, err
	}
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	where := "signer: software: key " + ref.Label
	b, err := readKeyFile(s.path(ref.Label))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, where)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	f, err := parseKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if f.alg != ref.Algorithm {
		return nil, fmt.Errorf("%w: %s is %q, the ref says %s", ErrWrongAlgorithm, where, string(f.alg), ref.Algorithm)
	}
	if id := s.w.ID(); f.kekID != id {
		return nil, fmt.Errorf("%s: wrapped under KEK %q, this KEK is %q", where, f.kekID, id)
	}
	der, err := s.w.Unwrap(ctx, f.ciphertext, f.ad(ref.Label))
	if err != nil {
		// A file copied from another label fails here: the label is in the ad.
		return nil, fmt.Errorf("%s: unwrap (damaged, or not this label's key file): %w", where, err)
	}
	defer clear(der)
	// The parser's error is not passed on: it could describe the key's bytes.
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: unwrapped key is not PKCS#8", where)
	}
	priv, ok := parsed.(crypto.Signer)
	if !ok || algorithmOf(priv.Public()) != ref.Algorithm {
		return nil, fmt.Errorf("%w: %s: unwrapped key is not %s", ErrWrongAlgorithm, where, ref.Algorithm)
	}
	return &key{ref: ref, pub: priv.Public(), signer: priv, closed: &s.closed}, nil
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSz+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileSz {
		return nil, fmt.Errorf("%w: larger than %d bytes", errNotKeyFile, maxKeyFileSz)
	}
	return b, nil
}

func (s *Software) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return fmt.Errorf("%w: software %s", ErrClosed, s.dir)
	}
	return nil
}

// Close makes the provider and its signers refuse further use. The keys stay in
// memory until the garbage collector takes the signers: Go offers no reliable way to
// erase them.
func (s *Software) Close() error {
	s.closed.Store(true)
	return nil
}

// Rewrap re-wraps every key file of the provider's directory that is wrapped
// under the provider's Wrapper so that it is wrapped under to instead, and
// returns how many it re-wrapped; files already under to are left alone, so a
// stopped Rewrap resumes. A file under any other KEK, or that does not open,
// is an error, and the files after it are not touched. Each file is replaced
// whole: the new bytes are checked to unwrap under to, written to a temporary
// file, synced and renamed over the old one, and the directory is synced.
// Hidden files (the temporary files of an interrupted Generate or Rewrap) are
// skipped. The directory must not be in use meanwhile: a Generate or Load
// running at the same time may see either KEK.
func (s *Software) Rewrap(ctx context.Context, to Wrapper) (int, error) {
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	if to.ID() == s.w.ID() {
		return 0, fmt.Errorf("signer: software: rewrap: the old and the new KEK are the same (%q)", to.ID())
	}
	labels, err := keyFileLabels(s.dir)
	if err != nil {
		return 0, fmt.Errorf("signer: software: rewrap: %w", err)
	}
	n := 0
	for _, label := range labels {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		done, err := s.rewrapFile(ctx, label, to)
		if err != nil {
			return n, err
		}
		if done {
			n++
		}
	}
	return n, nil
}

// rewrapFile re-wraps label's key file under to; false if it already was.
func (s *Software) rewrapFile(ctx context.Context, label string, to Wrapper) (bool, error) {
	where := "signer: software: rewrap: key file " + label + ".key"
	b, err := readKeyFile(s.path(label))
	if err != nil {
		return false, fmt.Errorf("%s: %w", where, err)
	}
	f, err := parseKeyFile(b)
	if err != nil {
		return false, fmt.Errorf("%s: %w", where, err)
	}
	switch f.kekID {
	case to.ID():
		return false, nil
	case s.w.ID():
	default:
		return false, fmt.Errorf("%s: wrapped under KEK %q, neither the old KEK %q nor the new %q", where, f.kekID, s.w.ID(), to.ID())
	}
	der, err := s.w.Unwrap(ctx, f.ciphertext, f.ad(label))
	if err != nil {
		return false, fmt.Errorf("%s: unwrap: %w", where, err)
	}
	defer clear(der)
	nf, err := newKeyFile(f.alg, to.ID())
	if err != nil {
		return false, fmt.Errorf("%s: %w", where, err)
	}
	if nf.ciphertext, err = to.Wrap(ctx, der, nf.ad(label)); err != nil {
		return false, fmt.Errorf("%s: wrap: %w", where, err)
	}
	check, err := to.Unwrap(ctx, nf.ciphertext, nf.ad(label))
	if err != nil || !bytes.Equal(check, der) {
		clear(check)
		return false, fmt.Errorf("%s: the new wrapping does not unwrap to the key", where)
	}
	clear(check)
	if err := s.replace(label, nf.encode()); err != nil {
		return false, fmt.Errorf("%s: %w", where, err)
	}
	return true, nil
}

// replace puts b at label's path in place of the file there, durably.
func (s *Software) replace(label string, b []byte) error {
	tmp, err := s.writeTemp(label, b)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Rename(tmp, s.path(label)); err != nil {
		return err
	}
	if err := secretfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// KeyFileKEKs returns how many key files of the software provider directory
// dir are wrapped under each KEK id, from their headers; a missing directory
// has none. Hidden files are skipped, as by Rewrap.
func KeyFileKEKs(dir string) (map[string]int, error) {
	out := map[string]int{}
	labels, err := keyFileLabels(dir)
	if err != nil {
		return nil, fmt.Errorf("signer: software: %w", err)
	}
	for _, label := range labels {
		b, err := readKeyFile(filepath.Join(dir, label+".key"))
		if err != nil {
			return nil, fmt.Errorf("signer: software: key file %s.key: %w", label, err)
		}
		f, err := parseKeyFile(b)
		if err != nil {
			return nil, fmt.Errorf("signer: software: key file %s.key: %w", label, err)
		}
		out[f.kekID]++
	}
	return out, nil
}

// keyFileLabels returns the labels of the key files (<label>.key) in dir,
// skipping hidden files (the temporary files of an interrupted Generate or
// Rewrap); a missing directory has none. A key file whose label CheckLabel
// refuses is an error: Rewrap and KeyFileKEKs must see the same files.
func keyFileLabels(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no software key was ever made
	}
	if err != nil {
		return nil, err
	}
	var labels []string
	for _, e := range entries {
		label, ok := strings.CutSuffix(e.Name(), ".key")
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := CheckLabel(label); err != nil {
			return nil, fmt.Errorf("key file %s: %w", e.Name(), err)
		}
		labels = append(labels, label)
	}
	return labels, nil
}
