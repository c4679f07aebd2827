package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
)

// waitDrained waits until the served ledger's ledger.db holds every event the
// API lists. A backup beside a running server copies ledger.db, which the
// store fills from its commit log every 20 ms or so.
func waitDrained(t *testing.T, r *auditRig) {
	t.Helper()
	var events []struct{ Position uint64 }
	r.admin.json("GET", "/v1/ledger/events?from=1&limit=1000", nil, http.StatusOK, &events)
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(r.data, ledgerDir, "ledger.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		var last int
		if err := db.QueryRow(`SELECT last FROM events ORDER BY first DESC LIMIT 1`).Scan(&last); err != nil {
			t.Fatal(err)
		}
		if last >= len(events) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger.db holds %d of %d events after 10 s", last, len(events))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// backup runs "caledger backup" of data into out and returns its output.
func backup(t *testing.T, data, out string) string {
	t.Helper()
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"backup", "--data", data, "--out", out}, noEnv, &stdout, io.Discard); err != nil {
		t.Fatalf("backup: %v", err)
	}
	return stdout.String()
}

// restore runs "caledger restore" and returns its output and error.
func restore(t *testing.T, from, kekFile, data string, extra ...string) (string, error) {
	t.Helper()
	var stdout bytes.Buffer
	err := run(t.Context(), append([]string{"restore", "--from", from, "--kek", kekFile, "--data", data}, extra...), noEnv, &stdout, io.Discard)
	return stdout.String(), err
}

// editManifest changes the manifest of the backup dir; with kekFile, it
// seals it again under that KEK, as only the KEK's holder can.
func editManifest(t *testing.T, dir, kekFile string, edit func(*backupManifest)) {
	t.Helper()
	var m backupManifest
	b, err := os.ReadFile(filepath.Join(dir, backupManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	if kekFile != "" {
		k, err := kek.OpenFile(t.Context(), kekFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.seal(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, backupManifestFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBackupRestore backs up a served data directory while it runs, restores
// the backup into a new one and serves that: the subjects, certificates,
// revocations, erasures and events up to the backup are there, nothing after
// it, and the CA goes on issuing. The backup holds no personal data in the
// clear and no KEK.
func TestBackupRestore(t *testing.T) {
	r := newAuditRig(t)
	kept, keptSerial := r.issue("Secret Person Kept")
	erased, _ := r.issue("Secret Person Erased")
	_, revoked := r.issue("Secret Person Revoked")
	r.admin.json("POST", "/v1/certificates/"+revoked+"/revocation", map[string]string{"reason": "keyCompromise"}, http.StatusOK, nil)
	r.admin.json("POST", "/v1/subjects/"+erased+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, nil)
	var before []struct {
		Position  uint64
		Canonical []byte
	}
	r.admin.json("GET", "/v1/ledger/events?from=1&limit=1000", nil, http.StatusOK, &before)

	out := filepath.Join(t.TempDir(), "backup")
	waitDrained(t, r)
	msg := backup(t, r.data, out)
	if !strings.Contains(msg, "through position") || !strings.Contains(msg, "KEK") {
		t.Errorf("backup output: %s", msg)
	}
	after, _ := r.issue("Secret Person After")
	r.settle()
	if out, err := r.audit(); err != nil {
		t.Fatalf("audit before the restore: %v\n%s", err, out)
	}

	var m backupManifest
	if b, err := os.ReadFile(filepath.Join(out, backupManifestFile)); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.LedgerHead < uint64(len(before)) {
		t.Errorf("the backup holds the ledger through %d, before it %d events were read", m.LedgerHead, len(before))
	}
	// The manifest is sealed under the data directory's KEK.
	k, err := kek.OpenFile(t.Context(), filepath.Join(r.data, kekFile))
	if err != nil {
		t.Fatal(err)
	}
	if m.Format != backupFormat || m.Seal == nil || m.Seal.KEKID != k.ID() {
		t.Errorf("manifest format %q, seal %+v; want %q sealed under %s", m.Format, m.Seal, backupFormat, k.ID())
	}
	if err := m.checkSeal(t.Context(), k, false); err != nil {
		t.Errorf("the seal: %v", err)
	}
	var paths []string
	for _, f := range m.Files {
		paths = append(paths, f.Path)
		if strings.HasPrefix(f.Path, "keys/") || f.Path == tlsKeyFile || f.Path == configFile || f.Path == backupLedgerFile {
			checkMode(t, filepath.Join(out, filepath.FromSlash(f.Path)), 0o600)
			if f.Mode != 0o600 {
				t.Errorf("the manifest gives %s mode %o, want 0600", f.Path, f.Mode)
			}
		}
	}
	for _, want := range []string{configFile, backupLedgerFile, vaultFile, rootPEM, tlsCertFile, tlsKeyFile, checkpointKeyFile} {
		if !slices.Contains(paths, want) {
			t.Errorf("the backup lacks %s: %v", want, paths)
		}
	}
	for _, p := range paths {
		if p == kekFile || strings.HasPrefix(p, "views/") || strings.HasPrefix(p, adminDir+"/") {
			t.Errorf("the backup holds %s", p)
		}
	}
	// Personal data is only in sealed parts.
	scanned := 0
	err = filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		scanned++
		for _, s := range []string{"Secret Person", "secret@example.org"} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds %q in the clear", p, s)
			}
		}
		return nil
	})
	if err != nil || scanned != len(m.Files)+1 {
		t.Fatalf("scanned %d files of the backup's %d: %v", scanned, len(m.Files)+1, err)
	}

	// Through a link to the backup, as a "latest" link would be.
	latest := filepath.Join(t.TempDir(), "latest")
	if err := os.Symlink(out, latest); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	msg, err = restore(t, latest, filepath.Join(r.data, kekFile), restored)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !strings.Contains(msg, "checked the 1 erasures the ledger records: 0 were not complete") || !strings.Contains(msg, "repeat them from their receipts") {
		t.Errorf("restore output: %s", msg)
	}
	checkMode(t, filepath.Join(restored, kekFile), 0o600)
	checkMode(t, filepath.Join(restored, tlsKeyFile), 0o600)
	if entries, _ := os.ReadDir(filepath.Dir(restored)); len(entries) != 1 {
		t.Errorf("restore left %d entries beside the data directory", len(entries)-1)
	}
	r.stop()

	s := startServe(t, []string{"serve", "--data", restored, "--addr", "127.0.0.1:0"}, nil)
	admin := mtlsClient(t, restored, "https://"+s.addr, filepath.Join(r.data, adminDir, "admin.pem"), filepath.Join(r.data, adminDir, "admin-key.pem"))
	// First, before reads add access events: the ledger up to the backup.
	var events []struct {
		Position  uint64
		Canonical []byte
	}
	admin.json("GET", "/v1/ledger/events?from=1&limit=1000", nil, http.StatusOK, &events)
	if uint64(len(events)) != m.LedgerHead || len(events) < len(before) {
		t.Fatalf("the restored ledger serves %d events, the manifest says %d", len(events), m.LedgerHead)
	}
	for i := range before {
		if !bytes.Equal(before[i].Canonical, events[i].Canonical) {
			t.Fatalf("event %d differs after restore", before[i].Position)
		}
	}
	// The auditor, who saw the event after the backup, sees the rollback (before
	// the reads below add access events).
	r.s = s
	if out, err := r.audit(); err == nil || !strings.Contains(out, "the log shrank") {
		t.Errorf("the audit of the restored ledger, which lacks events the auditor verified: %v\n%s", err, out)
	}
	var subject struct{ Attributes map[string]string }
	admin.json("GET", "/v1/subjects/"+kept, nil, http.StatusOK, &subject, "Caledger-Reason", "restore check")
	if subject.Attributes["common_name"] != "Secret Person Kept" {
		t.Errorf("restored subject: %+v", subject)
	}
	admin.json("GET", "/v1/subjects/"+erased, nil, http.StatusGone, nil, "Caledger-Reason", "restore check")
	admin.json("GET", "/v1/subjects/"+after, nil, http.StatusNotFound, nil, "Caledger-Reason", "restore check")
	var cert struct{ Status string }
	admin.json("GET", "/v1/certificates/"+keptSerial, nil, http.StatusOK, &cert)
	if cert.Status != "valid" {
		t.Errorf("certificate %s is %s after restore", keptSerial, cert.Status)
	}
	admin.json("GET", "/v1/certificates/"+revoked, nil, http.StatusOK, &cert)
	if cert.Status != "revoked" {
		t.Errorf("revoked certificate %s is %s after restore", revoked, cert.Status)
	}
	// The restored CA goes on: an issuance lands after the restored head.
	r.admin = admin
	r.issue("Secret Person New")
	admin.json("GET", "/v1/ledger/events?from=1&limit=1000", nil, http.StatusOK, &events)
	if uint64(len(events)) <= m.LedgerHead {
		t.Errorf("no event appended after restore: %d events", len(events))
	}
}

// TestRestoreReappliesErasures: a backup whose vault copy predates an erasure
// its ledger records (the vault restored from an older backup) comes back
// with that subject's keys destroyed.
func TestRestoreReappliesErasures(t *testing.T) {
	r := newAuditRig(t)
	victim, _ := r.issue("Secret Person Victim")
	kept, _ := r.issue("Secret Person Kept")
	old := filepath.Join(t.TempDir(), "old")
	waitDrained(t, r)
	backup(t, r.data, old)
	r.admin.json("POST", "/v1/subjects/"+victim+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, nil)
	mixed := filepath.Join(t.TempDir(), "mixed")
	waitDrained(t, r)
	backup(t, r.data, mixed)
	r.stop()

	// The newer backup's ledger with the older backup's vault.
	vaultPath := filepath.Join(mixed, filepath.FromSlash(vaultFile))
	b, err := os.ReadFile(filepath.Join(old, filepath.FromSlash(vaultFile)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vaultPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// Whoever swaps the vault holds the KEK, and seals the manifest again.
	editManifest(t, mixed, filepath.Join(r.data, kekFile), func(m *backupManifest) {
		for i, f := range m.Files {
			if f.Path == vaultFile {
				if m.Files[i], err = describeFile(t.Context(), vaultPath, vaultFile); err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	// Without the re-application the victim's data would open.
	probe := filepath.Join(t.TempDir(), "probe")
	for _, rel := range []string{backupLedgerFile, vaultFile} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(probe, rel)), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := copyFile(t.Context(), filepath.Join(mixed, rel), filepath.Join(probe, rel), 0o600, -1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := copyFile(t.Context(), filepath.Join(r.data, kekFile), filepath.Join(probe, kekFile), 0o600, -1); err != nil {
		t.Fatal(err)
	}
	if !sealedOpens(t, probe, domain.SubjectID(victim)) {
		t.Fatal("the older vault does not open the victim's data: the test would prove nothing")
	}

	// Into an existing empty directory: the result replaces it.
	restored := filepath.Join(t.TempDir(), "restored")
	if err := os.Mkdir(restored, 0o700); err != nil {
		t.Fatal(err)
	}
	msg, err := restore(t, mixed, filepath.Join(r.data, kekFile), restored)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !strings.Contains(msg, "checked the 1 erasures the ledger records: 1 were not complete") {
		t.Errorf("restore output: %s", msg)
	}
	if sealedOpens(t, restored, domain.SubjectID(victim)) {
		t.Error("after restore the erased subject's data opens")
	}
	if !sealedOpens(t, restored, domain.SubjectID(kept)) {
		t.Error("after restore a subject never erased does not open")
	}
}

// sealedOpens reports whether the first sealed part of subject's stream opens
// with the ledger, vault and KEK of the data directory dir.
func sealedOpens(t *testing.T, dir string, subject domain.SubjectID) bool {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(dir, ledgerDir), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	k, err := kek.OpenFile(ctx, filepath.Join(dir, kekFile))
	if err != nil {
		t.Fatal(err)
	}
	v, err := keyvault.Open(ctx, filepath.Join(dir, vaultFile), k)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for e, err := range store.ReadStream(ctx, domain.SubjectStream(subject), 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Sealed == nil {
			continue
		}
		_, err := v.Open(ctx, e.Sealed, domain.SealedAD(&e))
		if err != nil && !errors.Is(err, domain.ErrShredded) {
			t.Fatal(err)
		}
		return err == nil
	}
	t.Fatalf("subject %s has no sealed part", subject)
	return false
}

// TestRestoreRefuses: a damaged or altered backup, a wrong KEK, or a data
// directory in use is refused, and nothing is left behind.
func TestRestoreRefuses(t *testing.T) {
	r := newAuditRig(t)
	r.issue("Secret Person")
	good := filepath.Join(t.TempDir(), "backup")
	waitDrained(t, r)
	backup(t, r.data, good)
	r.stop()
	kekPath := filepath.Join(r.data, kekFile)
	otherKEK := filepath.Join(t.TempDir(), "other-kek.json")
	if _, err := kek.OpenOrCreateFile(t.Context(), otherKEK); err != nil {
		t.Fatal(err)
	}
	looseKEK := filepath.Join(t.TempDir(), "loose-kek.json")
	if _, err := copyFile(t.Context(), kekPath, looseKEK, 0o644, -1); err != nil {
		t.Fatal(err)
	}

	// A CA backed up with its server stopped (the first admin's subject is in
	// its vault already).
	fresh := filepath.Join(t.TempDir(), "fresh")
	backup(t, initData(t), fresh)

	// altered copies the good backup and changes it.
	altered := func(change func(dir string)) string {
		dir := filepath.Join(t.TempDir(), "backup")
		copyDir(t, good, dir, func(string) bool { return false })
		change(dir)
		return dir
	}
	flip := altered(func(dir string) {
		p := filepath.Join(dir, filepath.FromSlash(backupLedgerFile))
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 1
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	extra := altered(func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	escape := altered(func(dir string) {
		editManifest(t, dir, "", func(m *backupManifest) { m.Files[0].Path = "../escape" })
	})
	missing := altered(func(dir string) {
		editManifest(t, dir, "", func(m *backupManifest) {
			m.Files = slices.DeleteFunc(m.Files, func(f backupFile) bool { return f.Path == vaultFile })
		})
		os.Remove(filepath.Join(dir, filepath.FromSlash(vaultFile)))
	})
	symlink := altered(func(dir string) {
		p := filepath.Join(dir, filepath.FromSlash(rootPEM))
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(r.data, rootPEM), p); err != nil {
			t.Fatal(err)
		}
	})
	head := altered(func(dir string) {
		editManifest(t, dir, kekPath, func(m *backupManifest) { m.LedgerHead++ })
	})
	// Someone who can write the backup but does not hold the KEK: a
	// file's sum changed with the file (here a config naming no witness),
	// the seal dropped, the format set back to the unsealed one.
	edited := altered(func(dir string) {
		p := filepath.Join(dir, configFile)
		if err := os.WriteFile(p, []byte(`{"store":"sqlite"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := describeFile(t.Context(), p, configFile)
		if err != nil {
			t.Fatal(err)
		}
		editManifest(t, dir, "", func(m *backupManifest) {
			for i := range m.Files {
				if m.Files[i].Path == configFile {
					m.Files[i] = f
				}
			}
		})
	})
	brokenSeal := altered(func(dir string) {
		editManifest(t, dir, "", func(m *backupManifest) { m.Seal.Sealed[len(m.Seal.Sealed)-1] ^= 1 })
	})
	unsealed := altered(func(dir string) { editManifest(t, dir, "", func(m *backupManifest) { m.Seal = nil }) })
	downgraded := altered(func(dir string) {
		editManifest(t, dir, "", func(m *backupManifest) { m.Seal, m.Format = nil, unsealedBackupFormat })
	})
	otherSeal := altered(func(dir string) { editManifest(t, dir, otherKEK, func(*backupManifest) {}) })
	nonEmpty := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(nonEmpty, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nonEmpty, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	for name, tc := range map[string]struct {
		from, kek, data string
		want            string
		args            []string
	}{
		"edited manifest":                      {edited, kekPath, "", "was changed after the backup: its seal is of another manifest", nil},
		"seal that does not open":              {brokenSeal, kekPath, "", "does not open under the KEK", nil},
		"seal dropped":                         {unsealed, kekPath, "", "has no seal, which format caledger-backup/2 requires", nil},
		"format set back":                      {downgraded, kekPath, "", "Restore it with --allow-unsealed", nil},
		"sealed under another KEK":             {otherSeal, kekPath, "", "the backup is sealed under KEK", nil},
		"keys under another KEK than the seal": {otherSeal, otherKEK, "", "wrapped under another KEK", nil},
		"unsealed, keys under another KEK":     {downgraded, otherKEK, "", "wrapped under another KEK", []string{"--allow-unsealed"}},
		"damaged file":                         {flip, kekPath, "", "does not match the backup's manifest", nil},
		"unlisted file":                        {extra, kekPath, "", "which its manifest does not list", nil},
		"path outside":                         {escape, kekPath, "", "not a file a backup holds", nil},
		"missing vault":                        {missing, kekPath, "", "does not list keys/vault.db", nil},
		"head mismatch":                        {head, kekPath, "", "its manifest says", nil},
		"symlink":                              {symlink, kekPath, "", "not a regular file", nil},
		"wrong KEK":                            {good, otherKEK, "", "the backup is sealed under KEK", nil},
		"wrong KEK, stopped server's backup":   {fresh, otherKEK, "", "the backup is sealed under KEK", nil},
		"readable KEK":                         {good, looseKEK, "", "group or others can read", nil},
		"not a backup":                         {t.TempDir(), kekPath, "", "is not a backup", nil},
		"non-empty target":                     {good, kekPath, nonEmpty, "is not empty", nil},
		"target is my file":                    {good, kekPath, filepath.Join(nonEmpty, "keep"), "not a directory", nil},
	} {
		t.Run(name, func(t *testing.T) {
			data := tc.data
			if data == "" {
				data = filepath.Join(t.TempDir(), "data")
			}
			_, err := restore(t, tc.from, tc.kek, data, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
			t.Log(err)
			if strings.Contains(err.Error(), "Secret Person") {
				t.Errorf("the error shows personal data: %v", err)
			}
			parent, _ := os.ReadDir(filepath.Dir(data))
			for _, e := range parent {
				if e.Name() != filepath.Base(data) && e.Name() != "keep" {
					t.Errorf("restore left %s beside the data directory", e.Name())
				}
			}
			if tc.data == "" {
				if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("restore left the data directory behind: %v", err)
				}
			}
		})
	}
	// A backup taken before manifests were sealed restores when told to.
	if out, err := restore(t, downgraded, kekPath, filepath.Join(t.TempDir(), "data"), "--allow-unsealed"); err != nil {
		t.Errorf("restore of an unsealed backup with --allow-unsealed: %v\n%s", err, out)
	}
	// A hidden directory an interrupted restore left is not touched, and
	// stops the next one until removed.
	parent := t.TempDir()
	stale := filepath.Join(parent, ".data.partial-1")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := restore(t, good, kekPath, filepath.Join(parent, "data")); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("restore beside a stale hidden directory: %v", err)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Errorf("restore removed another run's directory: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(nonEmpty, "keep")); string(b) != "x" {
		t.Error("restore changed a file in a non-empty directory")
	}
	if err := run(t.Context(), []string{"restore", "--from", good, "--data", filepath.Join(t.TempDir(), "d")}, noEnv, io.Discard, io.Discard); !isUsage(err) {
		t.Errorf("restore without --kek: %v, want a usage error", err)
	}
}

func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

func TestBackupRefuses(t *testing.T) {
	data := initData(t)
	nonEmpty := t.TempDir()
	if err := os.WriteFile(filepath.Join(nonEmpty, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	kurrent := initData(t)
	setConfig(t, kurrent, "store", "kurrent")
	for name, tc := range map[string]struct {
		data, out, want string
	}{
		"non-empty out":        {data, nonEmpty, "is not empty"},
		"inside the data":      {data, filepath.Join(data, "backup"), "inside the data directory"},
		"kurrent store":        {kurrent, filepath.Join(t.TempDir(), "b"), "KurrentDB"},
		"not initialised":      {t.TempDir(), filepath.Join(t.TempDir(), "b"), "not initialised"},
		"no parent directory":  {data, filepath.Join(t.TempDir(), "none", "b"), "no such file"},
		"out is a plain file ": {data, filepath.Join(nonEmpty, "keep"), "not a directory"},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(t.Context(), []string{"backup", "--data", tc.data, "--out", tc.out}, noEnv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
		})
	}
	if err := run(t.Context(), []string{"backup", "--data", data}, noEnv, io.Discard, io.Discard); !isUsage(err) {
		t.Errorf("backup without --out: %v, want a usage error", err)
	}
	if entries, _ := os.ReadDir(nonEmpty); len(entries) != 1 {
		t.Errorf("a refused backup left %d files", len(entries))
	}
}
