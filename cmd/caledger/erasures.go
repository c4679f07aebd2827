package main

import (
	"context"
	"fmt"
	"iter"
	"path/filepath"

	"github.com/caledger/caledger/domain"
)

// erasuresFile keeps how far completeErasures has checked the ledger. It is
// rebuildable: without it the next start checks the whole ledger.
const erasuresFile = "views/erasures.json"

// erasuresCheckpoint is erasuresFile's content.
type erasuresCheckpoint struct {
	// Next is the ledger position the next check starts at.
	Next uint64 `json:"next"`
	// Last is the id of the event at Next-1, which tells this ledger from
	// another one put in its place.
	Last domain.EventID `json:"last"`
}

// completeErasures destroys the keys of every erasure the ledger records from
// the checkpoint on that the vault does not hold yet, then moves the
// checkpoint past the last event read. An erasure's keys are destroyed right
// after its record; a process killed in between, a vault closed by a shutdown
// that timed out, or a vault failure ("shred-pending") leaves them until the
// erasure is repeated or this runs, at the next start. It returns the
// erasures read and, for the embedded vault, how many of them it completed
// (the shared vault's Shred passes over a subject already erased, and is not
// counted).
func (n *node) completeErasures(ctx context.Context) (found, completed int, err error) {
	file := jsonFile[erasuresCheckpoint]{path: filepath.Join(n.dataDir, erasuresFile)}
	// A checkpoint that cannot be used costs a read of the whole ledger,
	// never a skipped erasure.
	cp, err := file.Load(ctx)
	if err != nil {
		n.logger.Warn("the erasures checkpoint does not read; the whole ledger is checked", "file", erasuresFile, "err", err)
	}
	head, err := n.store.Head(ctx)
	if err != nil {
		return 0, 0, err
	}
	// A ledger shorter than the checkpoint, or whose event at Next-1 is
	// another, is another ledger (a restore into this directory): all of it
	// is checked.
	if cp.Next < 1 || cp.Next > head+1 {
		cp.Next = 1
	}
	if cp.Next > 1 {
		same := false
		for e, err := range n.store.ReadAll(ctx, cp.Next-1) {
			if err != nil {
				return 0, 0, err
			}
			same = e.Position == cp.Next-1 && e.ID == cp.Last
			break
		}
		if !same {
			cp.Next = 1
		}
	}
	vault, owed := n.vault, (*owedShreds)(nil)
	if n.embedded != nil {
		owed = &owedShreds{Vault: n.embedded}
		vault = owed
	}
	next, last := cp.Next, cp.Last
	var events iter.Seq2[domain.Event, error] = func(yield func(domain.Event, error) bool) {
		for e, err := range n.store.ReadAll(ctx, cp.Next) {
			if err == nil {
				next, last = e.Position+1, e.ID
			}
			if !yield(e, err) {
				return
			}
		}
	}
	found, err = domain.ReapplyErasures(ctx, events, vault)
	if owed != nil {
		completed = owed.shredded
	}
	if err != nil {
		return found, completed, fmt.Errorf("complete the recorded erasures: %w", err)
	}
	if next == cp.Next {
		return found, completed, nil
	}
	return found, completed, file.Save(ctx, erasuresCheckpoint{Next: next, Last: last})
}

// runErasureCompletion runs completeErasures once, retrying it with backoff
// until it succeeds or ctx ends.
func (n *node) runErasureCompletion(ctx context.Context) {
	ctx, done := context.WithCancel(ctx)
	defer done()
	n.supervise(ctx, "completing the recorded erasures failed; retrying", func(ctx context.Context) error {
		found, completed, err := n.completeErasures(ctx)
		if err != nil {
			return err
		}
		if completed > 0 {
			n.logger.Warn("erasures whose keys were not yet destroyed are complete now", "completed", completed, "erasures_read", found)
		}
		done()
		return nil
	}, nil)
}
