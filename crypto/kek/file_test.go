package kek_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/kek/kektest"
)

var (
	_ datakey.KEK = (*kek.File)(nil)
	_ datakey.KEK = (*kek.PKCS11)(nil)
)

func TestFileConformance(t *testing.T) {
	kektest.Run(t, func(t *testing.T) datakey.KEK {
		k, err := kek.OpenOrCreateFile(context.Background(), filepath.Join(t.TempDir(), "kek.json"))
		if err != nil {
			t.Fatal(err)
		}
		return k
	})
}

func TestFileCreateModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	path := filepath.Join(dir, "kek.json")
	if _, err := kek.OpenOrCreateFile(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", p, got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the KEK file (no temporary left)", len(entries))
	}
}

func TestFileReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kek.json")
	k1, err := kek.OpenOrCreateFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := k1.Wrap(ctx, []byte("data key"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	k2, err := kek.OpenFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID() != k2.ID() || !strings.HasPrefix(k2.ID(), "file:") {
		t.Fatalf("IDs %q and %q", k1.ID(), k2.ID())
	}
	got, err := k2.Unwrap(ctx, ct, []byte("ad"))
	if err != nil || string(got) != "data key" {
		t.Fatalf("Unwrap after reopen: %q, %v", got, err)
	}

	other, err := kek.OpenOrCreateFile(ctx, filepath.Join(t.TempDir(), "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	if other.ID() == k1.ID() {
		t.Fatal("two new KEK files have the same ID")
	}
	if _, err := other.Unwrap(ctx, ct, []byte("ad")); !errors.Is(err, kek.ErrInvalidCiphertext) {
		t.Fatalf("Unwrap under another KEK: %v, want ErrInvalidCiphertext", err)
	}
}

func TestFileMissing(t *testing.T) {
	_, err := kek.OpenFile(context.Background(), filepath.Join(t.TempDir(), "absent.json"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}

func TestFileRefusesLooseMode(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kek.json")
	if _, err := kek.OpenOrCreateFile(ctx, path); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := kek.OpenFile(ctx, path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: got %v, want an error telling to chmod 600", mode, err)
		}
		if _, err := kek.OpenOrCreateFile(ctx, path); err == nil {
			t.Errorf("mode %04o: OpenOrCreateFile accepted the file", mode)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := kek.OpenFile(ctx, path); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

// The error for a damaged file must not quote it: the file is the master key.
func TestFileCorruptDoesNotLeak(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kek.json")
	if _, err := kek.OpenOrCreateFile(ctx, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Cut the file inside the base64 key value, so a parser would complain about it.
	i := bytes.Index(b, []byte(`"value"`))
	if i < 0 {
		t.Fatalf("no key value in %d-byte file", len(b))
	}
	cut := b[:i+30]
	if err := os.WriteFile(path, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = kek.OpenFile(ctx, path)
	if err == nil {
		t.Fatal("loaded a truncated KEK file")
	}
	if secret := string(cut[i+10:]); strings.Contains(err.Error(), secret) {
		t.Fatalf("error quotes the key file: %v", err)
	}
}

// Processes starting together must agree on one KEK, not each mint their own.
func TestFileConcurrentCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek.json")
	const n = 8
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, err := kek.OpenOrCreateFile(context.Background(), path)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = k.ID()
		})
	}
	wg.Wait()
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Fatalf("concurrent creators got different KEKs: %q", ids)
		}
	}
}

// TestReplaceFile: the new KEK takes the old one's path, and the old file's
// bytes are zeros (seen through a second link to the old file, which the
// rename leaves); one KEK twice, a file that is no KEK and paths in other
// directories are refused before anything changes.
func TestReplaceFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, next, retired := filepath.Join(dir, "kek.json"), filepath.Join(dir, "kek.next.json"), filepath.Join(dir, ".kek.retired.json")
	oldKEK, err := kek.OpenOrCreateFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	newKEK, err := kek.OpenOrCreateFile(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	spy := filepath.Join(t.TempDir(), "old-inode")
	if err := os.Link(path, spy); err != nil {
		t.Fatal(err)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	same := filepath.Join(dir, "same.json")
	if err := os.Link(path, same); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		args [3]string
		want string
	}{
		"no KEK":            {[3]string{path, bad, retired}, "is not a Tink JSON keyset"},
		"the same path":     {[3]string{path, path, retired}, "hold the same KEK"},
		"a link to path":    {[3]string{path, same, retired}, "hold the same KEK"},
		"another directory": {[3]string{path, filepath.Join(t.TempDir(), "kek.json"), retired}, "are not in one directory"},
		"retired elsewhere": {[3]string{path, next, filepath.Join(t.TempDir(), "retired.json")}, "are not in one directory"},
	} {
		if err := kek.ReplaceFile(ctx, c.args[0], c.args[1], c.args[2]); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReplaceFile with %s: want an error with %q, got %v", name, c.want, err)
		}
	}
	if err := os.Remove(same); err != nil {
		t.Fatal(err)
	}
	if k, err := kek.OpenFile(ctx, path); err != nil || k.ID() != oldKEK.ID() {
		t.Fatalf("after refused replacements: %v", err)
	}
	if _, err := os.Lstat(retired); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused replacement left %s: %v", retired, err)
	}

	if err := kek.ReplaceFile(ctx, path, next, retired); err != nil {
		t.Fatal(err)
	}
	k, err := kek.OpenFile(ctx, path)
	if err != nil || k.ID() != newKEK.ID() {
		t.Fatalf("%s after ReplaceFile: %v", path, err)
	}
	for _, p := range []string{next, retired} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s after ReplaceFile: %v, want it gone", p, err)
		}
	}
	got, err := os.ReadFile(spy)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(before) || !bytes.Equal(got, make([]byte, len(before))) {
		t.Fatalf("the old KEK file's %d bytes are not zeros after ReplaceFile", len(before))
	}
}

// TestDestroyFileAfterStop: a replacement stopped after the rename leaves the
// old KEK at the retired path, which DestroyFile overwrites and removes.
func TestDestroyFileAfterStop(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	retired := filepath.Join(dir, ".kek.retired.json")
	if _, err := kek.OpenOrCreateFile(ctx, retired); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(retired)
	if err != nil {
		t.Fatal(err)
	}
	spy := filepath.Join(t.TempDir(), "old-inode")
	if err := os.Link(retired, spy); err != nil {
		t.Fatal(err)
	}
	if err := kek.DestroyFile(ctx, retired); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(retired); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s after DestroyFile: %v", retired, err)
	}
	if got, _ := os.ReadFile(spy); !bytes.Equal(got, make([]byte, len(before))) {
		t.Fatal("DestroyFile left the KEK's bytes")
	}
	if err := kek.DestroyFile(ctx, retired); err != nil {
		t.Fatalf("DestroyFile of a removed file: %v", err)
	}
}

// TestDestroyFileRefusesOtherFiles: a symlink and a FIFO at the path are
// refused without touching what they point to, and without waiting.
func TestDestroyFileRefusesOtherFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := kek.DestroyFile(ctx, link); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("a symlink: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("the symlink's target was overwritten: %q", b)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := kek.DestroyFile(ctx, fifo); err == nil {
		t.Fatal("a FIFO was destroyed")
	}
}
