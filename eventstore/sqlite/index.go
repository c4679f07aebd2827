package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/caledger/caledger/eventstore/sqlitefile"
)

// index maps (stream, version) to position. Recent entries live in memory (active,
// and flushing while a flush writes it); older ones in ledger-index.db.
//
// Entries only ever move from active to flushing to the file, and only the writer
// goroutine adds to active. So a stream found in neither memory table has all its
// entries in the file, and the file's entries for a stream change only while that
// stream is in flushing. The epoch counts completed flushes; a version read from the
// file at one epoch is still current while the epoch is unchanged and the stream is
// in neither table.
type index struct {
	db   *sql.DB
	conn *sql.Conn // the flusher's

	headStmt      *sql.Stmt
	positionsStmt *sql.Stmt

	mu       sync.Mutex
	active   *memtable
	flushing *memtable
	epoch    uint64
}

type entry struct {
	stream   string
	version  uint64
	position uint64
}

type memtable struct {
	streams map[string]*memStream
	entries int
}

// memStream holds the positions of consecutive versions first, first+1, ...
type memStream struct {
	first     uint64
	positions []uint64
}

func (m *memStream) head() uint64 { return m.first + uint64(len(m.positions)) - 1 }

func newMemtable() *memtable { return &memtable{streams: map[string]*memStream{}} }

func openIndex(ctx context.Context, path string) (*index, error) {
	created, err := createFile(path)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite3", sqlitefile.DSN(path, map[string]string{"_synchronous": "NORMAL", "_busy_timeout": "5000"}))
	if err != nil {
		return nil, fmt.Errorf("stream index: %w", err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	x := &index{db: db, active: newMemtable()}
	if x.conn, err = db.Conn(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("stream index: %w", err)
	}
	stmts := []string{
		// Entries are small and land on random pages: small pages write less per entry.
		`PRAGMA page_size = 1024`,
		`PRAGMA journal_mode = WAL`,
		`CREATE TABLE IF NOT EXISTS stream_index(stream TEXT NOT NULL, version INTEGER NOT NULL,
			position INTEGER NOT NULL, PRIMARY KEY(stream, version)) WITHOUT ROWID`,
		`CREATE TABLE IF NOT EXISTS index_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)`,
		`INSERT OR IGNORE INTO index_meta(key, value) VALUES('through', 0)`,
	}
	if !created {
		stmts = stmts[1:] // page_size only applies to a new file
	}
	for _, q := range stmts {
		if _, err := x.conn.ExecContext(ctx, q); err != nil {
			x.close()
			return nil, fmt.Errorf("stream index: %w", err)
		}
	}
	// Prepared once: these run for every append to a stream not in memory and for
	// every stream read.
	if x.headStmt, err = db.PrepareContext(ctx, `SELECT version FROM stream_index WHERE stream = ? ORDER BY version DESC LIMIT 1`); err == nil {
		x.positionsStmt, err = db.PrepareContext(ctx, `SELECT version, position FROM stream_index
			WHERE stream = ? AND version >= ? ORDER BY version LIMIT ?`)
	}
	if err != nil {
		x.close()
		return nil, fmt.Errorf("stream index: %w", err)
	}
	return x, nil
}

func (x *index) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{x.headStmt, x.positionsStmt} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(append(errs, x.conn.Close(), x.db.Close())...)
}

// through returns the last ledger position the file covers.
func (x *index) through(ctx context.Context) (uint64, error) {
	var n int64
	if err := x.db.QueryRowContext(ctx, `SELECT value FROM index_meta WHERE key = 'through'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("stream index: %w", err)
	}
	return uint64(n), nil
}

// trim drops file entries past position head.
func (x *index) trim(ctx context.Context, head uint64) error {
	tx, err := x.conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("stream index: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM stream_index WHERE position > ?`, int64(head)); err != nil {
		return fmt.Errorf("stream index: trim: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE index_meta SET value = ? WHERE key = 'through'`, int64(head)); err != nil {
		return fmt.Errorf("stream index: trim: %w", err)
	}
	return tx.Commit()
}

// add records committed entries. Only the writer goroutine (and Open) call it, in
// position order.
func (x *index) add(entries []entry) {
	if len(entries) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range entries {
		m := x.active.streams[e.stream]
		if m == nil {
			m = &memStream{first: e.version}
			x.active.streams[e.stream] = m
		}
		m.positions = append(m.positions, e.position)
	}
	x.active.entries += len(entries)
}

// pending reports how many entries wait for a flush.
func (x *index) pending() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.active.entries
}

// memHead returns the stream's version from memory, or false.
func (x *index) memHeadLocked(stream string) (uint64, bool) {
	if m := x.active.streams[stream]; m != nil {
		return m.head(), true
	}
	if x.flushing != nil {
		if m := x.flushing.streams[stream]; m != nil {
			return m.head(), true
		}
	}
	return 0, false
}

// headHint is a stream version read from the file by an appender, with the epoch
// it was read at.
type headHint struct {
	version uint64
	epoch   uint64
	ok      bool
}

// hint reads the stream's version from the file unless memory has it. Appenders
// call it so that the writer rarely has to.
func (x *index) hint(ctx context.Context, stream string) (headHint, error) {
	x.mu.Lock()
	_, inMemory := x.memHeadLocked(stream)
	epoch := x.epoch
	x.mu.Unlock()
	if inMemory {
		return headHint{}, nil
	}
	v, err := x.fileHead(ctx, stream)
	if err != nil {
		return headHint{}, err
	}
	return headHint{version: v, epoch: epoch, ok: true}, nil
}

// head returns the stream's current version for the writer, using h if it is
// still current.
func (x *index) head(ctx context.Context, stream string, h headHint) (uint64, error) {
	x.mu.Lock()
	v, inMemory := x.memHeadLocked(stream)
	epoch := x.epoch
	x.mu.Unlock()
	switch {
	case inMemory:
		return v, nil
	case h.ok && h.epoch == epoch:
		return h.version, nil
	}
	return x.fileHead(ctx, stream)
}

func (x *index) fileHead(ctx context.Context, stream string) (uint64, error) {
	var v int64
	err := x.headStmt.QueryRowContext(ctx, stream).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream index: %w", err)
	}
	return uint64(v), nil
}

// memPositions returns the in-memory positions of stream for versions >= from.
// covered reports that memory holds every version >= from there is: the stream
// is in memory from a version <= from on. Memory holds a stream's newest
// versions, consecutively, so the file then has nothing to add.
func (x *index) memPositions(stream string, from uint64) (first uint64, positions []uint64, covered bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	found := false
	for _, t := range []*memtable{x.flushing, x.active} {
		if t == nil {
			continue
		}
		m := t.streams[stream]
		if m == nil {
			continue
		}
		if !found {
			first, found = m.first, true
		}
		positions = append(positions, m.positions...)
	}
	covered = found && first <= from
	if !found || first+uint64(len(positions)) <= from {
		return 0, nil, covered
	}
	if from > first {
		positions = positions[from-first:]
		first = from
	}
	return first, positions, covered
}

// filePositions returns up to limit (version, position) pairs of stream from the
// file, for versions >= from.
func (x *index) filePositions(ctx context.Context, stream string, from uint64, limit int) ([][2]uint64, error) {
	rows, err := x.positionsStmt.QueryContext(ctx, stream, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("stream index: %w", err)
	}
	defer rows.Close()
	var out [][2]uint64
	for rows.Next() {
		var v, p int64
		if err := rows.Scan(&v, &p); err != nil {
			return nil, fmt.Errorf("stream index: %w", err)
		}
		out = append(out, [2]uint64{uint64(v), uint64(p)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stream index: %w", err)
	}
	return out, nil
}

// flush writes the in-memory entries to the file. If a previous flush failed, its
// table is written first. Only one flush runs at a time (the flusher goroutine, or
// Open before the goroutines start).
func (x *index) flush(ctx context.Context) error {
	x.mu.Lock()
	if x.flushing == nil {
		if x.active.entries == 0 {
			x.mu.Unlock()
			return nil
		}
		x.flushing, x.active = x.active, newMemtable()
	}
	t := x.flushing
	x.mu.Unlock()

	if err := x.write(ctx, t); err != nil {
		return err
	}
	x.mu.Lock()
	x.flushing = nil
	x.epoch++
	x.mu.Unlock()
	return nil
}

// write stores a memtable in one transaction, in key order so that each B-tree
// page is visited once.
func (x *index) write(ctx context.Context, t *memtable) error {
	streams := make([]string, 0, len(t.streams))
	var through uint64
	for s, m := range t.streams {
		streams = append(streams, s)
		through = max(through, m.positions[len(m.positions)-1])
	}
	slices.Sort(streams)
	tx, err := x.conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("stream index: flush: %w", err)
	}
	defer tx.Rollback()
	// OR REPLACE: a flush whose COMMIT reported an error may have committed; its
	// retry writes the same entries again and must not fail on them forever.
	insert, err := tx.PrepareContext(ctx, `INSERT OR REPLACE INTO stream_index(stream, version, position) VALUES(?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("stream index: flush: %w", err)
	}
	for _, s := range streams {
		m := t.streams[s]
		for i, p := range m.positions {
			if _, err := insert.ExecContext(ctx, s, int64(m.first)+int64(i), int64(p)); err != nil {
				return fmt.Errorf("stream index: flush: %w", err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE index_meta SET value = max(value, ?) WHERE key = 'through'`, int64(through)); err != nil {
		return fmt.Errorf("stream index: flush: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("stream index: flush: %w", err)
	}
	return nil
}

// flushLoop flushes the index every interval, or sooner when enough entries wait,
// and once more when the store closes.
func (s *Store) flushLoop() {
	defer close(s.flushDone)
	tick := time.NewTicker(s.opts.IndexFlushInterval / 8)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-s.closed:
			<-s.writerDone // no entries arrive after this
			if err := s.idx.flush(context.Background()); err != nil {
				s.log.Error("stream index: final flush failed; the next open rebuilds it from the ledger", "err", err)
			}
			return
		case <-tick.C:
		}
		if time.Since(last) < s.opts.IndexFlushInterval && s.idx.pending() < s.opts.IndexFlushEntries {
			continue
		}
		last = time.Now()
		if err := s.idx.flush(context.Background()); err != nil {
			s.log.Error("stream index: flush failed; retrying", "err", err)
		}
	}
}
