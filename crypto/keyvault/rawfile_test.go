package keyvault

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead/aesgcm"
	"github.com/tink-crypto/tink-go/v2/insecuresecretdataaccess"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/domain"
)

func testClock() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

// keyBytes is what must vanish from disk when a key is shredded.
type keyBytes struct {
	subject domain.SubjectID
	group   string
	wrapped []byte // the row's blob: Tink EncryptedKeyset
	raw     []byte // the AES-256 key itself
}

func readKey(t testing.TB, v *Vault, subject domain.SubjectID, group string) keyBytes {
	t.Helper()
	ctx := context.Background()
	var wrapped []byte
	if err := v.db.QueryRowContext(ctx, selectKeySQL, subject, group).Scan(new(string), &wrapped); err != nil {
		t.Fatal(err)
	}
	h, err := datakey.Unwrap(ctx, wrapped, v.kek, wrapAD(string(subject), group))
	if err != nil {
		t.Fatal(err)
	}
	e, err := h.Primary()
	if err != nil {
		t.Fatal(err)
	}
	raw := e.Key().(*aesgcm.Key).KeyBytes().Data(insecuresecretdataaccess.Token{})
	if len(raw) != 32 {
		t.Fatalf("AES key is %d bytes", len(raw))
	}
	return keyBytes{subject, group, wrapped, raw}
}

// vaultFiles reads every file in dir: the database, -wal, -shm and anything else
// SQLite left there.
func vaultFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

// leaked returns where any 16-byte window of secret occurs in files. Windows that
// also occur in a surviving key's blob (format headers, a KEK's key-id prefix) are
// not the shredded key's and are skipped; today no window is that long.
func leaked(files map[string][]byte, secret []byte, survivors [][]byte) []string {
	var where []string
	for name, b := range files {
		for i := 0; i+16 <= len(secret); i++ {
			w := secret[i : i+16]
			if slices.ContainsFunc(survivors, func(s []byte) bool { return bytes.Contains(s, w) }) {
				continue
			}
			if j := bytes.Index(b, w); j >= 0 {
				where = append(where, fmt.Sprintf("%s@%d (window %d)", name, j, i))
				break
			}
		}
	}
	return where
}

func foundWhole(files map[string][]byte, b []byte) bool {
	for _, f := range files {
		if bytes.Contains(f, b) {
			return true
		}
	}
	return false
}

// TestShredRemovesBytes is the test the vault exists for: after Shred returns, no
// 16-byte piece of a shredded key, wrapped or raw, is left in any of the vault's
// files, while every surviving key's wrapped bytes are still found (which proves the
// scan would have seen them).
func TestShredRemovesBytes(t *testing.T) {
	ctx := context.Background()
	k := fileKEK(t)
	dir := t.TempDir()
	v, err := Open(ctx, filepath.Join(dir, "vault.db"), k, WithClock(testClock))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	// Enough keys for a multi-level B-tree, so rows are moved by page splits after
	// they are written; the victims are early rows, moved most.
	const n = 400
	subjects := make([]domain.SubjectID, n)
	for i := range subjects {
		if subjects[i], err = domain.NewSubjectID(rand.Reader); err != nil {
			t.Fatal(err)
		}
		for _, g := range []string{"profile", "nid"} {
			if _, err := v.Seal(ctx, subjects[i], g, []byte("x"), nil); err != nil {
				t.Fatal(err)
			}
		}
		if i == n/2 {
			// Half the keys reach the database file now, the rest stay in the WAL
			// until Shred's checkpoint.
			if _, err := v.db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
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
	// Victims: whole subjects from the checkpointed half and from the WAL half, and
	// one group of a third subject.
	wholeVictims := map[domain.SubjectID]bool{subjects[3]: true, subjects[n-5]: true}
	groupVictim := subjects[7]
	isVictim := func(kb keyBytes) bool {
		return wholeVictims[kb.subject] || kb.subject == groupVictim && kb.group == "nid"
	}

	before := vaultFiles(t, dir)
	if _, ok := before["vault.db-wal"]; !ok {
		t.Fatal("no WAL file: the vault is not in WAL mode")
	}
	for _, kb := range all {
		if isVictim(kb) && !foundWhole(before, kb.wrapped) {
			t.Fatalf("before Shred, %s/%s's wrapped key is not in the files: the scan is blind", kb.subject, kb.group)
		}
		if bytes.Contains(bytes.Join(mapValues(before), nil), kb.raw) {
			t.Fatalf("the raw key of %s/%s is on disk unwrapped", kb.subject, kb.group)
		}
	}

	for s := range wholeVictims {
		if err := v.Shred(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Shred(ctx, groupVictim, "nid"); err != nil {
		t.Fatal(err)
	}

	var survivorBlobs [][]byte
	for _, kb := range all {
		if !isVictim(kb) {
			survivorBlobs = append(survivorBlobs, kb.wrapped)
		}
	}
	check := func(t *testing.T) {
		files := vaultFiles(t, dir)
		var victims, survivors int
		for _, kb := range all {
			if isVictim(kb) {
				victims++
				if where := leaked(files, kb.wrapped, survivorBlobs); len(where) > 0 {
					t.Errorf("shredded %s/%s: wrapped key bytes remain at %v", kb.subject, kb.group, where)
				}
				if where := leaked(files, kb.raw, survivorBlobs); len(where) > 0 {
					t.Errorf("shredded %s/%s: raw key bytes remain at %v", kb.subject, kb.group, where)
				}
				continue
			}
			survivors++
			if !foundWhole(files, kb.wrapped) {
				t.Errorf("surviving %s/%s: wrapped key not found; the scan cannot be trusted", kb.subject, kb.group)
			}
		}
		if victims != 5 || survivors != 2*n-5 {
			t.Fatalf("%d victims, %d survivors", victims, survivors)
		}
	}
	t.Run("while open", check)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("after close", check)
}

func mapValues(m map[string][]byte) [][]byte {
	var out [][]byte
	for _, b := range m {
		out = append(out, b)
	}
	return out
}

// Every connection of the pool, not just the first, must carry the settings Shred
// relies on.
func TestConnectionSettings(t *testing.T) {
	ctx := context.Background()
	k := fileKEK(t)
	v, err := Open(ctx, filepath.Join(t.TempDir(), "vault.db"), k, WithClock(testClock))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for i := range 4 {
		conn, err := v.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var mode string
		var syncMode, secure, busy int
		for q, dst := range map[string]any{
			"PRAGMA journal_mode":  &mode,
			"PRAGMA synchronous":   &syncMode,
			"PRAGMA secure_delete": &secure,
			"PRAGMA busy_timeout":  &busy,
		} {
			if err := conn.QueryRowContext(ctx, q).Scan(dst); err != nil {
				t.Fatal(err)
			}
		}
		if mode != "wal" || syncMode != 2 || secure != 1 || busy != 5000 {
			t.Errorf("connection %d: journal_mode=%s synchronous=%d secure_delete=%d busy_timeout=%d", i, mode, syncMode, secure, busy)
		}
	}
}

// The wrapped rows come from a file anyone with write access can edit: unwrapping
// garbage must fail cleanly.
func FuzzUnwrap(f *testing.F) {
	ctx := context.Background()
	k := fileKEK(f)
	v, err := Open(ctx, filepath.Join(f.TempDir(), "vault.db"), k, WithClock(testClock))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { v.Close() })
	const subject = "0123456789abcdef0123456789abcdef"
	sealed, err := v.Seal(ctx, subject, "g", []byte("probe"), nil)
	if err != nil {
		f.Fatal(err)
	}
	var genuine []byte
	if err := v.db.QueryRowContext(ctx, selectKeySQL, subject, "g").Scan(new(string), &genuine); err != nil {
		f.Fatal(err)
	}
	f.Add(genuine, "g")
	f.Add(genuine[:len(genuine)-1], "g")
	f.Add([]byte{}, "g")
	f.Fuzz(func(t *testing.T, wrapped []byte, group string) {
		dk, err := v.unwrap(ctx, subject, group, wrapped)
		if err != nil {
			return
		}
		// The blob's unauthenticated parts (Tink's KeysetInfo, unknown protobuf
		// fields) may vary; the key inside may not.
		if group != "g" {
			t.Fatalf("a row for group g unwrapped as group %q", group)
		}
		if pt, ok := dk.Open(&sealed, nil); !ok || string(pt) != "probe" || dk.ID() != sealed.KeyID {
			t.Fatalf("unwrapped a key other than the genuine one from %d bytes", len(wrapped))
		}
	})
}
