package sharedvault_test

import (
	"context"
	"crypto/rand"
	"errors"
	"maps"
	"testing"

	"github.com/caledger/caledger/crypto/sharedvault"
	"github.com/caledger/caledger/domain"
)

// The domain's command handlers run unchanged on the shared vault: two nodes, each
// with its own handlers and vault, over one ledger.
func TestDropInForDomainHandlers(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store, _ := openStore(t)
	kr := ringWithEpoch1(t)
	va, vb := newNode(t, store, kr, c), newNode(t, store, kr, c)
	run(t, va)
	run(t, vb)
	ha := &domain.Handlers{Events: store, Vault: va, Now: c.Now, Rand: rand.Reader}
	hb := &domain.Handlers{Events: store, Vault: vb, Now: c.Now, Rand: rand.Reader}
	officer := domain.Actor{ID: "cert:01", Role: "officer"}
	// caughtUp waits until v's Run has seen everything appended so far: the window
	// in which v may still use a key it cached before a tombstone.
	caughtUp := func(v *sharedvault.Vault) {
		head, err := store.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the node catches up", func() bool { return v.Seen() >= head })
	}

	attrs := map[string]string{"common_name": "Ada Example", "email": "ada@example.org"}
	id, err := ha.RegisterSubject(ctx, officer, attrs)
	if err != nil {
		t.Fatal(err)
	}
	if err := ha.CorrectSubject(ctx, officer, id, map[string]string{"serial_number": "19150101-1234"}, domain.GroupNationalID); err != nil {
		t.Fatal(err)
	}
	got, err := hb.ReadSubject(ctx, officer, id, "read", "support ticket 42")
	if err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(attrs)
	want["serial_number"] = "19150101-1234"
	if !maps.Equal(got, want) {
		t.Fatalf("b reads %v, want %v", got, want)
	}

	// Erase one group on a: b no longer returns it once it has seen the tombstone.
	if err := ha.EraseSubject(ctx, officer, id, []string{domain.GroupNationalID}, domain.BasisConsentWithdrawn); err != nil {
		t.Fatal(err)
	}
	caughtUp(vb)
	if got, err = hb.SubjectAttributes(ctx, id); err != nil || !maps.Equal(got, attrs) {
		t.Fatalf("b after the group's erasure: %v, %v; want %v", got, err, attrs)
	}

	// Erase the subject on b: a's handlers refuse it, and a's vault refuses its keys.
	events := readStream(t, store, domain.SubjectStream(id))
	if err := hb.EraseSubject(ctx, officer, id, nil, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	if _, err := ha.SubjectAttributes(ctx, id); !errors.Is(err, domain.ErrGone) {
		t.Fatalf("a reads an erased subject: %v", err)
	}
	caughtUp(va)
	for i := range events {
		e := &events[i]
		if e.Sealed == nil {
			continue
		}
		for _, v := range []*sharedvault.Vault{va, vb} {
			if _, err := v.Open(ctx, e.Sealed, domain.SealedAD(e)); !errors.Is(err, sharedvault.ErrShredded) {
				t.Fatalf("event %d (%s) after the erasure: %v", e.Version, e.Type, err)
			}
		}
	}
	st, err := va.ErasureStatus(ctx, id)
	if err != nil || st.Complete() || len(st.PendingEpochs) != 1 {
		t.Fatalf("erasure status: %+v, %v", st, err)
	}
}

func readStream(t testing.TB, store sharedvault.Store, stream string) []domain.Event {
	t.Helper()
	var out []domain.Event
	for e, err := range store.ReadStream(context.Background(), stream, 1) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}
