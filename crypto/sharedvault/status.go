package sharedvault

import (
	"context"
	"slices"
	"time"

	"github.com/caledger/caledger/domain"
)

// Status is how far the erasure of a subject's data keys has gone. The zero Status
// means nothing of the subject was shredded.
type Status struct {
	// Groups are the shredded key groups, in the order they were shredded; "*" is
	// every group of the subject.
	Groups []string
	// Recorded is when the latest of those groups' tombstones became durable: from
	// then on no node uses the keys once it has seen the tombstone.
	Recorded time.Time
	// PendingEpochs are the epochs whose KEK wrapped a copy of a shredded key and is
	// not yet destroyed. Until it is, the store, its replicas and its backups hold a
	// copy that the KEK can unwrap.
	PendingEpochs []uint32
	// CompleteAt is when the last KEK that wrapped a copy of a shredded key was
	// destroyed (Recorded, if there was never a key to destroy); zero while any
	// epoch is pending. Only then is the erasure complete.
	CompleteAt time.Time
}

// Complete reports whether every copy of the shredded keys is useless.
func (s Status) Complete() bool { return !s.CompleteAt.IsZero() }

// ErasureStatus reads subject's key stream and the epoch stream and says how far the
// erasure of its shredded keys has gone. The times are those of the vault events
// that record the steps.
func (v *Vault) ErasureStatus(ctx context.Context, subject domain.SubjectID) (Status, error) {
	var s Status
	if !validSubject(subject) {
		return s, errBadSubject
	}
	if err := v.usable(ctx); err != nil {
		return s, err
	}
	st, err := v.readKeys(ctx, subject)
	if err != nil {
		return s, err
	}
	if len(st.tombstones) == 0 {
		return s, nil
	}
	if err := v.refreshEpochs(ctx); err != nil {
		return s, err
	}
	for _, t := range st.tombstones {
		s.Groups = append(s.Groups, t.group)
		if t.at.After(s.Recorded) {
			s.Recorded = t.at
		}
	}
	var wrappedUnder []uint32
	for _, g := range st.groups {
		if g.shredded.IsZero() && st.all.IsZero() {
			continue
		}
		for _, n := range g.epochs {
			if !slices.Contains(wrappedUnder, n) {
				wrappedUnder = append(wrappedUnder, n)
			}
		}
	}
	slices.Sort(wrappedUnder)
	complete := s.Recorded
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, n := range wrappedUnder {
		info, _ := v.ep.info(n)
		if info.destroyed.IsZero() {
			s.PendingEpochs = append(s.PendingEpochs, n)
		} else if info.destroyed.After(complete) {
			complete = info.destroyed
		}
	}
	if len(s.PendingEpochs) == 0 {
		s.CompleteAt = complete
	}
	return s, nil
}
