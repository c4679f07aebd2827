package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// failingShred is a vault whose key destruction fails, as a process killed
// between an erasure's record and its key destruction would leave it.
type failingShred struct{ domain.Sealer }

func (failingShred) Shred(context.Context, domain.SubjectID, ...string) error {
	return errors.New("killed")
}

// TestCompleteErasures: an erasure recorded without its key destruction is
// completed by completeErasures (serve runs it at start), which then checks
// only the ledger after its checkpoint, and all of it again when the
// checkpoint is missing or belongs to a longer ledger.
func TestCompleteErasures(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n, err := openNodeFor(ctx, config{Store: "sqlite"}, dir, slog.New(slog.DiscardHandler), noEnv, true)
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	officer := domain.Actor{ID: "cert:0a", Role: "officer"}
	compliance := domain.Actor{ID: "cert:0b", Role: "compliance"}
	register := func() domain.SubjectID {
		t.Helper()
		id, err := n.handlers.RegisterSubject(ctx, officer, map[string]string{"common_name": "Ada Lovelace"})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	done, pending := register(), register()
	if err := n.handlers.EraseSubject(ctx, compliance, done, nil, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	killed := &domain.Handlers{Events: n.store, Vault: failingShred{n.vault}, Now: time.Now, Rand: rand.Reader}
	var de *domain.Error
	if err := killed.EraseSubject(ctx, compliance, pending, nil, domain.BasisErasureRequest); !errors.As(err, &de) || de.Code != "shred-pending" {
		t.Fatalf("erasure with a failing vault: %v", err)
	}
	state := func(id domain.SubjectID) string {
		t.Helper()
		s, _, _, err := n.erasureState()(ctx, id, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := state(pending); got != "shred-pending" {
		t.Fatalf("before: %s", got)
	}

	found, completed, err := n.completeErasures(ctx)
	if err != nil || found != 2 || completed != 1 {
		t.Fatalf("completeErasures = %d, %d, %v; want 2 erasures read, 1 completed", found, completed, err)
	}
	for _, id := range []domain.SubjectID{done, pending} {
		if got := state(id); got != "keys-destroyed" {
			t.Errorf("after: %s", got)
		}
	}
	if _, err := n.handlers.ReadSubject(ctx, officer, pending, "read", "check"); !errors.Is(err, domain.ErrGone) {
		t.Errorf("the completed erasure's subject reads: %v", err)
	}

	head, err := n.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, erasuresFile)
	var cp erasuresCheckpoint
	if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &cp) != nil || cp.Next != head+1 {
		t.Fatalf("checkpoint %+v (%v), want next %d", cp, err, head+1)
	}
	if found, completed, err := n.completeErasures(ctx); err != nil || found != 0 || completed != 0 {
		t.Fatalf("again = %d, %d, %v; want nothing read after the checkpoint", found, completed, err)
	}
	for name, content := range map[string]string{
		"a checkpoint past the ledger's end":             `{"next": 1000000}`,
		"a checkpoint that does not read":                `{`,
		"a checkpoint naming another event at its place": fmt.Sprintf(`{"next": %d, "last": "00000000-0000-4000-8000-000000000000"}`, head+1),
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if found, completed, err := n.completeErasures(ctx); err != nil || found != 2 || completed != 0 {
			t.Errorf("%s: %d, %d, %v; want the 2 erasures read again, none owed", name, found, completed, err)
		}
	}
}
