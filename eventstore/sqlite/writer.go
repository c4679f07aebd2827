package sqlite

import (
	"context"
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
	logBytes int64    // of encoded, packed alone into commit log records
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
	if r.logBytes > s.clog.size {
		return domain.Appended{}, fmt.Errorf("%w: the append needs %d bytes of commit log, and a log file holds %d",
			eventstore.ErrTooLarge, r.logBytes, s.clog.size)
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
	r.logBytes = packedBytes(r.encoded)
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
	s.commit(group)
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

type row struct {
	position uint64
	data     []byte
}

type acceptedRequest struct {
	r *request
	a domain.Appended
}

// commit decides which requests of the group can be written, writes them to the
// commit log and acknowledges them once they are durable there. The caller
// holds commitMu.
func (s *Store) commit(group []*request) {
	ctx := context.Background()  // a commit, once started, is not cancelled by one caller
	heads := map[string]uint64{} // stream versions after the requests accepted so far
	position := s.head.Load()
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
		if err := eventstore.VersionMismatch(r.versions, r.stream, r.expected, current); err != nil {
			r.reply(domain.Appended{}, err)
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
	// A group normally is one write to the log. One that would not fit a log file
	// is written in pieces of whole requests, each durable before the next starts,
	// so that no request is ever half in the log.
	for len(accepted) > 0 {
		n, events, size := 0, 0, int64(0)
		for n < len(accepted) && (n == 0 || size+accepted[n].r.logBytes <= s.clog.size) {
			size += accepted[n].r.logBytes
			events += len(accepted[n].r.encoded)
			n++
		}
		if err := s.commitPiece(accepted[:n], rows[:events], entries[:events]); err != nil {
			for _, ar := range accepted {
				ar.r.reply(domain.Appended{}, err)
			}
			return
		}
		accepted, rows, entries = accepted[n:], rows[events:], entries[events:]
	}
}

// commitPiece writes the rows of whole requests to the commit log and, once they
// are durable, makes them visible and acknowledges the requests. An error leaves
// the outcome unknown, so the store fails. The caller holds commitMu.
func (s *Store) commitPiece(accepted []acceptedRequest, rows []row, entries []entry) error {
	records, chunks := encodeCommit(s.clog.id, rows)
	if err := s.clog.append(records, chunks[len(chunks)-1].last, s.awaitDurable); err != nil {
		s.fail(err)
		return fmt.Errorf("%w: %v", eventstore.ErrFailed, err)
	}
	// The tail first, then the head: a reader that sees the new head finds the
	// events (tail.go).
	waiting := s.tail.add(chunks)
	s.head.Store(chunks[len(chunks)-1].last)
	s.idx.add(entries)
	s.committed.wake()
	if waiting >= drainBytes {
		select {
		case s.drainNow <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
	for _, ar := range accepted {
		ar.r.reply(ar.a, nil)
	}
	return nil
}

// packedBytes is how many bytes of log records encodeCommit makes of events alone.
// Packed together with others they can only take fewer (they may share a chunk
// header).
func packedBytes(events [][]byte) int64 {
	return recordsBytes(len(events), func(i int) int { return len(events[i]) })
}
