package sqlitefile

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "views.db")
	if created, mode, err := Create(path); err != nil || !created || mode.Perm() != 0o600 {
		t.Fatalf("new file: created %v, mode %v, %v", created, mode, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new file on disk: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v, %v", fi.Mode(), err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if created, mode, err := Create(path); err != nil || created || mode.Perm() != 0o640 {
		t.Fatalf("existing file: created %v, mode %v, %v; want its own mode", created, mode, err)
	}
	if _, _, err := Create(filepath.Dir(path)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a directory: %v", err)
	}
}

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tree.db")
	first, err := Lock(path+".lock", path)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description: a second open in the
	// same process conflicts as another process's would.
	if _, err := Lock(path+".lock", path); !errors.Is(err, ErrInUse) || err.Error() != path+" is in use by another process" {
		t.Fatalf("second lock: %v", err)
	}
	first.Close()
	again, err := Lock(path+".lock", path)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again.Close()
}

func TestDSN(t *testing.T) {
	got := DSN("/d/a?b#c%d.db", map[string]string{"_journal_mode": "WAL"})
	if want := "file:/d/a%3fb%23c%25d.db?_journal_mode=WAL"; got != want {
		t.Fatalf("DSN = %q, want %q", got, want)
	}
}

// TestCopy: the copy holds the source's rows while the source stays open for
// writing, gets mode 0600, and no part of a deleted row that the source's
// files still hold; a destination that exists is refused and left as it was;
// a copy that fails or is cancelled leaves no file.
func TestCopy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "a?#%.db") // a name DSN must escape
	db, err := sql.Open("sqlite3", DSN(src, map[string]string{"_journal_mode": "WAL"}))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`CREATE TABLE t(v TEXT)`,
		`INSERT INTO t VALUES ('kept'), ('` + strings.Repeat("gone", 100) + `')`,
		`DELETE FROM t WHERE v != 'kept'`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var held []byte // without secure_delete, the deleted row stays in free space
	for _, p := range []string{src, src + "-wal"} {
		b, _ := os.ReadFile(p)
		held = append(held, b...)
	}
	if !strings.Contains(string(held), "gone") {
		t.Fatal("the source's files do not hold the deleted row: the check below would prove nothing")
	}
	dst := filepath.Join(dir, "copy.db")
	if err := Copy(ctx, src, dst, nil); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the copy: %v, %v; want mode 0600", fi.Mode(), err)
	}
	raw, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "gone") {
		t.Fatal("the copy holds bytes of a deleted row")
	}
	c, err := sql.Open("sqlite3", DSN(dst, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var v string
	if err := c.QueryRowContext(ctx, `SELECT group_concat(v) FROM t`).Scan(&v); err != nil || v != "kept" {
		t.Fatalf("the copy holds %q, %v; want kept", v, err)
	}

	if err := os.WriteFile(filepath.Join(dir, "taken.db"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Copy(ctx, src, filepath.Join(dir, "taken.db"), nil); !errors.Is(err, os.ErrExist) {
		t.Fatalf("copy onto an existing file: %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "taken.db")); string(b) != "mine" {
		t.Fatalf("the existing file now holds %q", b)
	}
	notDB := filepath.Join(dir, "notdb")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	failed := filepath.Join(dir, "failed.db")
	if err := Copy(ctx, notDB, failed, nil); err == nil {
		t.Fatal("a copy of a file that is not a database succeeded")
	}
	if _, err := os.Stat(failed); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed copy left its file: %v", err)
	}
	refused := errors.New("refused")
	if err := Copy(ctx, src, failed, func(context.Context, *sql.DB) error { return refused }); !errors.Is(err, refused) {
		t.Fatalf("a copy its check refused: %v", err)
	}
	if _, err := os.Stat(failed); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a copy its check refused was left: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := Copy(cancelled, src, failed, nil); err == nil {
		t.Fatal("a cancelled copy succeeded")
	}
	if _, err := os.Stat(failed); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a cancelled copy left its file: %v", err)
	}
}
