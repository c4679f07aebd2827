package sharedvault

import (
	"context"
	"errors"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/caledger/caledger/domain"
)

// refreshEpochs reads what this node has not yet seen of the epoch stream.
func (v *Vault) refreshEpochs(ctx context.Context) error {
	v.mu.Lock()
	from := v.ep.version + 1
	v.mu.Unlock()
	var evs []domain.Event
	for e, err := range v.store.ReadStream(ctx, epochStream, from) {
		if err != nil {
			return fmt.Errorf("sharedvault: read epochs: %w", err)
		}
		evs = append(evs, e)
	}
	if len(evs) == 0 {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := range evs {
		if err := v.ep.apply(&evs[i]); err != nil {
			return err
		}
	}
	v.dropRetiredLocked()
	return nil
}

// dropRetiredLocked forgets the KEKs of retired epochs: nothing may unwrap with
// them any more. The keyring still owns (and closes) them.
func (v *Vault) dropRetiredLocked() {
	for n := range v.keks {
		if v.ep.phase(n) >= phaseRetired {
			delete(v.keks, n)
		}
	}
}

func (v *Vault) current() uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ep.current()
}

func (v *Vault) phase(n uint32) phase {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ep.phase(n)
}

// kekFor returns epoch n's KEK, asking the keyring the first time and checking its
// ID against the one recorded when n started.
func (v *Vault) kekFor(ctx context.Context, n uint32) (KEK, error) {
	if v.phase(n) == phaseUnknown {
		if err := v.refreshEpochs(ctx); err != nil {
			return nil, err
		}
	}
	v.mu.Lock()
	ph, k := v.ep.phase(n), v.keks[n]
	info, _ := v.ep.info(n)
	v.mu.Unlock()
	switch {
	case ph == phaseUnknown:
		return nil, fmt.Errorf("%w: epoch %d never started", ErrCorrupt, n)
	case ph >= phaseRetired:
		return nil, fmt.Errorf("epoch %d: %w", n, ErrEpochRetired)
	case k != nil:
		return k, nil
	}
	k, err := v.keyring.KEK(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("sharedvault: KEK of epoch %d: %w", n, err)
	}
	if k.ID() != info.kekID {
		return nil, fmt.Errorf("%w: the keyring gives %q for epoch %d, which started with %q", ErrWrongKEK, k.ID(), n, info.kekID)
	}
	v.mu.Lock()
	if v.ep.phase(n) < phaseRetired {
		v.keks[n] = k
	}
	v.mu.Unlock()
	return k, nil
}

// Epoch describes a KEK epoch.
type Epoch struct {
	N     uint32
	KEKID string
	// Phase is "current", "superseded", "retiring", "retired" or "destroyed".
	Phase string
}

// Epochs returns the epochs this node knows of, oldest first, after reading the
// epoch stream.
func (v *Vault) Epochs(ctx context.Context) ([]Epoch, error) {
	if err := v.refreshEpochs(ctx); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]Epoch, len(v.ep.list))
	for i, info := range v.ep.list {
		n := uint32(i + 1)
		out[i] = Epoch{N: n, KEKID: info.kekID, Phase: v.ep.phase(n).String()}
	}
	return out, nil
}

// Rotate starts a new epoch with kek and re-wraps every surviving data key under it,
// appending one vault.key-rewrapped event per key; shredded keys are never
// re-wrapped. It returns the new epoch's number. From the moment the epoch is
// recorded every node wraps new keys under it, asking its keyring for the KEK: make
// the KEK reachable from every node first (for PKCS#11: generate the key labelled
// EpochKeyLabel(n) on the shared HSM).
//
// Rotate reads the whole ledger to find the key streams. If it fails after the epoch
// was recorded, call it again with the same KEK: it resumes instead of starting
// another epoch. Rotate does not retire the old epoch; see RetireEpoch.
func (v *Vault) Rotate(ctx context.Context, kek KEK) (uint32, error) {
	if err := v.usable(ctx); err != nil {
		return 0, err
	}
	if kek == nil || kek.ID() == "" {
		return 0, errors.New("sharedvault: Rotate needs a KEK with a non-empty ID")
	}
	n, err := v.startEpoch(ctx, kek)
	if err != nil {
		return 0, err
	}
	moved, err := v.sweep(ctx)
	if err != nil {
		return n, fmt.Errorf("sharedvault: epoch %d started, but re-wrapping stopped after %d keys (call Rotate again with the same KEK): %w", n, moved, err)
	}
	v.log.Info("sharedvault: rotated", "epoch", n, "rewrapped", moved)
	return n, nil
}

func (v *Vault) startEpoch(ctx context.Context, kek KEK) (uint32, error) {
	for range maxAttempts {
		if err := v.refreshEpochs(ctx); err != nil {
			return 0, err
		}
		v.mu.Lock()
		cur, version := v.ep.current(), v.ep.version
		reused := uint32(0)
		for i, info := range v.ep.list {
			if info.kekID == kek.ID() {
				reused = uint32(i + 1)
			}
		}
		v.mu.Unlock()
		switch {
		case reused == cur:
			// Resuming a Rotate that stopped after recording the epoch.
			v.mu.Lock()
			v.keks[cur] = kek
			v.mu.Unlock()
			return cur, nil
		case reused != 0:
			return 0, fmt.Errorf("%w: %q is the KEK of epoch %d", ErrWrongKEK, kek.ID(), reused)
		}
		ev, err := v.event(TypeEpochStarted, epochPayload{Epoch: cur + 1, KEK: kek.ID()})
		if err != nil {
			return 0, err
		}
		_, err = v.store.Append(ctx, epochStream, domain.Exact(version), ev)
		if errors.Is(err, domain.ErrWrongVersion) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("sharedvault: start epoch %d: %w", cur+1, err)
		}
	}
	return 0, errors.New("sharedvault: the epoch stream kept changing; try again")
}

// RetireEpoch records that no surviving key needs epoch n any more, after making it
// so: it marks n retiring (no node wraps under it from then on), re-wraps every
// surviving key still under an epoch older than the current one, then records n
// retired. After it returns nil, no node unwraps with n's KEK, and DestroyEpoch may
// destroy it. n must be older than the current epoch (Rotate first). RetireEpoch is
// idempotent and resumes after a failure.
func (v *Vault) RetireEpoch(ctx context.Context, n uint32) error {
	if err := v.usable(ctx); err != nil {
		return err
	}
	if err := v.advance(ctx, n, TypeEpochRetiring); err != nil {
		return err
	}
	moved, err := v.sweep(ctx)
	if err != nil {
		return fmt.Errorf("sharedvault: retire epoch %d: re-wrapping stopped after %d keys (call RetireEpoch again): %w", n, moved, err)
	}
	if err := v.advance(ctx, n, TypeEpochRetired); err != nil {
		return err
	}
	v.log.Info("sharedvault: retired an epoch", "epoch", n, "rewrapped", moved)
	return nil
}

// DestroyEpoch destroys retired epoch n's KEK, which the keyring must give as a
// Destroyer, and records the destruction. From then on every copy of a key wrapped
// only under n, wherever the store's files went, is useless; ErasureStatus reports
// erasures complete once every epoch that wrapped their keys is destroyed. A KEK that
// is not a Destroyer gives ErrNotDestroyable: destroy it by other means (the HSM's
// own tools) and call ConfirmDestroyed. DestroyEpoch is idempotent.
func (v *Vault) DestroyEpoch(ctx context.Context, n uint32) error {
	if err := v.usable(ctx); err != nil {
		return err
	}
	if err := v.refreshEpochs(ctx); err != nil {
		return err
	}
	switch v.phase(n) {
	case phaseDestroyed:
		return nil
	case phaseRetired:
	default:
		return fmt.Errorf("sharedvault: destroy epoch %d: it is %v; retire it first", n, v.phase(n))
	}
	k, err := v.keyring.KEK(ctx, n)
	if err != nil {
		return fmt.Errorf("sharedvault: KEK of epoch %d: %w", n, err)
	}
	v.mu.Lock()
	want := v.ep.list[n-1].kekID
	v.mu.Unlock()
	if k.ID() != want {
		return fmt.Errorf("%w: the keyring gives %q for epoch %d, which started with %q", ErrWrongKEK, k.ID(), n, want)
	}
	d, ok := k.(Destroyer)
	if !ok {
		return fmt.Errorf("%w: epoch %d (%s); destroy it by other means, then call ConfirmDestroyed", ErrNotDestroyable, n, want)
	}
	if err := d.Destroy(ctx); err != nil {
		return fmt.Errorf("sharedvault: destroy epoch %d: %w", n, err)
	}
	return v.advance(ctx, n, TypeEpochDestroyed)
}

// ConfirmDestroyed records that retired epoch n's KEK was destroyed by other means.
// The caller vouches for it: ErasureStatus will call erasures under n complete.
func (v *Vault) ConfirmDestroyed(ctx context.Context, n uint32) error {
	if err := v.usable(ctx); err != nil {
		return err
	}
	if err := v.refreshEpochs(ctx); err != nil {
		return err
	}
	if ph := v.phase(n); ph != phaseRetired && ph != phaseDestroyed {
		return fmt.Errorf("sharedvault: confirm destruction of epoch %d: it is %v; retire it first", n, ph)
	}
	return v.advance(ctx, n, TypeEpochDestroyed)
}

// advance appends typ for epoch n unless n is already there or past it.
func (v *Vault) advance(ctx context.Context, n uint32, typ string) error {
	target := map[string]phase{TypeEpochRetiring: phaseRetiring, TypeEpochRetired: phaseRetired, TypeEpochDestroyed: phaseDestroyed}[typ]
	for range maxAttempts {
		if err := v.refreshEpochs(ctx); err != nil {
			return err
		}
		v.mu.Lock()
		ph, version := v.ep.phase(n), v.ep.version
		v.mu.Unlock()
		switch {
		case ph >= target:
			return nil
		case ph == phaseUnknown:
			return fmt.Errorf("sharedvault: epoch %d never started", n)
		case ph == phaseCurrent:
			return fmt.Errorf("sharedvault: epoch %d is the current epoch; Rotate first", n)
		case ph != target-1: // superseded, retiring, retired: one step at a time
			return fmt.Errorf("sharedvault: epoch %d is %v, not ready for %s", n, ph, typ)
		}
		ev, err := v.event(typ, epochPayload{Epoch: n})
		if err != nil {
			return err
		}
		_, err = v.store.Append(ctx, epochStream, domain.Exact(version), ev)
		if errors.Is(err, domain.ErrWrongVersion) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sharedvault: %s epoch %d: %w", typ, n, err)
		}
	}
	return errors.New("sharedvault: the epoch stream kept changing; try again")
}

// sweep re-wraps every surviving key that is not under the current epoch, and
// returns how many it re-wrapped. It finds the key streams by reading the whole
// ledger once (the Store cannot list streams): a stream's first event names it, so
// nothing is collected in memory.
func (v *Vault) sweep(ctx context.Context) (int, error) {
	if err := v.refreshEpochs(ctx); err != nil {
		return 0, err
	}
	moved := 0
	for e, err := range v.store.ReadAll(ctx, 1) {
		if err != nil {
			return moved, fmt.Errorf("sharedvault: sweep: %w", err)
		}
		subject, ok := subjectOf(e.Stream)
		if !ok || e.Version != 1 {
			continue
		}
		n, err := v.sweepSubject(ctx, subject)
		moved += n
		if err != nil {
			return moved, err
		}
	}
	return moved, nil
}

func (v *Vault) sweepSubject(ctx context.Context, subject domain.SubjectID) (int, error) {
	for range maxAttempts {
		st, err := v.readKeys(ctx, subject)
		if err != nil {
			return 0, err
		}
		cur := v.current()
		hs := map[string]*keyset.Handle{}
		for group, g := range st.groups {
			if st.live(group) == nil || g.epoch == cur || v.phase(g.epoch) >= phaseRetired {
				// Shredded keys stay where they are, and a key whose only wrap is
				// under a retired epoch was never used (see Vault.load).
				continue
			}
			h, _, err := v.unwrap(ctx, subject, group, g)
			if errors.Is(err, ErrEpochRetired) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("sharedvault: subject %s group %s: %w", subject, group, err)
			}
			hs[group] = h
		}
		if len(hs) == 0 {
			return 0, nil
		}
		ep, err := v.appendWraps(ctx, subject, st.version, hs)
		if errors.Is(err, domain.ErrWrongVersion) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return len(hs), v.settle(ctx, subject, hs, ep)
	}
	return 0, fmt.Errorf("sharedvault: subject %s: the key stream kept changing during the sweep", subject)
}
