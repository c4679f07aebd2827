package domain

import (
	"context"
	"fmt"
	"iter"
)

// ReapplyErasures destroys again, in vault, the data keys of every erasure that
// events (a whole ledger, in order) records, and returns how many it found.
//
// A key vault restored from a backup holds every key that was not yet shredded
// when the backup was taken; an erasure recorded in the ledger after that
// would come undone without this. It also completes erasures whose key
// destruction failed ("shred-pending"). Shredding is idempotent, so running it
// again, or over erasures the vault already holds, changes nothing.
//
// A subject.erased event that names another subject than its stream's, or
// whose public part does not read, stops it with an error: a ledger like that
// is corrupt, and no erasure is guessed from it.
func ReapplyErasures(ctx context.Context, events iter.Seq2[Event, error], vault Sealer) (int, error) {
	n := 0
	for e, err := range events {
		if err != nil {
			return n, err
		}
		if e.Type != TypeSubjectErased {
			continue
		}
		var p SubjectErased
		if err := UnmarshalPublic(&e, &p); err != nil {
			return n, err
		}
		if !p.SubjectID.Valid() || e.Stream != SubjectStream(p.SubjectID) {
			// Neither the stream nor the subject id is quoted: a ledger
			// that breaks this rule may hold anything there.
			return n, fmt.Errorf("event %d: a %s event names another subject than its stream's", e.Position, TypeSubjectErased)
		}
		for _, g := range p.KeyGroups {
			if !KnownKeyGroup(g) {
				return n, fmt.Errorf("event %d: a %s event names an unknown key group", e.Position, e.Type)
			}
		}
		if err := vault.Shred(ctx, p.SubjectID, p.KeyGroups...); err != nil {
			return n, fmt.Errorf("event %d: destroy the keys of subject %s: %w", e.Position, p.SubjectID, err)
		}
		n++
	}
	return n, nil
}
