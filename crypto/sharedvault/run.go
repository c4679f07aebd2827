package sharedvault

import (
	"context"
	"errors"
	"fmt"

	"github.com/caledger/caledger/domain"
)

// Run follows the store from its head, so that this node hears of what other nodes
// record: tombstones evict the keys from the cache at once, epoch changes update
// the node's view of the epochs. While Run runs, the vault caches unwrapped keys;
// when it returns, the cache is emptied and stays off, and every Seal and Open reads
// the key stream again (correct, but slower). Run returns when ctx is done (ctx's
// error), when the vault is closed (ErrClosed), or when following fails; call it
// again to resume. Only one Run may run at a time.
func (v *Vault) Run(ctx context.Context) error {
	if err := v.usable(ctx); err != nil {
		return err
	}
	if !v.running.CompareAndSwap(false, true) {
		return errors.New("sharedvault: Run is already running")
	}
	defer v.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(v.life, cancel)()
	defer v.cache.SetEnabled(false)
	defer v.seen.Store(0)

	// The head is taken before caching starts: a key cached from here on was read
	// after every tombstone up to head, and Follow yields every one after it.
	head, err := v.store.Head(ctx)
	if err != nil {
		return v.runErr(ctx, fmt.Errorf("sharedvault: run: %w", err))
	}
	if err := v.refreshEpochs(ctx); err != nil {
		return v.runErr(ctx, err)
	}
	v.seen.Store(head)
	v.cache.SetEnabled(true)
	for e, err := range v.store.Follow(ctx, head+1) {
		if err != nil {
			return v.runErr(ctx, fmt.Errorf("sharedvault: run: %w", err))
		}
		v.observe(ctx, &e)
		v.seen.Store(e.Position)
	}
	return v.runErr(ctx, errors.New("sharedvault: run: the store stopped following"))
}

func (v *Vault) runErr(ctx context.Context, err error) error {
	switch {
	case v.closed.Load():
		return ErrClosed
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return err
}

// Seen returns the ledger position up to which Run has handled events, or 0 when Run
// is not running. A tombstone at a position at or below it has evicted its keys.
func (v *Vault) Seen() uint64 { return v.seen.Load() }

// observe handles one ledger event for Run: only the vault's streams matter.
func (v *Vault) observe(ctx context.Context, e *domain.Event) {
	if e.Stream == epochStream {
		v.mu.Lock()
		err := v.ep.apply(e)
		if err == nil {
			v.dropRetiredLocked()
		}
		v.mu.Unlock()
		if err != nil {
			// A gap (events this node read out of order) or a bad event: read the
			// stream afresh, which reports a bad event again.
			if err := v.refreshEpochs(ctx); err != nil && ctx.Err() == nil {
				v.log.Warn("sharedvault: cannot read the epoch stream", "err", err)
			}
		}
		return
	}
	subject, ok := subjectOf(e.Stream)
	if !ok {
		return
	}
	switch e.Type {
	case TypeKeyCreated, TypeKeyRewrapped:
		// The unwrapped key is the same whatever wraps it.
		return
	case TypeKeysShredded:
		if p, err := decodeShred(e); err == nil {
			v.cache.Evict(subject, p.Groups)
			return
		}
	}
	// Something this node cannot read might be a tombstone: drop the subject's keys,
	// so that the next use reads the stream (and fails closed if it is corrupt).
	v.cache.Evict(subject, nil)
	v.log.Warn("sharedvault: evicted a subject's keys for a vault event this node cannot read",
		"stream", e.Stream, "type", e.Type, "schema", e.Schema, "position", e.Position)
}
