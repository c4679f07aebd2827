package sqlitefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "views.db")
	if mode, err := Create(path); err != nil || mode.Perm() != 0o600 {
		t.Fatalf("new file: mode %v, %v", mode, err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v, %v", fi.Mode(), err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if mode, err := Create(path); err != nil || mode.Perm() != 0o640 {
		t.Fatalf("existing file: mode %v, %v; want its own mode", mode, err)
	}
	if _, err := Create(filepath.Dir(path)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
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
	if _, err := Lock(path+".lock", path); err == nil || err.Error() != path+" is in use by another process" {
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
