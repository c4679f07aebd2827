package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/secretfile"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
)

// A backup is a directory: the files below, at their paths in the data
// directory, and manifest.json, which lists them with their SHA-256 sums.
// docs/backup.md describes it.
const (
	backupManifestFile = "manifest.json"
	// backupFormat is the format backup writes: a manifest sealed under
	// the KEK. restore reads unsealedBackupFormat, of backups taken before
	// the seal, only when told to (--allow-unsealed).
	backupFormat         = "caledger-backup/2"
	unsealedBackupFormat = "caledger-backup/1"
	// backupSealAD is the associated data of a manifest's seal: a wrap
	// under the KEK made for nothing else.
	backupSealAD = "caledger backup manifest seal v1"
	// maxBackupManifest bounds what is read of a manifest; one lists a few
	// dozen files.
	maxBackupManifest = 1 << 20
	// maxKEKFile bounds what is read of a KEK file given to restore.
	maxKEKFile = 64 << 10
)

// backupLedgerFile is the ledger's copy in a backup.
const backupLedgerFile = ledgerDir + "/ledger.db"

// plainFile is a file a backup copies as it is.
type plainFile struct {
	rel      string
	optional bool // the checkpoint key appears on the first serve
}

// backupPlainFiles are the files copied as they are. The ledger and the vault
// are copied by their own packages, and every file of caKeysDir is copied.
func backupPlainFiles() []plainFile {
	return []plainFile{
		{configFile, false},
		{rootPEM, false},
		{tlsCertFile, false},
		{tlsKeyFile, false},
		{checkpointKeyFile, true},
		{checkpointVKeyFile, true},
	}
}

// backupManifest is manifest.json. It holds no personal data: paths, sizes,
// sums, the ledger's head and the time. The seal covers the JSON encoding of
// these fields as this program writes them, so a new field needs a new
// format: a program that does not know it would drop it and find the seal
// broken.
type backupManifest struct {
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
	Version string    `json:"caledger_version"`
	// LedgerHead is the position of the last event the backup's ledger
	// holds: the backup's point in time.
	LedgerHead uint64       `json:"ledger_head"`
	Files      []backupFile `json:"files"`
	// Seal authenticates everything above under the KEK.
	Seal *backupSeal `json:"seal,omitempty"`
}

// backupSeal is a manifest's seal: the SHA-256 of the manifest's JSON
// encoding without its seal, wrapped (AEAD-encrypted) under the KEK. Only
// the KEK's holder can make a seal that unwraps, so a manifest changed
// after the backup, with the sums of files changed to match, fails restore.
type backupSeal struct {
	KEKID  string `json:"kek_id"`
	Sealed []byte `json:"sealed_sha256"`
}

// digest is the SHA-256 the seal wraps: of m's JSON encoding with no seal.
func (m backupManifest) digest() ([]byte, error) {
	m.Seal = nil
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(b)
	return h[:], nil
}

// seal seals m under k.
func (m *backupManifest) seal(ctx context.Context, k datakey.KEK) error {
	d, err := m.digest()
	if err != nil {
		return err
	}
	sealed, err := k.Wrap(ctx, d, []byte(backupSealAD))
	if err != nil {
		return fmt.Errorf("seal the manifest under the KEK: %w", err)
	}
	m.Seal = &backupSeal{KEKID: k.ID(), Sealed: sealed}
	return nil
}

// checkSeal checks m's seal under k, the KEK restore was given; an unsealed
// manifest of the earlier format passes only with allowUnsealed.
func (m *backupManifest) checkSeal(ctx context.Context, k datakey.KEK, allowUnsealed bool) error {
	if k == nil {
		return errors.New("no KEK to check the manifest's seal with")
	}
	if m.Format == unsealedBackupFormat {
		if !allowUnsealed {
			return fmt.Errorf("the backup has format %s, whose manifest has no seal: nothing shows that it is the manifest the backup wrote. Restore it with --allow-unsealed if it was taken before the seal (caledger before backup format 2) and kept where only the backup system writes", m.Format)
		}
		return nil
	}
	if m.Seal == nil {
		return fmt.Errorf("%s has no seal, which format %s requires: the manifest was changed after the backup", backupManifestFile, m.Format)
	}
	if m.Seal.KEKID != k.ID() {
		return fmt.Errorf("the backup is sealed under KEK %s, and the KEK given is %s: give the KEK of the data directory the backup was taken from (%w)", m.Seal.KEKID, k.ID(), keyvault.ErrWrongKEK)
	}
	got, err := k.Unwrap(ctx, m.Seal.Sealed, []byte(backupSealAD))
	if errors.Is(err, kek.ErrInvalidCiphertext) {
		return fmt.Errorf("the seal of %s does not open under the KEK: the manifest was changed after the backup", backupManifestFile)
	}
	if err != nil {
		return fmt.Errorf("open the seal of %s: %w", backupManifestFile, err)
	}
	want, err := m.digest()
	if err != nil {
		return err
	}
	if !hmac.Equal(got, want) {
		return fmt.Errorf("%s was changed after the backup: its seal is of another manifest", backupManifestFile)
	}
	return nil
}

type backupFile struct {
	Path   string `json:"path"` // slash-separated, relative to the data directory
	Mode   uint32 `json:"mode"` // permission bits
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// backupPathAllowed reports whether rel may appear in a backup: the known
// files, and plain file names in caKeysDir. restore writes nothing else.
func backupPathAllowed(rel string) bool {
	if !fs.ValidPath(rel) || strings.Contains(rel, "\\") {
		return false
	}
	switch rel {
	case backupLedgerFile, vaultFile:
		return true
	}
	for _, f := range backupPlainFiles() {
		if rel == f.rel {
			return true
		}
	}
	dir, name := path.Split(rel)
	return dir == caKeysDir+"/" && name != "" && !strings.HasPrefix(name, ".")
}

func runBackup(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("backup", flag.ContinueOnError)
	dataDir := flags.String("data", envOr(env, "CALEDGER_DATA", "./data"), "data `directory`; env CALEDGER_DATA")
	out := flags.String("out", "", "the backup `directory` to create; it must not exist, or be empty")
	setUsage(flags, "backup --out DIR [--data DIR]", `Write a backup of the data directory to a new directory, with the server
running or stopped. The ledger and the key vault are copied inside SQLite read
transactions, the ledger first: the backup's point in time is the ledger's
last event. Also copied: caledger.json, the CA certificate, the software CA
keys (wrapped by the KEK), the checkpoint key and the server's TLS
credential, with a manifest of SHA-256 sums sealed under the KEK (a KEK on
a PKCS#11 token needs its PIN in `+kekPINEnv+`).

Left out: the KEK (keys/kek.json; keep a copy apart from the backups), the
views and the Merkle tree (rebuilt on restore), the directory publisher's
checkpoint (everything is republished) and the first admin credential.
'caledger restore' puts a backup back. docs/backup.md has the details.`)
	if help, err := parseFlags(flags, args, stdout); help || err != nil {
		return err
	}
	if *out == "" {
		return &usageError{msg: "backup: --out is required (run 'caledger backup -h')"}
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	target, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	cfg, err := readConfig(dir)
	if err != nil {
		return err
	}
	if !cfg.embedded() {
		return fmt.Errorf("backup: this data directory's store is %q: its ledger and data keys are not in the directory (a KurrentDB cluster is backed up with its own tools, docs/distributed.md)", cfg.Store)
	}
	if rel, err := filepath.Rel(dir, target); err == nil && filepath.IsLocal(rel) {
		return fmt.Errorf("backup: %s is inside the data directory; write the backup elsewhere", target)
	}
	kekBefore, kekWhere, err := noKEKRotation(ctx, dir, "")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	// The KEK seals the manifest; it is opened before anything is copied,
	// so that a missing PIN stops the backup at once.
	home, err := kekHomeFor(dir, cfg, env)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	k, err := home.open(ctx, false)
	if err != nil {
		return fmt.Errorf("backup: the KEK, which seals the backup's manifest (%s): %w", home.describe(), err)
	}
	defer k.Close()
	if k.ID() != kekBefore {
		return fmt.Errorf("backup: the KEK opened is %s, and the data directory's is %s", k.ID(), kekBefore)
	}
	stage, err := stageDir(target)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	done := false
	defer func() {
		if !done {
			removeStage(stage, stderr)
		}
	}()
	for _, d := range []string{ledgerDir, caKeysDir} {
		if err := os.MkdirAll(filepath.Join(stage, d), 0o700); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	start := time.Now()
	// The ledger first, then the vault: an erasure in the ledger's copy had
	// its keys destroyed before the vault's copy was taken, or restore
	// destroys them again. An erasure after the ledger's copy is after the
	// backup's point in time.
	head, err := sqlite.Backup(ctx, filepath.Join(dir, ledgerDir), filepath.Join(stage, filepath.FromSlash(backupLedgerFile)), sqlite.Options{})
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := keyvault.Backup(ctx, filepath.Join(dir, vaultFile), filepath.Join(stage, filepath.FromSlash(vaultFile))); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	m := backupManifest{Format: backupFormat, Created: time.Now().UTC().Truncate(time.Second), Version: version(), LedgerHead: head}
	for _, rel := range []string{backupLedgerFile, vaultFile} {
		f, err := describeFile(ctx, filepath.Join(stage, filepath.FromSlash(rel)), rel)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		m.Files = append(m.Files, f)
	}
	copies := backupPlainFiles()
	keys, err := os.ReadDir(filepath.Join(dir, caKeysDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("backup: %w", err)
	}
	for _, k := range keys {
		rel := caKeysDir + "/" + k.Name()
		if strings.HasPrefix(k.Name(), ".") {
			continue // a temporary file of a key being written
		}
		if !k.Type().IsRegular() || !backupPathAllowed(rel) {
			return fmt.Errorf("backup: %s is not a plain file; the CA keys directory holds only key files", filepath.Join(dir, filepath.FromSlash(rel)))
		}
		copies = append(copies, plainFile{rel: rel})
	}
	for _, c := range copies {
		f, err := copyFile(ctx, filepath.Join(dir, filepath.FromSlash(c.rel)), filepath.Join(stage, filepath.FromSlash(c.rel)), 0, -1)
		if c.optional && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		f.Path = c.rel
		m.Files = append(m.Files, f)
	}
	var total int64
	for _, f := range m.Files {
		total += f.Size
	}
	// A rotation that ran meanwhile (it takes the ledger's lock, as a
	// server does) may have re-wrapped part of what was copied.
	if _, _, err := noKEKRotation(ctx, dir, kekBefore); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := m.seal(ctx, k); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(stage, backupManifestFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := commitDir(stage, target); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	done = true
	fmt.Fprintf(stdout, "backed up the ledger through position %d and %d files (%s) to %s in %s\n",
		head, len(m.Files), byteSize(total), target, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "position %d is the backup's point in time; a running server's commits of the last few tens of milliseconds may be after it\n", head)
	if pkcs11KEK(cfg) {
		fmt.Fprintf(stdout, "the KEK (%s) is not in the backup: the backup can be restored only while the token holds that key, and a KEK rotation deletes it\n", kekWhere)
	} else {
		fmt.Fprintf(stdout, "the KEK (%s) is not in the backup: keep a copy of it apart, or the backup cannot be restored\n", kekWhere)
	}
	return nil
}

func runRestore(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("restore", flag.ContinueOnError)
	from := flags.String("from", "", "the backup `directory`")
	kekPath := flags.String("kek", "", "the KEK `file` (keys/kek.json) of the data directory the backup was taken from; not given for a KEK on a PKCS#11 token, whose PIN comes from env "+kekPINEnv)
	dataDir := flags.String("data", envOr(env, "CALEDGER_DATA", "./data"), "the data `directory` to create; it must not exist, or be empty; env CALEDGER_DATA")
	allowUnsealed := flags.Bool("allow-unsealed", false, "restore a backup of format 1, taken before manifests were sealed under the KEK")
	setUsage(flags, "restore --from DIR [--kek FILE] [--data DIR] [--allow-unsealed]", `Restore a backup made by 'caledger backup' into a new data directory, then
start the server on it. The KEK (the file --kek names, or the key on the
PKCS#11 token the backup's config names) must be the one that sealed the
manifest and wraps the backup's keys; every file is checked against the
manifest. The keys of every erasure the
ledger records are destroyed again (a vault copy may predate some), and the
views are rebuilt, with a progress bar on stderr. If a step fails, nothing is
left in the data directory.

Erasures recorded after the backup's point in time are not in it: repeat them
from their receipts. docs/backup.md has the details.`)
	if help, err := parseFlags(flags, args, stdout); help || err != nil {
		return err
	}
	if *from == "" {
		return &usageError{msg: "restore: --from is required (run 'caledger restore -h')"}
	}
	src, err := filepath.Abs(*from)
	if err != nil {
		return err
	}
	// A link to the backup (say /backups/latest) is followed once, here;
	// inside the backup only regular files are accepted.
	if src, err = filepath.EvalSymlinks(src); err != nil {
		return fmt.Errorf("restore: %s is not a backup: %w", *from, err)
	}
	target, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	m, err := readBackupManifest(src)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// The KEK is checked before anything is copied, as far as the backup's
	// config (checked against the manifest only once copied) says where it
	// is; the copy's config decides below.
	var kekBytes []byte
	var k openedKEK
	defer func() {
		if k != nil {
			k.Close()
		}
	}()
	peek, err := readConfig(src)
	if err == nil {
		if err := kekArgs(peek, *kekPath, env); err != nil {
			return err
		}
		if pkcs11KEK(peek) {
			// Loaded before the seal is checked: say what is loaded.
			fmt.Fprintf(stderr, "opening the KEK %q on PKCS#11 token %q through %s, as the backup's %s names it\n", peek.KEK.Label, peek.KEK.Token, peek.KEK.Library, configFile)
			if k, err = openTokenKEK(ctx, src, peek, env); err != nil {
				return err
			}
		}
	}
	if *kekPath != "" {
		if kekBytes, err = secretfile.Read(*kekPath, maxKEKFile); err != nil {
			return fmt.Errorf("restore: the KEK: %w", err)
		}
		// The bytes checked are the bytes installed below.
		f, err := kek.ParseFile(kekBytes, *kekPath)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		k = fileKEK{f}
	}
	// The seal is checked before anything is copied when the KEK is known
	// by now (always, but for a backup whose config does not parse), and
	// otherwise, or under another KEK, once the copy's config names it.
	sealed := k != nil
	if sealed {
		if err := m.checkSeal(ctx, k, *allowUnsealed); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	stage, err := stageDir(target)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	done := false
	defer func() {
		if !done {
			removeStage(stage, stderr)
		}
	}()
	start := time.Now()
	for _, f := range m.Files {
		if err := restoreFile(ctx, src, stage, f); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	cfg, err := readConfig(stage)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if !cfg.embedded() {
		return fmt.Errorf("restore: the backup's store is %q; only the embedded store is backed up", cfg.Store)
	}
	if err := kekArgs(cfg, *kekPath, env); err != nil {
		return err
	}
	if pkcs11KEK(cfg) && (!pkcs11KEK(peek) || *cfg.KEK != *peek.KEK) {
		// The copy's config, which the manifest vouches for, names another
		// key than the one read before the copy.
		if k != nil {
			k.Close()
		}
		fmt.Fprintf(stderr, "opening the KEK %q on PKCS#11 token %q through %s, as the copied %s names it\n", cfg.KEK.Label, cfg.KEK.Token, cfg.KEK.Library, configFile)
		if k, err = openTokenKEK(ctx, stage, cfg, env); err != nil {
			return err
		}
		sealed = false
	}
	if !sealed {
		if err := m.checkSeal(ctx, k, *allowUnsealed); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	// The keys of recorded erasures go before the KEK joins them: a restore
	// killed half-way never leaves the KEK beside a key it should not open.
	erasures, shredded, err := reapplyErasures(ctx, stage, k, m.LedgerHead)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if kekBytes != nil {
		if err := writeFileAtomic(filepath.Join(stage, kekFile), kekBytes, 0o600); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	events, err := restoreNode(ctx, stage, cfg, env, stderr)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := commitDir(stage, target); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	done = true
	fmt.Fprintf(stdout, "restored the ledger through position %d (backup of %s) into %s in %s\n",
		m.LedgerHead, m.Created.Format(time.RFC3339), target, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "checked the %d erasures the ledger records: %d were not complete in the backup's vault and are now; rebuilt the views from %d events\n", erasures, shredded, events)
	fmt.Fprintf(stdout, "erasures recorded after position %d are not in the backup: repeat them from their receipts (docs/backup.md)\n", m.LedgerHead)
	if pkcs11KEK(cfg) {
		fmt.Fprintf(stdout, "%s runs on the same KEK as the data directory the backup was taken from, the key labelled %q on PKCS#11 token %q: a 'caledger kek rotate' of either deletes the key the other needs, so rotate only the one that stays in service, after the other is gone\n", target, cfg.KEK.Label, cfg.KEK.Token)
	}
	return nil
}

// noKEKRotation fails if a rotation of the KEK of the data directory dir is
// unfinished (its marker file exists), or if the KEK is no longer the one
// named before (when before is not empty): a backup taken across a rotation
// may hold keys wrapped under each KEK, and would open under neither. It
// returns the KEK's id and where it lives.
func noKEKRotation(ctx context.Context, dir, before string) (id, where string, err error) {
	for _, f := range []string{kekMarkerFile, kekNextFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return "", "", fmt.Errorf("a KEK rotation is unfinished (%s exists): complete it with 'caledger kek rotate', then back up", f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", err
		}
	}
	// The config is read again each time: a rotation of a PKCS#11 KEK
	// changes the label it names.
	cfg, err := readConfig(dir)
	if err != nil {
		return "", "", err
	}
	// The ID needs no PIN.
	home, err := kekHomeFor(dir, cfg, noPIN)
	if err != nil {
		return "", "", err
	}
	if id, err = home.id(ctx); err != nil {
		return "", "", err
	}
	if before != "" && id != before {
		return "", "", errors.New("the KEK was rotated while the backup ran: run the backup again")
	}
	return id, home.describe(), nil
}

// openTokenKEK opens the PKCS#11 KEK the config cfg of the backup or data
// directory dir names, for restore.
func openTokenKEK(ctx context.Context, dir string, cfg config, env func(string) string) (openedKEK, error) {
	home, err := kekHomeFor(dir, cfg, env)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	k, err := home.open(ctx, false)
	if errors.Is(err, kek.ErrKeyNotFound) {
		return nil, fmt.Errorf("restore: the backup's KEK, %s, is no longer on the token (a later 'caledger kek rotate' deletes it): this backup cannot be restored: %w", home.describe(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("restore: the KEK (%s): %w", home.describe(), err)
	}
	return k, nil
}

// kekArgs checks restore's --kek against the backup's config cfg: a KEK file
// needs it; a KEK on a PKCS#11 token refuses it and needs the token's PIN.
func kekArgs(cfg config, kekPath string, env func(string) string) error {
	switch {
	case pkcs11KEK(cfg) && kekPath != "":
		return &usageError{msg: "restore: the backup's KEK is a key on a PKCS#11 token, not a file: drop --kek and set " + kekPINEnv}
	case pkcs11KEK(cfg) && env(kekPINEnv) == "":
		return fmt.Errorf("restore: the backup's KEK is a key on PKCS#11 token %q: set %s to the token's user PIN", cfg.KEK.Token, kekPINEnv)
	case !pkcs11KEK(cfg) && kekPath == "":
		return &usageError{msg: "restore: --kek is required: the backup's KEK is a file (run 'caledger restore -h')"}
	}
	return nil
}

// pkcs11KEK reports whether cfg's KEK is a key on a PKCS#11 token.
func pkcs11KEK(cfg config) bool { return cfg.KEK != nil && cfg.KEK.Provider == "pkcs11" }

// noPIN is the environment of a KEK home that reaches no token.
func noPIN(string) string { return "" }

// reapplyErasures opens the ledger and the vault of the restored directory
// dir (the vault with k, which must be the KEK that wrapped its keys), checks
// that the ledger ends at head, and destroys the keys of every erasure the
// ledger records that the vault still holds. It returns the number of
// erasures and how many of them had keys left.
func reapplyErasures(ctx context.Context, dir string, k keyvault.KEK, head uint64) (erasures, shredded int, err error) {
	store, err := sqlite.Open(ctx, filepath.Join(dir, ledgerDir), sqlite.Options{})
	if err != nil {
		return 0, 0, fmt.Errorf("open the ledger: %w", err)
	}
	defer store.Close()
	got, err := store.Head(ctx)
	if err != nil {
		return 0, 0, err
	}
	if got != head {
		return 0, 0, fmt.Errorf("the backup's ledger ends at position %d, its manifest says %d", got, head)
	}
	v, err := keyvault.Open(ctx, filepath.Join(dir, vaultFile), k)
	if err != nil {
		return 0, 0, fmt.Errorf("open the key vault: %w", err)
	}
	defer v.Close()
	owed := &owedShreds{Vault: v}
	if erasures, err = domain.ReapplyErasures(ctx, store.ReadAll(ctx, 1), owed); err != nil {
		return 0, 0, fmt.Errorf("destroy the keys of recorded erasures: %w", err)
	}
	if err := v.Close(); err != nil {
		return 0, 0, err
	}
	return erasures, owed.shredded, store.Close()
}

// owedShreds passes on only the shreds the vault does not already hold. A
// tombstone is recorded in the transaction that deletes its keys, and a vault
// copy carries no WAL, so a tombstoned erasure needs nothing more; the others
// get Shred's own transaction and checkpoint, one fsync each.
type owedShreds struct {
	*keyvault.Vault
	shredded int
}

func (v *owedShreds) Shred(ctx context.Context, subject domain.SubjectID, groups ...string) error {
	st, err := v.ErasureStatus(ctx, subject)
	if err != nil {
		return err
	}
	if datakey.Covers(st.Groups, groups...) && !st.CheckpointPending {
		return nil
	}
	v.shredded++
	return v.Vault.Shred(ctx, subject, groups...)
}

// restoreNode opens the restored data directory as serve would, rebuilds the
// views and loads the CAs (which proves their keys open). It returns the
// number of events.
func restoreNode(ctx context.Context, dir string, cfg config, env func(string) string, stderr io.Writer) (uint64, error) {
	n, err := openNode(ctx, cfg, dir, slog.New(slog.NewTextHandler(stderr, nil)), env)
	if err != nil {
		return 0, err
	}
	defer n.close()
	events, err := n.rebuildViews(ctx, stderr)
	if err != nil {
		return 0, err
	}
	if err := n.loadCAs(ctx, cfg, env); err != nil {
		return 0, fmt.Errorf("load the CAs: %w", err)
	}
	return events, n.close()
}

// readBackupManifest reads and checks dir's manifest: a known format, paths
// restore may write, each once, the files restore needs, and no file in dir
// the manifest does not list.
func readBackupManifest(dir string) (backupManifest, error) {
	var m backupManifest
	b, err := readFileLimit(filepath.Join(dir, backupManifestFile), maxBackupManifest)
	if errors.Is(err, fs.ErrNotExist) {
		return m, fmt.Errorf("%s is not a backup: %w", dir, err)
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", backupManifestFile, err)
	}
	if m.Format != backupFormat && m.Format != unsealedBackupFormat {
		return m, fmt.Errorf("%s: format %q is not known (want %q)", backupManifestFile, m.Format, backupFormat)
	}
	listed := map[string]bool{backupManifestFile: true}
	for _, f := range m.Files {
		if !backupPathAllowed(f.Path) {
			return m, fmt.Errorf("%s lists %q, which is not a file a backup holds", backupManifestFile, f.Path)
		}
		if listed[f.Path] {
			return m, fmt.Errorf("%s lists %q twice", backupManifestFile, f.Path)
		}
		listed[f.Path] = true
	}
	need := []string{backupLedgerFile, vaultFile}
	for _, f := range backupPlainFiles() {
		if !f.optional {
			need = append(need, f.rel)
		}
	}
	for _, rel := range need {
		if !listed[rel] {
			return m, fmt.Errorf("%s does not list %s", backupManifestFile, rel)
		}
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s holds %s, which is not a regular file", dir, rel)
		}
		if !listed[filepath.ToSlash(rel)] {
			return fmt.Errorf("%s holds %s, which its manifest does not list", dir, rel)
		}
		return nil
	})
	return m, err
}

// restoreFile copies f from the backup src into stage, checking its size and
// SHA-256 against the manifest as it copies.
func restoreFile(ctx context.Context, src, stage string, f backupFile) error {
	from := filepath.Join(src, filepath.FromSlash(f.Path))
	to := filepath.Join(stage, filepath.FromSlash(f.Path))
	got, err := copyFile(ctx, from, to, fs.FileMode(f.Mode)&0o644|0o600, f.Size+1)
	if err != nil {
		return err
	}
	if got.Size != f.Size || got.SHA256 != f.SHA256 {
		return fmt.Errorf("%s does not match the backup's manifest: the backup is damaged or was altered", f.Path)
	}
	return nil
}

// copyFile copies the regular file from to the new file to, synced, with
// mode perm (0: from's permission bits), making to's directory (0700) if
// needed. It copies at most limit bytes (no limit when negative) and returns
// the size and SHA-256 of what it copied.
func copyFile(ctx context.Context, from, to string, perm fs.FileMode, limit int64) (_ backupFile, err error) {
	in, err := os.Open(from)
	if err != nil {
		return backupFile{}, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return backupFile{}, err
	}
	if !fi.Mode().IsRegular() {
		return backupFile{}, fmt.Errorf("%s is not a regular file", from)
	}
	if perm == 0 {
		perm = fi.Mode().Perm()
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return backupFile{}, err
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return backupFile{}, err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if err := out.Chmod(perm); err != nil {
		return backupFile{}, err
	}
	var r io.Reader = ctxReader{ctx, in}
	if limit >= 0 {
		r = io.LimitReader(r, limit)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), r)
	if err != nil {
		return backupFile{}, fmt.Errorf("copy %s: %w", from, err)
	}
	if err := out.Sync(); err != nil {
		return backupFile{}, fmt.Errorf("sync %s: %w", to, err)
	}
	return backupFile{Mode: uint32(perm), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// describeFile returns the manifest entry of the file at p, named rel.
func describeFile(ctx context.Context, p, rel string) (backupFile, error) {
	f, err := os.Open(p)
	if err != nil {
		return backupFile{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return backupFile{}, err
	}
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, f})
	if err != nil {
		return backupFile{}, fmt.Errorf("read %s: %w", rel, err)
	}
	return backupFile{Path: rel, Mode: uint32(fi.Mode().Perm()), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// ctxReader ends a long copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// syncTree syncs every directory under dir, dir included, so that the files
// made in them stay after a crash.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if err := secretfile.SyncDir(p); err != nil {
			return fmt.Errorf("sync %s: %w", p, err)
		}
		return nil
	})
}

// stageDir checks that target does not exist or is an empty directory on
// its parent's filesystem, and makes a hidden directory beside it to build its
// content in. It refuses while a hidden directory of an interrupted run is
// there: that may hold keys and personal data, and is for its owner to remove.
func stageDir(target string) (string, error) {
	parent, base := filepath.Split(target)
	siblings, err := os.ReadDir(parent)
	if err != nil {
		return "", err
	}
	for _, e := range siblings {
		if strings.HasPrefix(e.Name(), "."+base+".partial-") {
			return "", fmt.Errorf("%s was left by an interrupted (or running) backup or restore; it may hold keys and personal data: remove it, then run again", filepath.Join(parent, e.Name()))
		}
	}
	tt, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return os.MkdirTemp(parent, "."+base+".partial-*")
	case err != nil:
		return "", err
	case !tt.IsDir():
		return "", fmt.Errorf("%s exists and is not a directory", target)
	}
	entries, err := os.ReadDir(target)
	if err != nil {
		return "", err
	}
	if len(entries) > 0 {
		return "", fmt.Errorf("%s is not empty", target)
	}
	ts, err := os.Stat(parent)
	if err != nil {
		return "", err
	}
	pd, ok1 := ts.Sys().(*syscall.Stat_t)
	td, ok2 := tt.Sys().(*syscall.Stat_t)
	if ok1 && ok2 && pd.Dev != td.Dev {
		return "", fmt.Errorf("%s is on another filesystem than its parent (a mount point), and the result is renamed into place from beside it: name a new directory inside it", target)
	}
	return os.MkdirTemp(parent, "."+base+".partial-*")
}

// commitDir syncs every directory of the finished stage, moves it to target
// (replacing target if it is an empty directory) and syncs target's parent.
// An error after the move says so: target is then complete, and the stage,
// gone, needs no removal.
func commitDir(stage, target string) error {
	if err := syncTree(stage); err != nil {
		return err
	}
	// rename(2) itself, which replaces an empty directory in one step;
	// os.Rename refuses any directory as the new name.
	if err := syscall.Rename(stage, target); err != nil {
		return &os.LinkError{Op: "rename", Old: stage, New: target, Err: err}
	}
	if err := secretfile.SyncDir(filepath.Dir(target)); err != nil {
		return fmt.Errorf("%s is complete, but syncing its parent directory failed (a crash may lose its name): %w", target, err)
	}
	return nil
}

// removeStage removes a stage after a failure; one it cannot remove is
// reported, since it may hold keys and personal data.
func removeStage(stage string, stderr io.Writer) {
	if err := os.RemoveAll(stage); err != nil {
		fmt.Fprintf(stderr, "caledger: could not remove %s, which may hold keys and personal data: %v\n", stage, err)
	}
}

// byteSize formats n bytes for people.
func byteSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f, i = f/1024, i+1
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
