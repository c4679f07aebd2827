package sqlite

import (
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
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	head := s.head.Load()
	rows, err := s.pageStmt.QueryContext(ctx, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("event store: read: %w", err)
	}
	defer rows.Close()
	page := make([]domain.Event, 0, min(limit, 64))
	next := from
	for rows.Next() {
		var position int64
		var data []byte // Scan copies, and events alias their bytes
		if err := rows.Scan(&position, &data); err != nil {
			return nil, fmt.Errorf("event store: read: %w", err)
		}
		if uint64(position) != next {
			return page, &eventstore.CorruptError{Position: next, Err: errors.New("event is missing")}
		}
		e, err := decodeAt(next, data)
		if err != nil {
			return page, err
		}
		page = append(page, e)
		next++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("event store: read: %w", err)
	}
	if len(page) < limit && next <= head {
		return page, &eventstore.CorruptError{Position: next, Err: errors.New("event is missing")}
	}
	return page, nil
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
			wake := s.waitChan()
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
		// then seen twice (and skipped the second time), never missed.
		memFirst, memPositions := s.idx.memPositions(stream, from)
		next := from
		emit := func(version, position uint64) bool {
			e, err := s.eventAt(ctx, stream, version, position)
			if err != nil {
				yield(domain.Event{}, err)
				return false
			}
			next++
			return yield(e, nil)
		}
		for {
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

func (s *Store) eventAt(ctx context.Context, stream string, version, position uint64) (domain.Event, error) {
	if err := ctx.Err(); err != nil {
		return domain.Event{}, err
	}
	var data []byte
	err := s.getStmt.QueryRowContext(ctx, int64(position)).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Event{}, &eventstore.CorruptError{Position: position, Err: fmt.Errorf("indexed as version %d of stream %q but missing", version, stream)}
	}
	if err != nil {
		return domain.Event{}, fmt.Errorf("event store: read: %w", err)
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
