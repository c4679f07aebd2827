package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
)

// A request is one Append waiting for the writer.
type request struct {
	ctx      context.Context
	stream   string
	expected domain.Expected
	encoded  [][]byte // canonical encodings with position and version still zero
	versions []uint64 // versions the caller asked for (0: any)
	size     int      // bytes of encoded
	hint     headHint

	// state moves from queued to taken (by the writer) or abandoned (by a caller
	// whose context ended first); whoever wins decides whether it is written.
	state atomic.Int32
	done  chan result
}

const (
	queued int32 = iota
	taken
	abandoned
)

type result struct {
	appended domain.Appended
	err      error
}

// Limits of one group commit: big enough that a full queue of 64 appenders is
// one transaction, small enough that no commit stalls the others for long.
const (
	maxGroupEvents = 4096
	maxGroupBytes  = 32 << 20
)

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected domain.Expected, events ...domain.Event) (domain.Appended, error) {
	if err := s.usable(ctx); err != nil {
		return domain.Appended{}, err
	}
	if p := s.failed.Load(); p != nil {
		return domain.Appended{}, fmt.Errorf("%w: %v", eventstore.ErrFailed, *p)
	}
	s.appending.Add(1)
	defer s.appending.Add(-1)
	r, err := newRequest(ctx, stream, expected, events)
	if err != nil {
		return domain.Appended{}, err
	}
	// Look the stream's version up here, in parallel with other callers, rather
	// than in the writer; the writer checks the hint is still current.
	if r.hint, err = s.idx.hint(ctx, stream); err != nil {
		return domain.Appended{}, err
	}
	if res, ok := s.commitDirect(r); ok {
		return res.appended, res.err
	}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return domain.Appended{}, ctx.Err()
	case <-s.closed:
		return domain.Appended{}, eventstore.ErrClosed
	}
	select {
	case res := <-r.done:
		return res.appended, res.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(queued, abandoned) {
			return domain.Appended{}, ctx.Err()
		}
	case <-s.writerDone:
		if r.state.CompareAndSwap(queued, abandoned) {
			return domain.Appended{}, eventstore.ErrClosed
		}
	}
	// The writer took the request: its commit is under way and decides.
	res := <-r.done
	return res.appended, res.err
}

func newRequest(ctx context.Context, stream string, expected domain.Expected, events []domain.Event) (*request, error) {
	enc, size, err := eventstore.EncodeAppend(stream, expected, events)
	if err != nil {
		return nil, err
	}
	r := &request{ctx: ctx, stream: stream, expected: expected, size: size,
		encoded: make([][]byte, len(enc)), versions: make([]uint64, len(enc)), done: make(chan result, 1)}
	for i, e := range enc {
		r.encoded[i], r.versions[i] = e.Bytes, e.Version
	}
	return r, nil
}

func (r *request) reply(a domain.Appended, err error) { r.done <- result{a, err} }

// commitDirect commits r in the caller's goroutine when it is the only Append in
// progress and no commit is under way, which spares a lone appender two goroutine
// hand-offs (docs/eventstore.md). It reports false, having done nothing, when r
// must go through the writer's queue instead. Concurrent appenders always use the
// queue: a caller that committed directly whenever the queue happened to be empty
// would split the next group in two and cost an extra fsync.
func (s *Store) commitDirect(r *request) (result, bool) {
	if s.appending.Load() != 1 || len(s.reqs) > 0 || !s.commitMu.TryLock() {
		return result{}, false
	}
	if s.stopped {
		s.commitMu.Unlock()
		return result{err: eventstore.ErrClosed}, true
	}
	s.commitGroup(s.gather(r))
	s.commitMu.Unlock()
	return <-r.done, true
}

// writeLoop is the queue's writer: it commits queued requests in groups until the
// store closes.
func (s *Store) writeLoop() {
	defer close(s.writerDone)
	for {
		select {
		case <-s.closed:
			s.rejectQueued()
			return
		case r := <-s.reqs:
			s.commitMu.Lock()
			s.commitGroup(s.gather(r))
			s.commitMu.Unlock()
		}
	}
}

// commitGroup commits a gathered group, or refuses it if the store has failed. The
// caller holds commitMu.
func (s *Store) commitGroup(group []*request) {
	if p := s.failed.Load(); p != nil {
		for _, r := range group {
			if r.state.CompareAndSwap(queued, taken) {
				r.reply(domain.Appended{}, fmt.Errorf("%w: %v", eventstore.ErrFailed, *p))
			}
		}
		return
	}
	s.w.commit(group)
}

// gather takes r and whatever else is queued, up to the group limits.
func (s *Store) gather(r *request) []*request {
	group := []*request{r}
	events, size := len(r.encoded), r.size
	for events < maxGroupEvents && size < maxGroupBytes {
		select {
		case r := <-s.reqs:
			group = append(group, r)
			events += len(r.encoded)
			size += r.size
		default:
			return group
		}
	}
	return group
}

func (s *Store) rejectQueued() {
	for {
		select {
		case r := <-s.reqs:
			if r.state.CompareAndSwap(queued, taken) {
				r.reply(domain.Appended{}, eventstore.ErrClosed)
			}
		default:
			return
		}
	}
}

// fail puts the store in the failed state: a write's outcome is unknown, so no
// further append is accepted until the store is reopened and recovers.
func (s *Store) fail(err error) {
	s.failed.CompareAndSwap(nil, &err)
	s.log.Error("event store failed; appends are refused until it is reopened", "err", err)
}

// writer holds the committer's prepared statement and scratch buffer; it is used
// only under Store.commitMu.
type writer struct {
	s      *Store
	insert *sql.Stmt
	chunk  []byte
	// sinceCopy counts bytes committed since the last pre-copy request.
	sinceCopy int
}

func (s *Store) newWriter(ctx context.Context) (*writer, error) {
	insert, err := s.wconn.PrepareContext(ctx, `INSERT INTO events(first, last, data) VALUES(?, ?, ?)`)
	if err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	return &writer{s: s, insert: insert}, nil
}

type row struct {
	position uint64
	data     []byte
}

// commit decides which requests of the group can be written, writes them in one
// transaction and acknowledges them after it is durable.
func (w *writer) commit(group []*request) {
	s := w.s
	ctx := context.Background()  // a commit, once started, is not cancelled by one caller
	heads := map[string]uint64{} // stream versions after the requests accepted so far
	position := s.head.Load()
	type acceptedRequest struct {
		r *request
		a domain.Appended
	}
	var accepted []acceptedRequest
	var rows []row
	var entries []entry
	for _, r := range group {
		if !r.state.CompareAndSwap(queued, taken) {
			continue // abandoned: its caller already returned
		}
		if err := r.ctx.Err(); err != nil {
			r.reply(domain.Appended{}, err)
			continue
		}
		current, ok := heads[r.stream]
		if !ok {
			var err error
			if current, err = s.idx.head(ctx, r.stream, r.hint); err != nil {
				r.reply(domain.Appended{}, err)
				continue
			}
		}
		if !r.expected.Allows(current) {
			r.reply(domain.Appended{}, &domain.WrongVersionError{Stream: r.stream, Expected: r.expected, Actual: current})
			continue
		}
		if i := r.versionMismatch(current); i >= 0 {
			r.reply(domain.Appended{}, fmt.Errorf("event %d was made for version %d: %w",
				i, r.versions[i], &domain.WrongVersionError{Stream: r.stream, Expected: r.expected, Actual: current}))
			continue
		}
		a := domain.Appended{FirstPosition: position + 1}
		for i, b := range r.encoded {
			position++
			version := current + uint64(i) + 1
			domain.SetPlacement(b, position, version)
			rows = append(rows, row{position, b})
			entries = append(entries, entry{stream: r.stream, version: version, position: position})
		}
		a.LastPosition = position
		a.Version = current + uint64(len(r.encoded))
		heads[r.stream] = a.Version
		accepted = append(accepted, acceptedRequest{r, a})
	}
	if len(accepted) == 0 {
		return
	}
	if err := w.write(ctx, rows); err != nil {
		for _, ar := range accepted {
			ar.r.reply(domain.Appended{}, err)
		}
		return
	}
	s.head.Store(position)
	s.idx.add(entries)
	s.signal()
	for _, r := range rows {
		w.sinceCopy += len(r.data)
	}
	if len(accepted) >= precopyMinGroups && w.sinceCopy >= precopyBytes {
		w.sinceCopy = 0
		select {
		case s.precopy <- struct{}{}:
		default: // one is pending already
		}
	}
	for _, ar := range accepted {
		ar.r.reply(ar.a, nil)
	}
}

// versionMismatch returns the index of the first event whose requested version is
// not the one it would get after current, or -1.
func (r *request) versionMismatch(current uint64) int {
	for i, v := range r.versions {
		if v != 0 && v != current+uint64(i)+1 {
			return i
		}
	}
	return -1
}

// write inserts rows in one transaction. An error before COMMIT, after a successful
// ROLLBACK, leaves nothing written and is returned as is. An error from COMMIT or
// ROLLBACK leaves the outcome unknown: the store fails (ErrFailed), and reopening
// it recovers the truth from the files.
func (w *writer) write(ctx context.Context, rows []row) error {
	conn := w.s.wconn
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("event store: begin: %w", err)
	}
	if err := w.insertRows(ctx, rows); err != nil {
		if _, rbErr := conn.ExecContext(ctx, "ROLLBACK"); rbErr != nil {
			err = fmt.Errorf("rollback after %v: %w", err, rbErr)
			w.s.fail(err)
			return fmt.Errorf("%w: %v", eventstore.ErrFailed, err)
		}
		return fmt.Errorf("event store: write: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		w.s.fail(fmt.Errorf("commit: %w", err))
		return fmt.Errorf("%w: commit: %v", eventstore.ErrFailed, err)
	}
	return nil
}

// insertRows packs rows (in position order) into chunks and inserts them.
func (w *writer) insertRows(ctx context.Context, rows []row) error {
	var first, last uint64
	flush := func() error {
		if len(w.chunk) == 0 {
			return nil
		}
		// The driver copies the blob while binding, so the buffer can be reused.
		_, err := w.insert.ExecContext(ctx, int64(first), int64(last), w.chunk)
		w.chunk = w.chunk[:0]
		return err
	}
	for _, r := range rows {
		if len(w.chunk) > 0 && len(w.chunk)+4+len(r.data) > maxChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(w.chunk) == 0 {
			first = r.position
		}
		last = r.position
		w.chunk = appendFramed(w.chunk, r.data)
	}
	if err := flush(); err != nil {
		return err
	}
	if cap(w.chunk) > 4*maxChunkBytes {
		w.chunk = nil // do not keep a buffer grown by one huge event
	}
	return nil
}
