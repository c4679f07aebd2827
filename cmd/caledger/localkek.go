package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/crypto/kek"
)

// kekOptions is config.KEK: where the local KEK lives. It wraps the embedded
// vault's data keys and the software CA keys.
type kekOptions struct {
	// Provider is "file" (keys/kek.json, the default when KEK is absent) or
	// "pkcs11": an AES-256 key on a PKCS#11 token, which never leaves it
	// and which a rotation destroys on the token. Its PIN is never stored:
	// it comes from the environment variable CALEDGER_KEK_PKCS11_PIN.
	Provider string `json:"provider"`
	Library  string `json:"library,omitempty"`
	Token    string `json:"token,omitempty"`
	// Label is the CKA_LABEL of the current key: a base label, "@" and eight
	// random hexadecimal digits, new for each KEK epoch (newKEKLabel).
	Label string `json:"label,omitempty"`
}

// kekPINEnv names the environment variable that holds the PIN of the token
// of a PKCS#11 KEK.
const kekPINEnv = "CALEDGER_KEK_PKCS11_PIN"

// openedKEK is an open local KEK; Close releases it (a no-op for a file).
type openedKEK interface {
	datakey.KEK
	Close() error
}

// errKEKLost is matched by kekHome.next when the KEK a rotation recorded is
// gone (its file, or its key on the token).
var errKEKLost = errors.New("the new KEK is missing")

// kekHome is where a data directory's KEK lives, and how a rotation puts a
// new one in its place (rotateKEK). The file and PKCS#11 homes differ only
// in these steps; the ledger's records and the re-wrapping are the same.
type kekHome interface {
	// open opens the KEK in use; create makes it (init only).
	open(ctx context.Context, create bool) (openedKEK, error)
	// id returns the ID of the KEK in use without unwrapping anything (and
	// for PKCS#11 without reaching the token).
	id(ctx context.Context) (string, error)
	// next opens a rotation's new KEK. With recorded empty the rotation is
	// not recorded yet: it makes the KEK, or takes the one an earlier run
	// made (nothing is wrapped under it). Otherwise it opens the KEK the
	// ledger records, failing with errKEKLost when it is gone.
	next(ctx context.Context, recorded string) (openedKEK, error)
	// promote makes next the KEK in use in place of cur.
	promote(ctx context.Context, cur, next openedKEK) error
	// destroy destroys the retired KEK from, as far as the data directory
	// (or the token) can; destroying what is gone already is not an error.
	destroy(ctx context.Context, from string) error
	// describe says where the KEK in use lives, for messages.
	describe() string
}

// kekHomeFor returns the home of the KEK cfg names for the data directory
// dir; env supplies a PKCS#11 PIN.
func kekHomeFor(dir string, cfg config, env func(string) string) (kekHome, error) {
	o := cfg.KEK
	if o == nil || o.Provider == "file" {
		return fileKEKHome{dir: dir}, nil
	}
	if o.Provider != "pkcs11" {
		return nil, fmt.Errorf("unknown KEK provider %q (known: file, pkcs11)", o.Provider)
	}
	if o.Library == "" || o.Token == "" || o.Label == "" {
		return nil, fmt.Errorf("%s: the pkcs11 KEK needs a library, a token and a label", configFile)
	}
	return &pkcs11KEKHome{dir: dir, opts: *o, pin: env(kekPINEnv)}, nil
}

// fileKEKHome keeps the KEK in the data directory's keys/kek.json.
type fileKEKHome struct{ dir string }

// fileKEK is a kek.File with the Close openedKEK asks for.
type fileKEK struct{ *kek.File }

func (fileKEK) Close() error { return nil }

func (h fileKEKHome) path(name string) string { return filepath.Join(h.dir, name) }

func (h fileKEKHome) open(ctx context.Context, create bool) (openedKEK, error) {
	open := kek.OpenFile
	if create {
		open = kek.OpenOrCreateFile
	}
	k, err := open(ctx, h.path(kekFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: the KEK file wraps the key vault's keys and the software CA keys; put back the copy kept apart", err)
	}
	if err != nil {
		return nil, err
	}
	return fileKEK{k}, nil
}

func (h fileKEKHome) id(ctx context.Context) (string, error) {
	k, err := kek.OpenFile(ctx, h.path(kekFile))
	if err != nil {
		return "", err
	}
	return k.ID(), nil
}

func (h fileKEKHome) next(ctx context.Context, recorded string) (openedKEK, error) {
	if recorded == "" {
		k, err := kek.OpenOrCreateFile(ctx, h.path(kekNextFile))
		if err != nil {
			return nil, err
		}
		return fileKEK{k}, nil
	}
	k, err := kek.OpenFile(ctx, h.path(kekNextFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", errKEKLost, h.path(kekNextFile))
	}
	if err != nil {
		return nil, fmt.Errorf("the ledger records a rotation to KEK %s, which should be in %s: %w", recorded, h.path(kekNextFile), err)
	}
	if k.ID() != recorded {
		return nil, fmt.Errorf("the ledger records a rotation to KEK %s, but %s holds KEK %s", recorded, h.path(kekNextFile), k.ID())
	}
	return fileKEK{k}, nil
}

// promote replaces kek.json by the next file and overwrites the old one's
// bytes (kek.ReplaceFile); destroy then finds nothing left to do.
func (h fileKEKHome) promote(ctx context.Context, _, _ openedKEK) error {
	return kek.ReplaceFile(ctx, h.path(kekFile), h.path(kekNextFile), h.path(kekRetiredFile))
}

// destroy finishes the overwrite of the retired file that a stopped promote
// left.
func (h fileKEKHome) destroy(ctx context.Context, _ string) error {
	return kek.DestroyFile(ctx, h.path(kekRetiredFile))
}

func (h fileKEKHome) describe() string { return h.path(kekFile) }

// pkcs11KEKHome keeps the KEK on a PKCS#11 token: the AES key whose label
// the config names. A rotation makes a key under a new label, moves the
// config's label to it, then deletes the old key from the token.
type pkcs11KEKHome struct {
	dir  string
	opts kekOptions
	pin  string
}

func (h *pkcs11KEKHome) config(label string) kek.PKCS11Config {
	return kek.PKCS11Config{Library: h.opts.Library, TokenLabel: h.opts.Token, PIN: h.pin, KeyLabel: label}
}

// idOf is the kek.PKCS11 ID of label on the token.
func (h *pkcs11KEKHome) idOf(label string) string { return kek.PKCS11ID(h.opts.Token, label) }

// labelOf is the label of a KEK ID on the token; ok is false for a KEK
// elsewhere.
func (h *pkcs11KEKHome) labelOf(id string) (string, bool) {
	l, ok := strings.CutPrefix(id, kek.PKCS11ID(h.opts.Token, ""))
	return l, ok && l != ""
}

// needPIN fails when the environment gave no PIN for the token.
func (h *pkcs11KEKHome) needPIN() error {
	if h.pin == "" {
		return fmt.Errorf("the KEK is on PKCS#11 token %q: set %s to the token's user PIN", h.opts.Token, kekPINEnv)
	}
	return nil
}

func (h *pkcs11KEKHome) openLabel(ctx context.Context, label string, generate, exclusive bool) (openedKEK, error) {
	if err := h.needPIN(); err != nil {
		return nil, err
	}
	cfg := h.config(label)
	cfg.Generate, cfg.Exclusive = generate, exclusive
	k, err := kek.OpenPKCS11(ctx, cfg)
	if err != nil {
		// Not k: a nil *PKCS11 in the interface would not be nil.
		return nil, err
	}
	return k, nil
}

func (h *pkcs11KEKHome) open(ctx context.Context, create bool) (openedKEK, error) {
	return h.openLabel(ctx, h.opts.Label, create, create)
}

func (h *pkcs11KEKHome) id(context.Context) (string, error) { return h.idOf(h.opts.Label), nil }

// next makes the new key under a label of its own, named in the rotation's
// marker file before the key is made: a rerun before the rotation is
// recorded takes the key the marker names, and never a key under another
// label that it did not make.
func (h *pkcs11KEKHome) next(ctx context.Context, recorded string) (openedKEK, error) {
	if recorded != "" {
		label, ok := h.labelOf(recorded)
		if !ok {
			return nil, fmt.Errorf("the ledger records a rotation to KEK %s, which is not a key on token %q", recorded, h.opts.Token)
		}
		k, err := h.openLabel(ctx, label, false, false)
		if errors.Is(err, kek.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: token %q has no key labelled %q", errKEKLost, h.opts.Token, label)
		}
		return k, err
	}
	marker := filepath.Join(h.dir, kekMarkerFile)
	b, err := os.ReadFile(marker)
	if err != nil {
		return nil, err
	}
	if label, ok := h.labelOf(string(b)); ok && label != h.opts.Label {
		// An earlier run named it and may have made it. (A run stopped
		// after it recorded the retirement leaves the marker naming the
		// key now in use, which is never the new one.)
		return h.openLabel(ctx, label, true, false)
	}
	label, err := newKEKLabel(h.opts.Label)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(marker, []byte(h.idOf(label)), 0o600); err != nil {
		return nil, err
	}
	k, err := h.openLabel(ctx, label, true, true)
	if errors.Is(err, kek.ErrKeyExists) {
		// Someone else's key under the label drawn: a rerun must not take
		// it for the one this run would have made.
		if werr := writeFileAtomic(marker, nil, 0o600); werr != nil {
			return nil, errors.Join(err, werr, os.Remove(marker))
		}
	}
	return k, err
}

// promote points the config at the next key's label.
func (h *pkcs11KEKHome) promote(_ context.Context, cur, next openedKEK) error {
	label, ok := h.labelOf(next.ID())
	if !ok {
		return fmt.Errorf("KEK %s is not a key on token %q", next.ID(), h.opts.Token)
	}
	cfg, err := readConfig(h.dir)
	if err != nil {
		return err
	}
	if cfg.KEK == nil || *cfg.KEK != h.opts {
		return fmt.Errorf("%s changed while the rotation ran", configFile)
	}
	o := *cfg.KEK
	o.Label = label
	cfg.KEK = &o
	if err := writeConfig(h.dir, cfg); err != nil {
		return err
	}
	h.opts = o
	// The old key is deleted next: its sessions go first.
	return cur.Close()
}

// destroy deletes the retired key from the token; the token's deletion is
// what makes every copy of what it wrapped (backups, freed disk blocks)
// useless.
func (h *pkcs11KEKHome) destroy(ctx context.Context, from string) error {
	label, ok := h.labelOf(from)
	if !ok {
		return fmt.Errorf("KEK %s is not a key on token %q: it is not destroyed", from, h.opts.Token)
	}
	if label == h.opts.Label {
		return fmt.Errorf("KEK %s is still the one %s names: it is not destroyed", from, configFile)
	}
	if err := h.needPIN(); err != nil {
		return err
	}
	return kek.DestroyPKCS11(ctx, h.config(label))
}

func (h *pkcs11KEKHome) describe() string {
	return fmt.Sprintf("the key labelled %q on PKCS#11 token %q", h.opts.Label, h.opts.Token)
}

// discardInitKEK deletes the PKCS#11 KEK an init of dir made, when the init
// failed before it wrote dir's config: nothing can use the key then (init
// refuses a directory that has a config, and made the key under a label no
// key carried). With a config in place, or a KEK file, it does nothing.
func discardInitKEK(ctx context.Context, dir string, cfg config, env func(string) string) error {
	if !pkcs11KEK(cfg) {
		return nil
	}
	if _, err := os.Lstat(filepath.Join(dir, configFile)); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// An interrupted init (its context cancelled) still deletes its key.
	c := kek.PKCS11Config{Library: cfg.KEK.Library, TokenLabel: cfg.KEK.Token, PIN: env(kekPINEnv), KeyLabel: cfg.KEK.Label}
	if err := kek.DestroyPKCS11(context.WithoutCancel(ctx), c); err != nil {
		return fmt.Errorf("the KEK this init made, %s, could not be deleted from the token: %w", kek.PKCS11ID(c.TokenLabel, c.KeyLabel), err)
	}
	return nil
}

// newKEKLabel returns a label for a new KEK epoch: the base of label (what
// precedes "@"), "@" and eight random hexadecimal digits.
func newKEKLabel(label string) (string, error) {
	base, _, _ := strings.Cut(label, "@")
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base + "@" + hex.EncodeToString(b[:]), nil
}
