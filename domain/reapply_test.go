package domain_test

import (
	"context"
	"errors"
	"testing"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/storetest"
)

// TestReapplyErasures: erasures recorded while the vault failed to destroy the
// keys (as after a vault is restored from an older backup) are completed, and
// nothing else is touched.
func TestReapplyErasures(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	whole := r.register(t)
	partial := r.register(t)
	if err := r.h.CorrectSubject(ctx, officer, partial, map[string]string{"serial_number": "19121210-1234"}, domain.GroupNationalID); err != nil {
		t.Fatal(err)
	}
	kept := r.register(t)
	vault := &gatedShred{Sealer: r.vault}
	vault.fail.Store(true)
	r.h.Vault = vault
	wantErr(t, r.h.EraseSubject(ctx, compliance, whole, nil, domain.BasisErasureRequest), domain.ErrUnavailable, "shred-pending")
	wantErr(t, r.h.EraseSubject(ctx, compliance, partial, []string{domain.GroupNationalID}, domain.BasisErasureRequest), domain.ErrUnavailable, "shred-pending")

	// opens reports, for each sealed part of the subject's stream, whether it
	// still opens, keyed by key group.
	opens := func(id domain.SubjectID) map[string]bool {
		got := map[string]bool{}
		for e, err := range r.store.ReadStream(ctx, domain.SubjectStream(id), 1) {
			if err != nil {
				t.Fatal(err)
			}
			if e.Sealed == nil {
				continue
			}
			_, err := r.vault.Open(ctx, e.Sealed, domain.SealedAD(&e))
			if err != nil && !errors.Is(err, domain.ErrShredded) {
				t.Fatal(err)
			}
			got[e.Sealed.KeyGroup] = err == nil
		}
		return got
	}
	if o := opens(whole); !o[domain.GroupIdentity] {
		t.Fatal("the failed shred destroyed the key anyway; the test would prove nothing")
	}
	if o := opens(partial); !o[domain.GroupNationalID] {
		t.Fatal("the national id does not open before ReapplyErasures; the test would prove nothing")
	}

	n, err := domain.ReapplyErasures(ctx, r.store.ReadAll(ctx, 1), r.vault)
	if err != nil || n != 2 {
		t.Fatalf("ReapplyErasures: %d, %v; want 2 erasures", n, err)
	}
	if o := opens(whole); o[domain.GroupIdentity] {
		t.Error("the erased subject's identity still opens")
	}
	if o := opens(partial); o[domain.GroupNationalID] || !o[domain.GroupIdentity] {
		t.Errorf("after erasing the national id alone: %v, want only identity to open", o)
	}
	if o := opens(kept); !o[domain.GroupIdentity] {
		t.Error("a subject never erased lost its key")
	}
	// Again: the same erasures, and the same keys open.
	if n, err := domain.ReapplyErasures(ctx, r.store.ReadAll(ctx, 1), r.vault); err != nil || n != 2 {
		t.Fatalf("ReapplyErasures again: %d, %v", n, err)
	}
	if o := opens(whole); o[domain.GroupIdentity] {
		t.Error("after a second ReapplyErasures the erased subject's identity opens")
	}
	if o := opens(partial); o[domain.GroupNationalID] || !o[domain.GroupIdentity] {
		t.Errorf("after a second ReapplyErasures: %v, want only identity to open", o)
	}
	if o := opens(kept); !o[domain.GroupIdentity] {
		t.Error("a second ReapplyErasures took the key of a subject never erased")
	}

	// An erasure filed in another subject's stream is refused, and that
	// subject's key kept.
	pl, err := domain.MarshalPublic(domain.SubjectErased{SubjectID: kept, Basis: domain.BasisErasureRequest})
	if err != nil {
		t.Fatal(err)
	}
	e := storetest.NewEvent(t, domain.TypeSubjectErased, pl)
	if _, err := r.store.Append(ctx, domain.SubjectStream(whole), domain.Any, e); err != nil {
		t.Fatal(err)
	}
	if _, err := domain.ReapplyErasures(ctx, r.store.ReadAll(ctx, 1), r.vault); err == nil {
		t.Error("an erasure in another subject's stream was applied")
	}
	if o := opens(kept); !o[domain.GroupIdentity] {
		t.Error("the misfiled erasure destroyed another subject's key")
	}
}
