package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
)

// pageSize is how many events one read query returns. Each page is its own read
// transaction, so a slow consumer never holds a snapshot that stops checkpoints.
const pageSize = 512

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, from uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		if err := s.usable(ctx); err != nil {
			yield(domain.Event{}, err)
			return
		}
		for e, err := range s.readAll(ctx, from, 0) {
			if !yield(e, s.readErr(err)) || err != nil {
				return
			}
		}
	}
}

// readAll yields events from position from up to position to (0: until caught up).
func (s *Store) readAll(ctx context.Context, from, to uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		next := max(from, 1)
		for to == 0 || next <= to {
			limit := pageSize
			if to != 0 {
				limit = int(min(uint64(pageSize), to-next+1))
			}
			page, err := s.readPage(ctx, next, limit)
			for _, e := range page {
				if !yield(e, nil) {
					return
				}
			}
			if err != nil {
				yield(domain.Event{}, err)
				return
			}
			next += uint64(len(page))
			if len(page) < limit {
				return
			}
		}
	}
}

// readPage reads up to limit events from position from. The events must be
// contiguous, and none below the head may be missing. On error it also returns the
// events before the fault, so readers see everything up to it.
func (s *Store) readPage(ctx context.Context, from uint64, limit int) ([]domain.Event, error) {
	head := s.head.Load()
	page := make([]domain.Event, 0, min(limit, 256))
	next := from
	for len(page) < limit {
		added, err := s.readChunks(ctx, next, limit, &page)
		next += uint64(added)
		if err != nil {
			return page, err
		}
		if added == 0 {
			break
		}
	}
	if len(page) < limit && next <= head {
		return page, &eventstore.CorruptError{Position: next, Err: errors.New("event is missing")}
	}
	return page, nil
}

// chunksPerQuery bounds one chunk query; about 60 events of 1 KiB fit a chunk.
const chunksPerQuery = 16

// readChunks appends to page the events from position from on, found in up to
// chunksPerQuery chunks, without letting page exceed limit. It returns how many
// it appended. The tail is asked first: a position older than its first chunk is
// in ledger.db (tail.go).
func (s *Store) readChunks(ctx context.Context, from uint64, limit int, page *[]domain.Event) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	next := from
	if cs := s.tail.from(from, chunksPerQuery); cs != nil {
		for _, c := range cs {
			if len(*page) >= limit {
				break
			}
			// Tail chunks are never modified: the events may alias them.
			if err := appendChunkEvents(c, &next, limit, page); err != nil {
				return int(next - from), err
			}
		}
		return int(next - from), nil
	}
	rows, err := s.pageStmt.QueryContext(ctx, int64(from), chunksPerQuery)
	if err != nil {
		return 0, fmt.Errorf("event store: read: %w", err)
	}
	defer rows.Close()
	// The rows' bytes are copied once, into a buffer the decoded events alias
	// (RawBytes is only valid until the next row). When the buffer fills up a new
	// one starts; the old one lives on through its events.
	var arena []byte
	for len(*page) < limit && rows.Next() {
		var first, last int64
		var raw sql.RawBytes
		if err := rows.Scan(&first, &last, &raw); err != nil {
			return int(next - from), fmt.Errorf("event store: read: %w", err)
		}
		if uint64(last) < next {
			continue // the chunk before from's, when from is past the head
		}
		if cap(arena)-len(arena) < len(raw) {
			arena = make([]byte, 0, max(len(raw), 256<<10))
		}
		start := len(arena)
		arena = append(arena, raw...)
		c := chunk{first: uint64(first), last: uint64(last), data: arena[start:len(arena):len(arena)]}
		if err := appendChunkEvents(c, &next, limit, page); err != nil {
			return int(next - from), err
		}
	}
	if err := rows.Err(); err != nil {
		return int(next - from), fmt.Errorf("event store: read: %w", err)
	}
	return int(next - from), nil
}

// appendChunkEvents decodes the events of c from position *next on into page,
// until page holds limit events, advancing *next past each.
func appendChunkEvents(c chunk, next *uint64, limit int, page *[]domain.Event) error {
	if c.last < *next {
		return nil
	}
	if c.first > *next {
		return &eventstore.CorruptError{Position: *next, Err: errors.New("event is missing")}
	}
	var decodeErr error
	err := chunkEvents(c.first, c.last, c.data, func(position uint64, b []byte) bool {
		if position < *next {
			return true
		}
		e, err := decodeAt(position, b)
		if err != nil {
			decodeErr = err
			return false
		}
		*page = append(*page, e)
		*next++
		return len(*page) < limit
	})
	if decodeErr != nil {
		return decodeErr
	}
	if err != nil {
		return &eventstore.CorruptError{Position: *next, Err: err}
	}
	return nil
}

// readErr turns errors caused by a concurrent Close into ErrClosed.
func (s *Store) readErr(err error) error {
	if err == nil {
		return nil
	}
	select {
	case <-s.closed:
		if !errors.Is(err, eventstore.ErrCorrupt) {
			return eventstore.ErrClosed
		}
	default:
	}
	return err
}

// Follow implements eventstore.Store.
func (s *Store) Follow(ctx context.Context, from uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		next := max(from, 1)
		for {
			if err := s.usable(ctx); err != nil {
				yield(domain.Event{}, err)
				return
			}
			// Take the wake-up channel before reading, so a commit that lands after
			// the read still wakes us.
			wake := s.committed.wait()
			page, err := s.readPage(ctx, next, pageSize)
			for _, e := range page {
				if !yield(e, nil) {
					return
				}
			}
			if err != nil {
				yield(domain.Event{}, s.readErr(err))
				return
			}
			next += uint64(len(page))
			if len(page) == pageSize {
				continue
			}
			select {
			case <-wake:
			case <-ctx.Done():
			case <-s.closed:
			}
		}
	}
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		if err := s.usable(ctx); err != nil {
			yield(domain.Event{}, err)
			return
		}
		for e, err := range s.readStream(ctx, stream, max(from, 1)) {
			if !yield(e, s.readErr(err)) || err != nil {
				return
			}
		}
	}
}

func (s *Store) readStream(ctx context.Context, stream string, from uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		// Memory first, then the file: an entry that a flush moves in between is
		// then seen twice (and skipped the second time), never missed. When
		// memory covers every version from `from` on (a stream appended to
		// since the last flush, read from past its last flushed version) the
		// file is not asked.
		memFirst, memPositions, covered := s.idx.memPositions(stream, from)
		next := from
		var c chunk // events appended together share one: fetch it once
		emit := func(version, position uint64) bool {
			e, err := s.eventAt(ctx, &c, stream, version, position)
			if err != nil {
				yield(domain.Event{}, err)
				return false
			}
			next++
			return yield(e, nil)
		}
		for !covered {
			pairs, err := s.idx.filePositions(ctx, stream, next, pageSize)
			if err != nil {
				yield(domain.Event{}, err)
				return
			}
			for _, p := range pairs {
				if p[0] != next {
					yield(domain.Event{}, fmt.Errorf("%w: stream index lacks version %d of stream %q", eventstore.ErrCorrupt, next, stream))
					return
				}
				if !emit(p[0], p[1]) {
					return
				}
			}
			if len(pairs) < pageSize {
				break
			}
		}
		for i, p := range memPositions {
			v := memFirst + uint64(i)
			if v < next {
				continue
			}
			if v != next {
				yield(domain.Event{}, fmt.Errorf("%w: stream index lacks version %d of stream %q", eventstore.ErrCorrupt, next, stream))
				return
			}
			if !emit(v, p) {
				return
			}
		}
	}
}

// chunk is the last chunk eventAt fetched.
type chunk struct {
	first, last uint64
	data        []byte
}

// eventAt returns the event at position, checking it is version of stream. It
// fetches the chunk that holds it unless c already is that chunk, and leaves it in c.
func (s *Store) eventAt(ctx context.Context, c *chunk, stream string, version, position uint64) (domain.Event, error) {
	if err := ctx.Err(); err != nil {
		return domain.Event{}, err
	}
	if c.data == nil || position < c.first || position > c.last {
		if err := s.fetchChunk(ctx, c, position); err != nil {
			return domain.Event{}, err
		}
		if c.data == nil || c.last < position {
			return domain.Event{}, &eventstore.CorruptError{Position: position, Err: fmt.Errorf("indexed as version %d of stream %q but missing", version, stream)}
		}
	}
	var data []byte
	err := chunkEvents(c.first, c.last, c.data, func(p uint64, b []byte) bool {
		if p == position {
			data = bytes.Clone(b) // the event, not the whole chunk, outlives this call
			return false
		}
		return true
	})
	if err != nil {
		return domain.Event{}, &eventstore.CorruptError{Position: position, Err: err}
	}
	e, err := decodeAt(position, data)
	if err != nil {
		return e, err
	}
	if e.Stream != stream || e.Version != version {
		return e, &eventstore.CorruptError{Position: position, Err: fmt.Errorf("indexed as version %d of stream %q but holds version %d of %q", version, stream, e.Version, e.Stream)}
	}
	return e, nil
}

// fetchChunk reads the chunk that would hold position into c (c.data nil: none),
// from the tail or else from ledger.db.
func (s *Store) fetchChunk(ctx context.Context, c *chunk, position uint64) error {
	*c = chunk{}
	if t, ok := s.tail.get(position); ok {
		*c = t
		return nil
	}
	var first, last int64
	var data []byte // a copy of the row's blob, kept for the next events
	err := s.getStmt.QueryRowContext(ctx, int64(position)).Scan(&first, &last, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("event store: read: %w", err)
	}
	*c = chunk{first: uint64(first), last: uint64(last), data: data}
	return nil
}
