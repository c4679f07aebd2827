package keyvault

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/crypto/hsm/softhsmtest"
	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/domain"
)

func fileKEK(t testing.TB) *kek.File {
	t.Helper()
	k, err := kek.OpenOrCreateFile(context.Background(), filepath.Join(t.TempDir(), "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRewrap: a rewrap stopped after its first batch leaves the file as it
// was; a file half re-wrapped (as older versions, which committed in batches,
// could leave it) opens under neither KEK, and a second run completes it,
// after which every surviving key opens under the new KEK only, shredded keys
// stay shredded, the old KEK is off the file's list, and no row's old
// wrapping is left in the vault's files.
func TestRewrap(t *testing.T) {
	ctx := context.Background()
	oldKEK, newKEK := fileKEK(t), fileKEK(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "vault.db")
	v, err := Open(ctx, path, oldKEK, WithClock(testClock))
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	groups := []string{"profile", "nid"}
	subjects := make([]domain.SubjectID, n)
	sealed := map[domain.SubjectID]map[string]domain.Sealed{}
	for i := range subjects {
		if subjects[i], err = domain.NewSubjectID(rand.Reader); err != nil {
			t.Fatal(err)
		}
		sealed[subjects[i]] = map[string]domain.Sealed{}
		for _, g := range groups {
			s, err := v.Seal(ctx, subjects[i], g, []byte("data of "+g), []byte(g))
			if err != nil {
				t.Fatal(err)
			}
			sealed[subjects[i]][g] = s
		}
	}
	if err := v.Shred(ctx, subjects[0]); err != nil {
		t.Fatal(err)
	}
	if err := v.Shred(ctx, subjects[1], "nid"); err != nil {
		t.Fatal(err)
	}
	var oldWraps [][]byte
	for _, s := range subjects[1:] {
		for _, g := range groups {
			if s == subjects[1] && g == "nid" {
				continue
			}
			oldWraps = append(oldWraps, readKey(t, v, s, g).wrapped)
		}
	}
	const live = 2*n - 3
	if len(oldWraps) != live {
		t.Fatalf("%d surviving keys, want %d", len(oldWraps), live)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}

	// Stopped after the first batch: nothing is written.
	stopCtx, stop := context.WithCancel(ctx)
	done, err := rewrap(stopCtx, path, oldKEK, newKEK, 16, func(done, total int) {
		if done != 16 || total != live {
			t.Errorf("progress %d of %d, want 16 of %d", done, total, live)
		}
		stop()
	})
	if !errors.Is(err, context.Canceled) || done != 0 {
		t.Fatalf("stopped rewrap: %d keys, %v; want 0 and context.Canceled", done, err)
	}
	if counts, err := KEKCounts(ctx, path); err != nil || len(counts) != 1 || counts[oldKEK.ID()] != live {
		t.Fatalf("after the stopped rewrap: %v, %v; want all %d keys under the old KEK", counts, err, live)
	}
	v, err = Open(ctx, path, oldKEK, WithClock(testClock))
	if err != nil {
		t.Fatalf("Open with the old KEK after a stopped rewrap: %v", err)
	}
	if keks := fileKEKs(t, v); len(keks) != 1 || keks[0] != oldKEK.ID() {
		t.Fatalf("keks lists %q after a stopped rewrap, want only the old KEK", keks)
	}

	// Half re-wrapped: 16 keys under the new KEK.
	if _, err := v.db.ExecContext(ctx, "INSERT INTO keks (kek_id, added_ns) VALUES (?, 0)", newKEK.ID()); err != nil {
		t.Fatal(err)
	}
	for _, r := range firstKeys(t, v, 16) {
		ad := wrapAD(r.subject, r.group)
		h, err := datakey.Unwrap(ctx, r.wrapped, oldKEK, ad)
		if err != nil {
			t.Fatal(err)
		}
		w, err := datakey.Wrap(ctx, h, newKEK, ad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.db.ExecContext(ctx, "UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE rowid = ?", newKEK.ID(), w, r.rowid); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []KEK{oldKEK, newKEK} {
		if v, err := Open(ctx, path, k); !errors.Is(err, ErrWrongKEK) {
			if err == nil {
				v.Close()
			}
			t.Fatalf("Open of a half-rewrapped file with %s: %v, want ErrWrongKEK", k.ID(), err)
		}
	}

	var last [2]int
	done, err = rewrap(ctx, path, oldKEK, newKEK, 16, func(done, total int) { last = [2]int{done, total} })
	if err != nil || done != live-16 || last != [2]int{live - 16, live - 16} {
		t.Fatalf("resumed rewrap: %d keys (last progress %v), %v; want %d", done, last, err, live-16)
	}
	if v, err := Open(ctx, path, oldKEK); !errors.Is(err, ErrWrongKEK) {
		if err == nil {
			v.Close()
		}
		t.Fatalf("Open with the old KEK after the rewrap: %v, want ErrWrongKEK", err)
	}
	v, err = Open(ctx, path, newKEK, WithClock(testClock))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subjects {
		for _, g := range groups {
			sl := sealed[s][g]
			pt, err := v.Open(ctx, &sl, []byte(g))
			shredded := s == subjects[0] || (s == subjects[1] && g == "nid")
			switch {
			case shredded && !errors.Is(err, ErrShredded):
				t.Fatalf("shredded key %s/%s after the rewrap: %v, want ErrShredded", s, g, err)
			case !shredded && (err != nil || string(pt) != "data of "+g):
				t.Fatalf("key %s/%s after the rewrap: %q, %v", s, g, pt, err)
			}
		}
	}
	if _, err := v.Seal(ctx, subjects[0], "profile", []byte("x"), nil); !errors.Is(err, ErrShredded) {
		t.Fatalf("Seal for an erased subject after the rewrap: %v, want ErrShredded", err)
	}
	if keks := fileKEKs(t, v); len(keks) != 1 || keks[0] != newKEK.ID() {
		t.Fatalf("keks lists %q, want only the new KEK %q", fileKEKs(t, v), newKEK.ID())
	}
	newWrap := readKey(t, v, subjects[2], "profile").wrapped
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	files := vaultFiles(t, dir)
	if !foundWhole(files, newWrap) {
		t.Fatal("a new wrapping is not found in the vault's files: the scan cannot see rows")
	}
	for i, w := range oldWraps {
		if foundWhole(files, w) {
			t.Fatalf("old wrapping %d of %d is still in the vault's files", i, len(oldWraps))
		}
	}

	// Done: a rerun has nothing to do.
	if done, err := Rewrap(ctx, path, oldKEK, newKEK, nil); err != nil || done != 0 {
		t.Fatalf("rewrap of a done file: %d, %v", done, err)
	}
}

// TestRewrapRefuses: keys under a third KEK, the same KEK twice and a missing
// file are refused, and nothing is written.
func TestRewrapRefuses(t *testing.T) {
	ctx := context.Background()
	a, b, c := fileKEK(t), fileKEK(t), fileKEK(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "vault.db")
	v, err := Open(ctx, path, a, WithClock(testClock))
	if err != nil {
		t.Fatal(err)
	}
	s, err := domain.NewSubjectID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sl, err := v.Seal(ctx, s, "profile", []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	v.Close()

	if _, err := Rewrap(ctx, path, b, c, nil); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("rewrap of keys under a third KEK: %v, want ErrWrongKEK", err)
	}
	if _, err := Rewrap(ctx, path, a, a, nil); err == nil {
		t.Fatal("rewrap to the same KEK succeeded")
	}
	missing := filepath.Join(dir, "none.db")
	if _, err := Rewrap(ctx, missing, a, b, nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("rewrap of a missing file: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("rewrap of a missing file created it: %v", err)
	}
	v, err = Open(ctx, path, a)
	if err != nil {
		t.Fatalf("the refused rewraps changed the file: %v", err)
	}
	defer v.Close()
	if pt, err := v.Open(ctx, &sl, nil); err != nil || string(pt) != "x" {
		t.Fatalf("key after the refused rewraps: %q, %v", pt, err)
	}
	if keks := fileKEKs(t, v); len(keks) != 1 || keks[0] != a.ID() {
		t.Fatalf("keks lists %q after the refused rewraps, want only %q", keks, a.ID())
	}
}

// TestRewrapRefusesBadRow: a key that does not unwrap (here a row copied to
// another subject, so its associated data no longer matches) stops the rewrap,
// and the file is left as it was, even where the keys before it were
// re-wrapped in the transaction.
func TestRewrapRefusesBadRow(t *testing.T) {
	ctx := context.Background()
	a, b := fileKEK(t), fileKEK(t)
	path := filepath.Join(t.TempDir(), "vault.db")
	v, err := Open(ctx, path, a, WithClock(testClock))
	if err != nil {
		t.Fatal(err)
	}
	var subjects []domain.SubjectID
	for range 5 {
		s, err := domain.NewSubjectID(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Seal(ctx, s, "profile", []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, s)
	}
	// Two middle rows get another subject's key: the two keys before them
	// are re-wrapped in the transaction before the first bad one is read.
	before := firstKeys(t, v, 2)
	for _, i := range []int{2, 3} {
		moved := readKey(t, v, subjects[i+1], "profile").wrapped
		if _, err := v.db.ExecContext(ctx, `UPDATE data_keys SET wrapped = ? WHERE subject = ?`, moved, subjects[i]); err != nil {
			t.Fatal(err)
		}
	}
	v.Close()
	done, err := rewrap(ctx, path, a, b, 1, nil)
	if err == nil || done != 0 || !strings.Contains(err.Error(), "2 keys under the old KEK do not unwrap") || !strings.Contains(err.Error(), string(subjects[2])) {
		t.Fatalf("rewrap with two moved rows: %d, %v", done, err)
	}
	counts, err := KEKCounts(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 1 || counts[a.ID()] != 5 {
		t.Fatalf("the refused rewrap changed the file: %v", counts)
	}
	v, err = Open(ctx, path, a, WithClock(testClock))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if keks := fileKEKs(t, v); len(keks) != 1 || keks[0] != a.ID() {
		t.Fatalf("keks lists %q after the refused rewrap, want only %q", keks, a.ID())
	}
	for i, r := range firstKeys(t, v, 2) {
		if !bytes.Equal(r.wrapped, before[i].wrapped) {
			t.Fatalf("row %d, re-wrapped before the bad rows, was not rolled back", i)
		}
	}
}

// firstKeys returns the first n rows of v's data keys.
func firstKeys(t *testing.T, v *Vault, n int) []wrappedRow {
	t.Helper()
	rows, err := v.db.QueryContext(context.Background(), "SELECT rowid, subject, key_group, wrapped FROM data_keys ORDER BY rowid LIMIT ?", n)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []wrappedRow
	for rows.Next() {
		var r wrappedRow
		if err := rows.Scan(&r.rowid, &r.subject, &r.group, &r.wrapped); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil || len(out) != n {
		t.Fatalf("%d rows, %v; want %d", len(out), err, n)
	}
	return out
}

func fileKEKs(t *testing.T, v *Vault) []string {
	t.Helper()
	var keks []string
	rows, err := v.db.QueryContext(context.Background(), "SELECT kek_id FROM keks")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		keks = append(keks, id)
	}
	return keks
}

// BenchmarkRewrap re-wraps a vault of 20,000 subjects with two real keys
// each; the iterations alternate between two KEKs, so each one re-wraps every
// key. BenchmarkRewrapCrypto is its baseline: the unwrap and wrap of one key,
// with no file. Each runs with KEK files and with two AES keys on a SoftHSM2
// token (every unwrap and wrap a PKCS#11 call).
func BenchmarkRewrap(b *testing.B) {
	b.Run("file", func(b *testing.B) { benchRewrap(b, fileKEK(b), fileKEK(b)) })
	b.Run("pkcs11", func(b *testing.B) {
		a, c := benchPKCS11KEKs(b)
		benchRewrap(b, a, c)
	})
}

func benchRewrap(b *testing.B, a, c KEK) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "vault.db")
	v, err := Open(ctx, path, a)
	if err != nil {
		b.Fatal(err)
	}
	const subjects = 20_000
	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	for range subjects {
		id, _ := domain.NewSubjectID(rand.Reader)
		for _, g := range []string{"identity", "national-id"} {
			h, _, err := datakey.New()
			if err != nil {
				b.Fatal(err)
			}
			w, err := datakey.Wrap(ctx, h, a, wrapAD(string(id), g))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO data_keys (subject, key_group, kek_id, wrapped, created_ns) VALUES (?, ?, ?, ?, 0)`, id, g, a.ID(), w); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	v.Close()
	from, to := a, c
	for b.Loop() {
		n, err := Rewrap(ctx, path, from, to, nil)
		if err != nil || n != 2*subjects {
			b.Fatalf("%d keys, %v", n, err)
		}
		from, to = to, from
	}
	b.ReportMetric(float64(2*subjects*b.N)/b.Elapsed().Seconds(), "keys/s")
}

func BenchmarkRewrapCrypto(b *testing.B) {
	b.Run("file", func(b *testing.B) { benchRewrapCrypto(b, fileKEK(b), fileKEK(b)) })
	b.Run("pkcs11", func(b *testing.B) {
		a, c := benchPKCS11KEKs(b)
		benchRewrapCrypto(b, a, c)
	})
}

func benchRewrapCrypto(b *testing.B, a, c KEK) {
	ctx := context.Background()
	h, _, err := datakey.New()
	if err != nil {
		b.Fatal(err)
	}
	ad := wrapAD("0123456789abcdef0123456789abcdef", "identity")
	w, err := datakey.Wrap(ctx, h, a, ad)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		h, err := datakey.Unwrap(ctx, w, a, ad)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := datakey.Wrap(ctx, h, c, ad); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}

// benchPKCS11KEKs returns two AES keys on a new SoftHSM2 token.
func benchPKCS11KEKs(b *testing.B) (KEK, KEK) {
	b.Helper()
	tok := softhsmtest.NewToken(b)
	var keks [2]KEK
	for i, label := range []string{"kek-a", "kek-b"} {
		k, err := kek.OpenPKCS11(context.Background(), kek.PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, KeyLabel: label, Generate: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { k.Close() })
		keks[i] = k
	}
	return keks[0], keks[1]
}
