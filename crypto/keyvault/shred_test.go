package keyvault_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/domain"
)

func TestShredSubject(t *testing.T) {
	ctx := context.Background()
	k := newKEK(t)
	dir := t.TempDir()
	v := openVault(t, dir, k)
	victim, other := newSubject(t), newSubject(t)
	ad := []byte("ad")
	vp := seal(t, v, victim, "profile", []byte("victim profile"), ad)
	vn := seal(t, v, victim, "nid", []byte("victim nid"), ad)
	op := seal(t, v, other, "profile", []byte("other profile"), ad)
	// Warm the cache, so the test also shows that Shred evicts.
	mustOpen(t, v, &vp, ad, []byte("victim profile"))

	if err := v.Shred(ctx, victim); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, v *keyvault.Vault) {
		openFails(t, v, &vp, ad, keyvault.ErrShredded)
		openFails(t, v, &vn, ad, keyvault.ErrShredded)
		sealFails(t, v, victim, "profile", keyvault.ErrShredded)
		// A whole-subject shred also covers groups that had no key yet.
		sealFails(t, v, victim, "consent", keyvault.ErrShredded)
		mustOpen(t, v, &op, ad, []byte("other profile"))
		seal(t, v, other, "nid", []byte("x"), nil)
	}
	check(t, v)
	if err := v.Shred(ctx, victim); err != nil {
		t.Fatalf("second Shred: %v", err)
	}
	if err := v.Shred(ctx, victim, "profile"); err != nil {
		t.Fatalf("group Shred after whole-subject Shred: %v", err)
	}
	check(t, v)

	v.Close()
	t.Run("after reopen", func(t *testing.T) { check(t, openVault(t, dir, k)) })
}

func TestShredGroup(t *testing.T) {
	ctx := context.Background()
	k := newKEK(t)
	dir := t.TempDir()
	v := openVault(t, dir, k)
	s := newSubject(t)
	nid := seal(t, v, s, "nid", []byte("national id"), nil)
	profile := seal(t, v, s, "profile", []byte("profile"), nil)
	consent := seal(t, v, s, "consent", []byte("consent"), nil)

	if err := v.Shred(ctx, s, "nid", "consent"); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, v *keyvault.Vault) {
		openFails(t, v, &nid, nil, keyvault.ErrShredded)
		openFails(t, v, &consent, nil, keyvault.ErrShredded)
		sealFails(t, v, s, "nid", keyvault.ErrShredded)
		mustOpen(t, v, &profile, nil, []byte("profile"))
		again := seal(t, v, s, "profile", []byte("profile 2"), nil)
		if again.KeyID != profile.KeyID {
			t.Fatal("the surviving group's key changed")
		}
		seal(t, v, s, "new-group", []byte("x"), nil)
	}
	check(t, v)
	v.Close()
	t.Run("after reopen", func(t *testing.T) { check(t, openVault(t, dir, k)) })

	t.Run("then whole subject", func(t *testing.T) {
		v := openVault(t, dir, k)
		if err := v.Shred(ctx, s); err != nil {
			t.Fatal(err)
		}
		openFails(t, v, &profile, nil, keyvault.ErrShredded)
		sealFails(t, v, s, "new-group", keyvault.ErrShredded)
	})
}

func TestShredUnknownSubject(t *testing.T) {
	ctx := context.Background()
	v := openVault(t, t.TempDir(), newKEK(t))
	s := newSubject(t)
	if err := v.Shred(ctx, s); err != nil {
		t.Fatal(err)
	}
	sealFails(t, v, s, "profile", keyvault.ErrShredded)
	forged := domain.Sealed{SubjectID: s, KeyGroup: "profile", KeyID: 7, Ciphertext: []byte{1, 0, 0, 0, 7, 1, 2, 3}}
	openFails(t, v, &forged, nil, keyvault.ErrShredded)

	g := newSubject(t)
	if err := v.Shred(ctx, g, "nid"); err != nil {
		t.Fatal(err)
	}
	sealFails(t, v, g, "nid", keyvault.ErrShredded)
	seal(t, v, g, "profile", []byte("x"), nil)
}

// Shred must not disturb work on other subjects, and once it returns no goroutine
// may still seal or open under the shredded key.
func TestShredConcurrent(t *testing.T) {
	ctx := context.Background()
	v := openVault(t, t.TempDir(), newKEK(t))
	victims := make([]domain.SubjectID, 10)
	sealed := make([]domain.Sealed, len(victims))
	for i := range victims {
		victims[i] = newSubject(t)
		sealed[i] = seal(t, v, victims[i], "g", []byte("victim"), nil)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			s := newSubject(t)
			for r := 0; ; r++ {
				select {
				case <-stop:
					return
				default:
				}
				pt := fmt.Appendf(nil, "%d/%d", w, r)
				sl, err := v.Seal(ctx, s, "g", pt, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := v.Open(ctx, &sl, nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i, s := range victims {
		// Keep the victim's key hot in the cache right up to the Shred.
		mustOpen(t, v, &sealed[i], nil, []byte("victim"))
		if err := v.Shred(ctx, s); err != nil {
			t.Error(err)
		}
		openFails(t, v, &sealed[i], nil, keyvault.ErrShredded)
	}
	close(stop)
	wg.Wait()
}

// TestErasureStatus checks what the vault reports of an erasure, including a
// Shred whose WAL checkpoint could not complete because another connection held
// a read snapshot: the status says the bytes may remain until a Shred succeeds.
func TestErasureStatus(t *testing.T) {
	ctx := context.Background()
	k := newKEK(t)
	dir := t.TempDir()
	v := openVault(t, dir, k)
	s, other := newSubject(t), newSubject(t)
	seal(t, v, s, "nid", []byte("national id"), nil)
	seal(t, v, s, "profile", []byte("profile"), nil)
	seal(t, v, other, "profile", []byte("other"), nil)

	status := func(id domain.SubjectID) keyvault.ErasureStatus {
		t.Helper()
		st, err := v.ErasureStatus(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(st.Groups)
		return st
	}
	if st := status(s); len(st.Groups) != 0 || st.CheckpointPending {
		t.Fatalf("before any shred: %+v", st)
	}
	if err := v.Shred(ctx, s, "nid"); err != nil {
		t.Fatal(err)
	}
	if st := status(s); !slices.Equal(st.Groups, []string{"nid"}) || st.CheckpointPending {
		t.Fatalf("after shredding nid: %+v", st)
	}

	// A reader on another connection pins the WAL: the checkpoint cannot
	// truncate it, and Shred gives up after its few short attempts.
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "vault.db")+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM data_keys").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := v.Shred(ctx, s); !errors.Is(err, keyvault.ErrCheckpoint) {
		t.Fatalf("Shred while a reader pinned the WAL: %v", err)
	}
	st := status(s)
	if !slices.Equal(st.Groups, []string{"*", "nid"}) || !st.CheckpointPending {
		t.Fatalf("after a Shred whose checkpoint failed: %+v", st)
	}
	if st := status(other); len(st.Groups) != 0 || !st.CheckpointPending {
		t.Fatalf("another subject while the checkpoint is owed: %+v", st)
	}

	// Open checkpoints too (a process killed between a Shred's deletion and
	// its checkpoint leaves the bytes in the WAL); with the reader still
	// there, it cannot.
	v.Close()
	now := epoch
	v = openVault(t, dir, k, keyvault.WithClock(func() time.Time { return now }))
	if st := status(s); !st.CheckpointPending {
		t.Fatalf("reopened while a reader pins the WAL: %+v", st)
	}
	// A due retry fails while the reader stays, and puts the next one off.
	now = now.Add(time.Second)
	if st := status(s); !st.CheckpointPending {
		t.Fatalf("a retry while a reader pins the WAL: %+v", st)
	}
	// Once the reader is gone, ErasureStatus's own retry completes it, but
	// not before a second has passed since the last attempt: a poll must not
	// take the vault's exclusive lock every time.
	tx.Rollback()
	now = now.Add(time.Second - time.Nanosecond)
	if st := status(s); !st.CheckpointPending {
		t.Fatalf("retried less than a second after the last attempt: %+v", st)
	}
	now = now.Add(time.Nanosecond)
	if st := status(s); st.CheckpointPending {
		t.Fatalf("after the reader left: %+v", st)
	}
	if fi, err := os.Stat(filepath.Join(dir, "vault.db-wal")); err == nil && fi.Size() != 0 {
		t.Fatalf("the WAL holds %d bytes after the checkpoint", fi.Size())
	}
	if err := v.Shred(ctx, s); err != nil {
		t.Fatal(err)
	}
	if st := status(s); !slices.Equal(st.Groups, []string{"*", "nid"}) || st.CheckpointPending {
		t.Fatalf("after a Shred that succeeded: %+v", st)
	}
	if _, err := v.ErasureStatus(ctx, "not a subject id"); err == nil {
		t.Fatal("ErasureStatus accepted an invalid subject id")
	}
}
