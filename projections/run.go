package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections/handoff"
)

// Run applies the ledger to every projection from its own checkpoint, then
// follows it, until ctx ends or the views close; then it commits what it applied
// and returns nil. A failure to read the ledger (eventstore.ErrClosed when it
// closes) is returned after committing what was applied. A failure to apply an
// event (a sealed part the vault cannot open for a reason other than erasure, a
// known event type whose payload does not decode, a write error) rolls back the
// open transaction and is returned with the event's position and type. Either
// way, calling Run again resumes from the checkpoints; an event that cannot be
// applied is never skipped.
//
// Events are applied in transactions of up to Options.BatchSize events; a
// transaction is committed as soon as no further event is ready to apply, so
// a live event is visible (and WaitFor returns) right after it is applied.
// Only one Run or Rebuild may run at a time (ErrBusy).
func (v *Views) Run(ctx context.Context, src Source) error {
	ctx, release, err := v.claim(ctx)
	if err != nil {
		return err
	}
	defer release()
	if err := v.verify(ctx, src); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	from, _ := v.minApplied()
	return v.consume(ctx, src, from+1, 0, nil)
}

// claim makes the caller the one Run or Rebuild (ErrBusy if another runs,
// ErrClosed after Close) and returns a context that also ends with Close, and
// the function that undoes both.
func (v *Views) claim(ctx context.Context) (context.Context, func(), error) {
	if !v.active.TryLock() {
		return nil, nil, ErrBusy
	}
	if v.closed() {
		v.active.Unlock()
		return nil, nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(v.stop, cancel)
	return ctx, func() {
		cancel()
		stop()
		v.active.Unlock()
	}, nil
}

// verify resets the projections whose checkpoint does not name the same event in
// src as when it was written: the ledger was restored from an older backup, or
// the file was built from another ledger. Run then rebuilds them.
func (v *Views) verify(ctx context.Context, src Source) error {
	head, err := src.Head(ctx)
	if err != nil {
		return fmt.Errorf("projections: ledger head: %w", err)
	}
	v.mu.Lock()
	cps := v.applied
	v.mu.Unlock()
	ids := map[uint64]domain.EventID{} // by position: projections usually share one
	var stale []int
	for i, cp := range cps {
		if cp == 0 {
			continue
		}
		if cp > head {
			stale = append(stale, i)
			continue
		}
		id, ok := ids[cp]
		if !ok {
			e, err := EventAt(ctx, src, cp)
			if err != nil {
				return err
			}
			id, ids[cp] = e.ID, e.ID
		}
		if id != v.ids[i] {
			stale = append(stale, i)
		}
	}
	for _, i := range stale {
		v.log.Warn("projection checkpoint does not match the ledger (restored from a backup, or another ledger); rebuilding it",
			"projection", projections[i].name, "checkpoint", cps[i], "head", head)
	}
	if len(stale) == 0 {
		v.publish(cps)
		return nil
	}
	return v.reset(ctx, stale)
}

// EventAt reads the event at position p, which must be at most the head, so that
// Follow yields it without waiting. The tree and the directory publisher check
// their checkpoints with it too.
func EventAt(ctx context.Context, src Source, p uint64) (domain.Event, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for e, err := range src.Follow(ctx, p) {
		if err != nil {
			return e, fmt.Errorf("projections: read ledger: %w", err)
		}
		if e.Position != p {
			return e, fmt.Errorf("projections: the ledger yielded position %d where %d was due", e.Position, p)
		}
		return e, nil
	}
	return domain.Event{}, fmt.Errorf("projections: the ledger has no event at position %d", p)
}

// Rebuild empties every projection and replays the ledger from position 1 up to
// its head at the start, calling progress (if not nil) with the number of events
// applied and the total after every commit. Queries meanwhile see the views
// filling up. If ctx ends first, Rebuild returns ctx's error; the checkpoints
// then hold what was done, and Run continues from there.
func (v *Views) Rebuild(ctx context.Context, src Source, progress func(done, total uint64)) error {
	ctx, release, err := v.claim(ctx)
	if err != nil {
		return err
	}
	defer release()
	total, err := src.Head(ctx)
	if err != nil {
		return fmt.Errorf("projections: ledger head: %w", err)
	}
	all := make([]int, numProjections)
	for i := range all {
		all[i] = i
	}
	if err := v.reset(ctx, all); err != nil {
		return err
	}
	if progress == nil {
		progress = func(uint64, uint64) {}
	}
	progress(0, total)
	if total == 0 {
		return nil
	}
	if err := v.consume(ctx, src, 1, total, progress); err != nil {
		return err
	}
	if done, _ := v.minApplied(); done < total {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("projections: rebuild stopped at position %d of %d", done, total)
	}
	return nil
}

// consume applies src's events from position from on, stopping after position
// until (0: never). It returns nil when ctx ends.
//
// A batch is committed when it is full, when it is maxBatchDelay old, at
// until, and whenever no next event is ready: a goroutine reads src ahead of
// the apply loop (ReadAhead), so "caught up" needs no question to the ledger
// (src.Head is a round trip on KurrentDB, which asking once per live event
// would cost).
func (v *Views) consume(ctx context.Context, src Source, from, until uint64, progress func(done, total uint64)) error {
	// Writes and vault reads run to completion once started, so a cancellation
	// never leaves an event half applied; ctx stops the reading only.
	wctx := context.WithoutCancel(ctx)
	rctx, stopReading := context.WithCancel(ctx)
	q := handoff.New[Followed](readAheadMax)
	var reader sync.WaitGroup
	reader.Go(func() { ReadAhead(rctx, q, src, from) })
	defer reader.Wait() // Follow's iterator is done before consume returns
	defer stopReading()

	var b *batch
	defer func() {
		if b != nil {
			b.tx.Rollback()
		}
	}()
	// commit commits the open batch, if any, and reports progress.
	commit := func(position uint64) error {
		if b == nil {
			return nil
		}
		err := v.commit(wctx, b)
		b = nil
		if err == nil && progress != nil {
			progress(position, until)
		}
		return err
	}
	next := from
	for {
		items, done := q.Take()
		if len(items) == 0 {
			// Nothing is ready: the batch holds everything read so far.
			if err := commit(next - 1); err != nil || done {
				return err
			}
			<-q.Ready()
			continue
		}
		for _, f := range items {
			if ctx.Err() != nil {
				// Stop at once rather than apply what was read ahead.
				return commit(next - 1)
			}
			e, err := f.Event, f.Err
			if err != nil {
				if cerr := commit(next - 1); cerr != nil || ctx.Err() != nil {
					return cerr
				}
				return fmt.Errorf("projections: read ledger: %w", err)
			}
			if e.Position != next {
				return fmt.Errorf("projections: the ledger yielded position %d where %d was due", e.Position, next)
			}
			next++
			if b == nil {
				if b, err = v.begin(wctx); err != nil {
					return err
				}
			}
			if err := b.apply(&e); err != nil {
				return err
			}
			last := until != 0 && e.Position >= until
			if last || b.n >= v.size || time.Since(b.start) >= maxBatchDelay {
				if err := commit(e.Position); err != nil {
					return err
				}
			}
			if last {
				return nil
			}
		}
	}
}

// readAheadMax is how many events consume's reader may hold ahead of the
// apply loop.
const readAheadMax = 1024

// Followed is one item of src.Follow: an event, or the error that ends it.
type Followed struct {
	Event domain.Event
	Err   error
}

// ReadAhead reads src from position from on into q until Follow yields an
// error (which it passes on) or ends, or ctx ends; it then finishes q. The
// views and the directory publisher read the ledger ahead of their writers
// with it.
func ReadAhead(ctx context.Context, q *handoff.Queue[Followed], src Source, from uint64) {
	defer q.Finish()
	for e, err := range src.Follow(ctx, from) {
		if !q.Put(ctx, Followed{e, err}) || err != nil {
			return
		}
	}
}

// batch is one write transaction of the apply loop.
type batch struct {
	v     *Views
	ctx   context.Context
	tx    *sql.Tx
	cps   [numProjections]uint64 // checkpoints, including this batch's events
	ids   [numProjections]domain.EventID
	moved [numProjections]bool // which checkpoints this batch moved
	n     int
	start time.Time
	// erased is set when the batch deleted personal data: the WAL is then
	// checkpointed and truncated after the commit.
	erased bool
	// changed are the serials whose CertificateStatus the batch may change:
	// their cached answers are dropped after the commit.
	changed []domain.Serial
}

// statusChanged notes that the batch changes what CertificateStatus says of
// serial.
func (b *batch) statusChanged(serial domain.Serial) {
	if b.v.status != nil {
		b.changed = append(b.changed, serial)
	}
}

func (v *Views) begin(ctx context.Context) (*batch, error) {
	tx, err := v.wdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("projections: begin: %w", err)
	}
	v.mu.Lock()
	cps := v.applied
	v.mu.Unlock()
	return &batch{v: v, ctx: ctx, tx: tx, cps: cps, ids: v.ids, start: time.Now()}, nil
}

// eventInfo is an event with its public payload decoded once for all projections.
type eventInfo struct {
	*domain.Event
	// payload is a pointer to the catalogue struct of the event's type, or nil
	// for a type or schema this program does not know.
	payload domain.Payload
}

// apply applies e to every projection that has not yet applied it.
func (b *batch) apply(e *domain.Event) error {
	info := eventInfo{Event: e}
	decoded := false
	for i := range projections {
		if e.Position <= b.cps[i] {
			continue
		}
		if !decoded {
			p, known, err := decode(e)
			if err != nil {
				return err
			}
			if !known {
				b.v.skip(e)
			}
			info.payload, decoded = p, true
		}
		if info.payload != nil {
			if err := projections[i].apply(b, &info); err != nil {
				return fmt.Errorf("projections: %s: event %d (%s): %w", projections[i].name, e.Position, e.Type, err)
			}
		}
		b.cps[i], b.ids[i], b.moved[i] = e.Position, e.ID, true
		if b.v.onApply != nil {
			b.v.onApply(projections[i].name, e.Position)
		}
	}
	b.n++
	return nil
}

// skip logs an event type or schema the views do not know, once per type.
func (v *Views) skip(e *domain.Event) {
	key := fmt.Sprintf("%s/%d", e.Type, e.Schema)
	if v.skipped[key] {
		return
	}
	v.skipped[key] = true
	v.log.Warn("projections skip an event type they do not know", "type", e.Type, "schema", e.Schema, "position", e.Position)
}

// decode returns e's public payload, or nil for a type no view needs; known is
// false for a type or schema this program does not know.
func decode(e *domain.Event) (p domain.Payload, known bool, err error) {
	switch e.Type {
	case domain.TypeSubjectRegistered:
		p = new(domain.SubjectRegistered)
	case domain.TypeSubjectCorrected:
		p = new(domain.SubjectCorrected)
	case domain.TypeSubjectErased:
		p = new(domain.SubjectErased)
	case domain.TypeCertificateIssued:
		p = new(domain.CertificateIssued)
	case domain.TypeCertificateRevoked:
		p = new(domain.CertificateRevoked)
	case domain.TypeCertificateDeleted:
		p = new(domain.CertificateDeleted)
	case domain.TypePersonalDataAccessed:
		p = new(domain.PersonalDataAccessed)
	case domain.TypeSubjectCertificateLinked:
		// The certificates view learns of a certificate from certificate.issued;
		// a link without one is an issuance that failed.
		return nil, e.Schema == (domain.SubjectCertificateLinked{}).SchemaVersion(), nil
	case domain.TypeCertificateRejected:
		// Nothing was issued; the rejection is for auditors reading the ledger.
		return nil, e.Schema == (domain.CertificateRejected{}).SchemaVersion(), nil
	case domain.TypeCACreated:
		// CAs are loaded from their streams (crypto/authority), not from a view.
		return nil, e.Schema == (domain.CACreated{}).SchemaVersion(), nil
	case domain.TypeCRLPublished:
		return nil, e.Schema == (domain.CRLPublished{}).SchemaVersion(), nil
	case domain.TypeOCSPResponderIssued:
		return nil, e.Schema == (domain.OCSPResponderIssued{}).SchemaVersion(), nil
	default:
		// The shared key vault (crypto/sharedvault) keeps its wrapped keys and
		// epochs in the ledger, in streams of its own: no view reads them.
		if strings.HasPrefix(e.Stream, "vault-") || strings.HasPrefix(e.Stream, "vault.") {
			return nil, true, nil
		}
		return nil, false, nil
	}
	if e.Schema != p.SchemaVersion() {
		return nil, false, nil
	}
	// A known type and schema that does not decode is a damaged ledger: stopping
	// (and showing as lag) is better than views silently missing a revocation.
	if err := domain.UnmarshalPublic(e, p); err != nil {
		return nil, true, fmt.Errorf("projections: %w", err)
	}
	return p, true, nil
}

// exec runs a write in the batch's transaction. go-sqlite3 caches the prepared
// statement per connection (_stmt_cache_size).
func (b *batch) exec(query string, args ...any) (sql.Result, error) {
	return b.tx.ExecContext(b.ctx, query, args...)
}

// commit writes the batch's checkpoints and commits, truncates the WAL if the
// batch erased personal data (or an earlier truncation failed), then publishes the
// checkpoints, so that WaitFor for an erasure returns once its rows are gone from
// the files.
func (v *Views) commit(ctx context.Context, b *batch) error {
	defer b.tx.Rollback()
	for i, p := range projections {
		if !b.moved[i] {
			continue
		}
		if _, err := b.exec(`UPDATE checkpoints SET position = ?, event_id = ? WHERE name = ?`, b.cps[i], b.ids[i][:], p.name); err != nil {
			return fmt.Errorf("projections: write checkpoint: %w", err)
		}
	}
	if err := b.tx.Commit(); err != nil {
		return fmt.Errorf("projections: commit: %w", err)
	}
	// Before publish, so that no answer from before the commit is served once
	// WaitFor has returned for it.
	if v.status != nil {
		v.status.drop(b.changed)
	}
	v.ids = b.ids
	if b.erased {
		v.truncatePending = true
	}
	if v.truncatePending {
		v.truncateWAL(ctx)
	}
	v.publish(b.cps)
	return nil
}

// truncateWAL copies the WAL into the database file and truncates it to zero
// bytes, so that rows deleted with secure_delete leave no copy in old WAL frames.
// On failure (a reader holding a snapshot for longer than the busy timeout) it
// logs and leaves truncatePending set: the next commit tries again.
func (v *Views) truncateWAL(ctx context.Context) {
	var busy, logFrames, done int
	err := v.wdb.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done)
	if err == nil && (busy != 0 || logFrames != done) {
		err = fmt.Errorf("busy=%d log=%d checkpointed=%d", busy, logFrames, done)
	}
	if err == nil {
		fi, serr := os.Stat(v.path + "-wal")
		switch {
		case serr == nil && fi.Size() != 0:
			err = fmt.Errorf("the WAL is %d bytes after the checkpoint", fi.Size())
		case serr != nil && !errors.Is(serr, os.ErrNotExist):
			err = serr
		}
	}
	if err != nil {
		v.log.Warn("projections: WAL truncation after an erasure failed; retrying at the next commit", "err", err)
		return
	}
	v.truncatePending = false
}
