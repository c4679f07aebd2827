package keyvault

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caledger/caledger/domain"
)

// fileVault opens a new vault.db in dir under a new file KEK, and returns it,
// its path and the KEK.
func fileVault(t *testing.T, dir string) (*Vault, string, KEK) {
	t.Helper()
	k := fileKEK(t)
	path := filepath.Join(dir, "vault.db")
	v, err := Open(context.Background(), path, k, WithClock(testClock))
	if err != nil {
		t.Fatal(err)
	}
	return v, path, k
}

// TestBackup: a copy of an open vault holds the surviving keys and the
// tombstones, and no byte of a shredded key.
func TestBackup(t *testing.T) {
	ctx := context.Background()
	v, path, k := fileVault(t, t.TempDir())
	defer v.Close()
	var err error
	const n = 60
	subjects := make([]domain.SubjectID, n)
	sealed := make([]domain.Sealed, n)
	for i := range subjects {
		if subjects[i], err = domain.NewSubjectID(rand.Reader); err != nil {
			t.Fatal(err)
		}
		for _, g := range []string{"profile", "nid"} {
			if sealed[i], err = v.Seal(ctx, subjects[i], g, []byte("x"), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	var all []keyBytes
	for _, s := range subjects {
		for _, g := range []string{"profile", "nid"} {
			all = append(all, readKey(t, v, s, g))
		}
	}
	victim := subjects[5]
	if err := v.Shred(ctx, victim); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	dst := filepath.Join(dir, "vault.db")
	if err := Backup(ctx, path, dst); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v, want 0600", st.Mode().Perm())
	}
	files := vaultFiles(t, dir)
	var survivors [][]byte
	for _, kb := range all {
		if kb.subject != victim {
			survivors = append(survivors, kb.wrapped)
		}
	}
	for _, kb := range all {
		if kb.subject == victim {
			if where := leaked(files, kb.wrapped, survivors); len(where) > 0 {
				t.Errorf("shredded %s/%s: wrapped key bytes in the backup at %v", kb.subject, kb.group, where)
			}
		} else if !foundWhole(files, kb.wrapped) {
			t.Errorf("surviving %s/%s: wrapped key not in the backup", kb.subject, kb.group)
		}
	}

	b, err := Open(ctx, dst, k, WithClock(testClock))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Open(ctx, &sealed[6], nil); err != nil {
		t.Errorf("a surviving key does not open in the backup: %v", err)
	}
	if _, err := b.Seal(ctx, victim, "profile", []byte("y"), nil); !errors.Is(err, domain.ErrShredded) {
		t.Errorf("Seal for a shredded subject in the backup gave %v, want ErrShredded (the tombstone must be carried)", err)
	}

	if err := os.WriteFile(filepath.Join(dir, "taken"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Backup(ctx, path, filepath.Join(dir, "taken")); err == nil {
		t.Error("Backup over an existing file succeeded")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "taken")); string(got) != "keep" {
		t.Errorf("Backup changed an existing file: %q", got)
	}
	if err := Backup(ctx, filepath.Join(t.TempDir(), "none.db"), filepath.Join(dir, "none.db")); err == nil {
		t.Error("Backup of a missing vault succeeded")
	}
}

// BenchmarkBackup copies a vault of 100,000 subjects with two keys each
// (rows of the size real wrapped keys have, inserted in one transaction),
// open in this process as in a running server.
func BenchmarkBackup(b *testing.B) {
	ctx := context.Background()
	k := fileKEK(b)
	path := filepath.Join(b.TempDir(), "vault.db")
	v, err := Open(ctx, path, k)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	s, err := domain.NewSubjectID(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := v.Seal(ctx, s, "profile", []byte("x"), nil); err != nil {
		b.Fatal(err)
	}
	wrapped := readKey(b, v, s, "profile").wrapped
	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	for range 100_000 {
		id, _ := domain.NewSubjectID(rand.Reader)
		for _, g := range []string{"identity", "national-id"} {
			w := make([]byte, len(wrapped))
			rand.Read(w)
			if _, err := tx.ExecContext(ctx, `INSERT INTO data_keys (subject, key_group, kek_id, wrapped, created_ns) VALUES (?, ?, ?, ?, 0)`, id, g, v.kekID, w); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	out := b.TempDir()
	i := 0
	var size int64
	for b.Loop() {
		i++
		dst := filepath.Join(out, fmt.Sprintf("vault-%d.db", i))
		if err := Backup(ctx, path, dst); err != nil {
			b.Fatal(err)
		}
		fi, _ := os.Stat(dst)
		size = fi.Size()
		os.Remove(dst)
	}
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}

// TestBackupLeavesOwedBytes: while a reader elsewhere keeps Shred's checkpoint
// from running, the shredded key's old pages stay in the vault's -wal file;
// a backup taken then does not carry them.
func TestBackupLeavesOwedBytes(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	v, path, _ := fileVault(t, srcDir)
	defer v.Close()
	victim, _ := domain.NewSubjectID(rand.Reader)
	survivor, _ := domain.NewSubjectID(rand.Reader)
	for _, s := range []domain.SubjectID{victim, survivor} {
		if _, err := v.Seal(ctx, s, "profile", []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	gone, kept := readKey(t, v, victim, "profile"), readKey(t, v, survivor, "profile")

	// A reader outside the vault, holding a snapshot from before the shred.
	reader, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	tx, err := reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM data_keys").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := v.Shred(ctx, victim); err == nil {
		t.Fatal("Shred's checkpoint ran despite the reader: the test would prove nothing")
	}
	if !foundWhole(vaultFiles(t, srcDir), gone.wrapped) {
		t.Fatal("the shredded key's bytes are not in the vault's files while the checkpoint is owed: the scan is blind")
	}

	dir := t.TempDir()
	if err := Backup(ctx, path, filepath.Join(dir, "vault.db")); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
	files := vaultFiles(t, dir)
	if where := leaked(files, gone.wrapped, [][]byte{kept.wrapped}); len(where) > 0 {
		t.Errorf("the backup carries the shredded key's bytes at %v", where)
	}
	if !foundWhole(files, kept.wrapped) {
		t.Error("the backup lacks the surviving key")
	}
}

// TestBackupRemovesRefusedCopy: a copy that fails Backup's own checks (here a
// schema version this program does not know) is removed, not left behind.
func TestBackupRemovesRefusedCopy(t *testing.T) {
	ctx := context.Background()
	v, path, _ := fileVault(t, t.TempDir())
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `PRAGMA user_version = 0`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	dst := filepath.Join(t.TempDir(), "vault.db")
	if err := Backup(ctx, path, dst); err == nil || !strings.Contains(err.Error(), "schema version 0") {
		t.Fatalf("Backup of a vault of schema version 0: %v", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused copy was left behind: %v", err)
	}
}
