package secretfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/secretfile"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	if err := os.WriteFile(path, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := secretfile.Read(path, 6); err != nil || string(b) != "s3cret" {
		t.Fatalf("Read = %q, %v", b, err)
	}
	for _, mode := range []fs.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := secretfile.Read(path, 6); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := secretfile.Read(path, 6); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
	_, err := secretfile.Read(path, 5)
	if err == nil || !strings.Contains(err.Error(), "larger than 5 bytes") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("over the limit: %v", err)
	}
	if _, err := secretfile.Read(dir, 6); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	if _, err := secretfile.Read(filepath.Join(dir, "none"), 6); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
}

func TestSyncDir(t *testing.T) {
	if err := secretfile.SyncDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if err := secretfile.SyncDir(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("a missing directory: %v, want an error naming it", err)
	}
}
