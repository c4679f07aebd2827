package sharedvault_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/sharedvault"
	"github.com/caledger/caledger/domain"
)

func TestErasureStatusBeforeRotation(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store, _ := openStore(t)
	v := newNode(t, store, ringWithEpoch1(t), c)

	live, gone, never := newSubject(t), newSubject(t), newSubject(t)
	seal(t, v, live, "g", []byte("x"), nil)
	seal(t, v, gone, domain.GroupIdentity, []byte("x"), nil)
	seal(t, v, gone, domain.GroupNationalID, []byte("x"), nil)

	st, err := v.ErasureStatus(ctx, live)
	if err != nil || st.Complete() || !st.Recorded.IsZero() || len(st.Groups) != 0 {
		t.Fatalf("status of a subject with nothing shredded: %+v, %v", st, err)
	}

	at := c.Advance(time.Hour)
	if err := v.Shred(ctx, gone); err != nil {
		t.Fatal(err)
	}
	st, err = v.ErasureStatus(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Recorded.Equal(at) || st.Complete() || !st.CompleteAt.IsZero() || !slices.Equal(st.PendingEpochs, []uint32{1}) || !slices.Equal(st.Groups, []string{"*"}) {
		t.Fatalf("status after Shred, before any rotation: %+v; want recorded at %v, pending epoch 1, not complete", st, at)
	}

	// A subject shredded before it had any key: there is nothing to destroy.
	at = c.Advance(time.Hour)
	if err := v.Shred(ctx, never, domain.GroupNationalID); err != nil {
		t.Fatal(err)
	}
	st, err = v.ErasureStatus(ctx, never)
	if err != nil || !st.Complete() || !st.CompleteAt.Equal(at) || len(st.PendingEpochs) != 0 {
		t.Fatalf("status of a subject shredded with no key: %+v, %v", st, err)
	}
}

// The whole lifecycle with File KEKs: shred, rotate, retire, destroy. Survivors stay
// readable on every node; the shredded key's wrapped bytes stay in the ledger's
// files (it is append-only) but nothing can unwrap them any more.
func TestRotateRetireDestroy(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store, ledgerDir := openStore(t)
	kr := newRing()
	k1, path1 := newFileKEK(t)
	kr.set(1, k1)
	a, b := newNode(t, store, kr, c), newNode(t, store, kr, c)
	run(t, b)

	survivor, gone, partial := newSubject(t), newSubject(t), newSubject(t)
	ad := []byte("ad")
	var live []domain.Sealed
	live = append(live, seal(t, a, survivor, domain.GroupIdentity, []byte("survivor id"), ad))
	live = append(live, seal(t, b, survivor, domain.GroupNationalID, []byte("survivor nid"), ad))
	live = append(live, seal(t, a, partial, domain.GroupIdentity, []byte("partial id"), ad))
	goneSealed := seal(t, a, gone, domain.GroupIdentity, []byte("gone id"), ad)
	partialNID := seal(t, b, partial, domain.GroupNationalID, []byte("partial nid"), ad)
	plain := map[uint32]string{}
	for _, s := range live {
		got, err := a.Open(ctx, &s, ad)
		if err != nil {
			t.Fatal(err)
		}
		plain[s.KeyID] = string(got)
	}

	shredAt := c.Advance(time.Minute)
	if err := a.Shred(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := b.Shred(ctx, partial, domain.GroupNationalID); err != nil {
		t.Fatal(err)
	}
	goneKey := keyEvents(t, store, gone)[0]
	partialKey := keyEvents(t, store, partial)[1]
	if partialKey.Group != domain.GroupNationalID {
		t.Fatalf("partial's second key is %s", partialKey.Group)
	}
	// Until epoch 1's KEK is destroyed, anyone holding it and a copy of the ledger
	// recovers the shredded key: the erasure is recorded, not complete.
	if err := sharedvault.UnwrapWith(ctx, k1, goneKey.Wrapped, gone, domain.GroupIdentity, 1); err != nil {
		t.Fatalf("epoch 1's KEK does not unwrap the shredded key's copy before destruction: %v", err)
	}

	// Rotate to epoch 2: survivors are re-wrapped, shredded keys are not.
	k2, _ := newFileKEK(t)
	kr.set(2, k2)
	c.Advance(time.Minute)
	n, err := a.Rotate(ctx, k2)
	if err != nil || n != 2 {
		t.Fatalf("Rotate: %d, %v", n, err)
	}
	for _, s := range []domain.SubjectID{survivor, partial, gone} {
		for _, k := range keyEvents(t, store, s) {
			t.Logf("subject %s…: %s %s epoch %d", s[:6], k.Type, k.Group, k.Epoch)
		}
	}
	assertWraps(t, store, survivor, domain.GroupIdentity, 1, 2)
	assertWraps(t, store, survivor, domain.GroupNationalID, 1, 2)
	assertWraps(t, store, partial, domain.GroupIdentity, 1, 2)
	assertWraps(t, store, partial, domain.GroupNationalID, 1)
	assertWraps(t, store, gone, domain.GroupIdentity, 1)
	if _, err := a.Rotate(ctx, k1); !errors.Is(err, sharedvault.ErrWrongKEK) {
		t.Fatalf("Rotate back to epoch 1's KEK: %v", err)
	}
	if n, err := a.Rotate(ctx, k2); err != nil || n != 2 {
		t.Fatalf("Rotate again with the current KEK (resume): %d, %v", n, err)
	}
	st, _ := a.ErasureStatus(ctx, gone)
	if st.Complete() || !slices.Equal(st.PendingEpochs, []uint32{1}) {
		t.Fatalf("status after Rotate, before destroying epoch 1: %+v", st)
	}

	// b follows the store: once it has seen the new epoch, its new keys use it.
	head, _ := store.Head(ctx)
	waitFor(t, "b sees the new epoch", func() bool { return b.Seen() >= head })
	fresh := newSubject(t)
	live = append(live, seal(t, b, fresh, "g", []byte("fresh"), ad))
	plain[live[len(live)-1].KeyID] = "fresh"
	assertWraps(t, store, fresh, "g", 2)

	if err := a.DestroyEpoch(ctx, 1); err == nil {
		t.Fatal("DestroyEpoch of an epoch that was not retired succeeded")
	}
	if err := a.RetireEpoch(ctx, 2); err == nil {
		t.Fatal("RetireEpoch of the current epoch succeeded")
	}
	c.Advance(time.Minute)
	if err := a.RetireEpoch(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.RetireEpoch(ctx, 1); err != nil {
		t.Fatalf("RetireEpoch again: %v", err)
	}
	destroyAt := c.Advance(time.Minute)
	if err := b.DestroyEpoch(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := a.DestroyEpoch(ctx, 1); err != nil {
		t.Fatalf("DestroyEpoch again: %v", err)
	}
	eps, err := a.Epochs(ctx)
	if err != nil || len(eps) != 2 || eps[0].Phase != "destroyed" || eps[1].Phase != "current" {
		t.Fatalf("epochs: %+v, %v", eps, err)
	}

	// The erasures are complete, at the destruction's time.
	for _, tc := range []struct {
		s      domain.SubjectID
		groups []string
	}{{gone, []string{"*"}}, {partial, []string{domain.GroupNationalID}}} {
		st, err := a.ErasureStatus(ctx, tc.s)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Complete() || !st.CompleteAt.Equal(destroyAt) || len(st.PendingEpochs) != 0 || !st.Recorded.Equal(shredAt) || !slices.Equal(st.Groups, tc.groups) {
			t.Fatalf("status after destroying epoch 1: %+v; want complete at %v, recorded at %v", st, destroyAt, shredAt)
		}
	}

	// Survivors open everywhere, including on a new node whose keyring no longer has
	// epoch 1 at all.
	kr2 := newRing()
	kr2.set(2, k2)
	cold := newNode(t, store, kr2, c)
	for _, v := range []*sharedvault.Vault{a, b, cold} {
		for i := range live {
			mustOpen(t, v, &live[i], ad, []byte(plain[live[i].KeyID]))
		}
		openFails(t, v, &goneSealed, ad, sharedvault.ErrShredded)
		openFails(t, v, &partialNID, ad, sharedvault.ErrShredded)
	}

	// The shredded keys' wrapped bytes are still in the ledger's files...
	for _, k := range []keyEvent{goneKey, partialKey} {
		if !inFiles(t, ledgerDir, []byte(base64.StdEncoding.EncodeToString(k.Wrapped))) {
			t.Fatal("a shredded key's wrapped bytes are not in the ledger's files; the scan is broken")
		}
	}
	// ...but epoch 1's KEK is gone: its file, and the handle that had it loaded...
	if _, err := os.Stat(path1); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("epoch 1's KEK file: %v", err)
	}
	if _, err := kek.OpenFile(ctx, path1); err == nil {
		t.Fatal("epoch 1's KEK file opens after destruction")
	}
	if _, err := k1.Wrap(ctx, []byte("x"), nil); !errors.Is(err, sharedvault.ErrDestroyed) {
		t.Fatalf("Wrap with epoch 1's destroyed KEK: %v", err)
	}
	for _, k := range []struct {
		e     keyEvent
		s     domain.SubjectID
		group string
	}{{goneKey, gone, domain.GroupIdentity}, {partialKey, partial, domain.GroupNationalID}} {
		if err := sharedvault.UnwrapWith(ctx, k1, k.e.Wrapped, k.s, k.group, 1); err == nil {
			t.Fatal("epoch 1's destroyed KEK still unwraps")
		}
		// ...and no surviving KEK opens them, under any epoch's associated data.
		for _, ep := range []uint32{1, 2} {
			if err := sharedvault.UnwrapWith(ctx, k2, k.e.Wrapped, k.s, k.group, ep); err == nil {
				t.Fatal("epoch 2's KEK unwrapped a key wrapped under epoch 1")
			}
		}
	}
}

// assertWraps checks the epochs that wrapped (subject, group)'s key, in stream order.
func assertWraps(t *testing.T, store sharedvault.Store, s domain.SubjectID, group string, epochs ...uint32) {
	t.Helper()
	var got []uint32
	for _, k := range keyEvents(t, store, s) {
		if k.Group == group {
			got = append(got, k.Epoch)
		}
	}
	if !slices.Equal(got, epochs) {
		t.Fatalf("subject %s group %s wrapped under epochs %v, want %v", s, group, got, epochs)
	}
}

// inFiles reports whether any file in dir holds b.
func inFiles(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, b) {
			return true
		}
	}
	return false
}

// A node that has not heard of the new epoch (no Run) creates a key under the old
// one after it started retiring: the node's fresh check of the epoch stream catches
// it and re-wraps the key under the current epoch before using it, so destroying
// the old KEK loses nothing.
func TestStaleNodeMovesItsKeyOffARetiringEpoch(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	a, stale, stale2 := newNode(t, store, kr, nil), newNode(t, store, kr, nil), newNode(t, store, kr, nil)
	k2, _ := newFileKEK(t)
	kr.set(2, k2)
	if _, err := a.Rotate(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if err := a.RetireEpoch(ctx, 1); err != nil {
		t.Fatal(err)
	}

	s := newSubject(t)
	sealed := seal(t, stale, s, "g", []byte("x"), nil)
	assertWraps(t, store, s, "g", 1, 2)

	if err := a.DestroyEpoch(ctx, 1); err != nil {
		t.Fatal(err)
	}
	kr.drop(1)
	mustOpen(t, newNode(t, store, kr, nil), &sealed, nil, []byte("x"))

	// A copy under epoch 1 existed, but epoch 1 is destroyed: only epoch 2 pends.
	if err := a.Shred(ctx, s); err != nil {
		t.Fatal(err)
	}
	st, err := a.ErasureStatus(ctx, s)
	if err != nil || st.Complete() || !slices.Equal(st.PendingEpochs, []uint32{2}) {
		t.Fatalf("status: %+v, %v; want epoch 2 pending", st, err)
	}

	// A node that missed even the destruction still seals: its wrap under the
	// destroyed KEK fails, it reads the epochs, and wraps under epoch 2.
	s2 := newSubject(t)
	sealed = seal(t, stale2, s2, "g", []byte("y"), nil)
	assertWraps(t, store, s2, "g", 2)
	mustOpen(t, a, &sealed, nil, []byte("y"))
}

// A key whose only wrap is under a retired epoch is an orphan: a node stopped
// between creating it under an epoch that had started retiring and moving it off.
// Nobody ever used it, so the next Seal replaces it.
func TestOrphanKeyIsReplaced(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	v := newNode(t, store, kr, nil)
	k2, _ := newFileKEK(t)
	kr.set(2, k2)
	if _, err := v.Rotate(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if err := v.RetireEpoch(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s := newSubject(t)
	orphan := jsonKey(t, keyEvent{Group: "g", Epoch: 1, KeyID: 7, Wrapped: []byte("never unwrapped")})
	ev := domain.Event{ID: domain.EventID{7}, Type: sharedvault.TypeKeyCreated, Schema: 1, Time: time.Now(), Public: orphan}
	if _, err := store.Append(ctx, sharedvault.KeyStream(s), domain.NoStream, ev); err != nil {
		t.Fatal(err)
	}
	openFails(t, v, &domain.Sealed{SubjectID: s, KeyGroup: "g", KeyID: 7, Ciphertext: []byte{1, 0, 0, 0, 7, 0}}, nil, sharedvault.ErrEpochRetired)
	sealed := seal(t, v, s, "g", []byte("x"), nil)
	mustOpen(t, v, &sealed, nil, []byte("x"))
	ks := keyEvents(t, store, s)
	if len(ks) != 2 || ks[1].Type != sharedvault.TypeKeyCreated || ks[1].Epoch != 2 || ks[1].KeyID == 7 {
		t.Fatalf("key events after replacing the orphan: %+v", ks)
	}
}

// Shreds racing a Rotate: the sweep re-wraps at an exact stream version, so it never
// puts a copy of a key under the new epoch after the key's tombstone (reading such
// a stream fails with ErrCorrupt), and every survivor ends up under the new epoch.
func TestShredsDuringRotate(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	a, b := newNode(t, store, kr, nil), newNode(t, store, kr, nil)
	const n = 40
	subjects := make([]domain.SubjectID, n)
	sealed := make([]domain.Sealed, n)
	for i := range subjects {
		subjects[i] = newSubject(t)
		sealed[i] = seal(t, a, subjects[i], "g", []byte{byte(i)}, nil)
	}
	k2, _ := newFileKEK(t)
	kr.set(2, k2)
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < n; i += 2 {
			if err := b.Shred(ctx, subjects[i]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if _, err := a.Rotate(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Shreds that landed after the sweep passed their subject leave it under 2 too;
	// a second sweep (RetireEpoch's) finds nothing else to do for them.
	if err := a.RetireEpoch(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for i, s := range subjects {
		st, err := a.ErasureStatus(ctx, s)
		if err != nil {
			t.Fatalf("subject %d: %v", i, err)
		}
		if i%2 == 0 {
			openFails(t, a, &sealed[i], nil, sharedvault.ErrShredded)
			if st.Recorded.IsZero() || st.Complete() || len(st.PendingEpochs) == 0 || st.PendingEpochs[0] != 1 {
				t.Fatalf("subject %d: status %+v", i, st)
			}
			continue
		}
		mustOpen(t, a, &sealed[i], nil, []byte{byte(i)})
		assertWraps(t, store, s, "g", 1, 2)
	}
}
