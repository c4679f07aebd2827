package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"github.com/caledger/caledger/crypto/secretfile"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/sqlitefile"
)

// Options tune a Store. The zero value is the default.
type Options struct {
	// IndexFlushInterval is how often the in-memory stream index is written to
	// ledger-index.db (default 1s).
	IndexFlushInterval time.Duration
	// IndexFlushEntries makes a flush start early once this many entries wait
	// (default 65536). It bounds memory and the work of a reopen.
	IndexFlushEntries int
	// LogFileBytes is the size of each of the two commit log files (default 32
	// MiB, least 64 KiB). An append needing more than one file holds is refused
	// with ErrTooLarge; the default holds eventstore.MaxAppendBytes.
	LogFileBytes int64
	// Logger receives background errors (index flushes). Default: discarded.
	Logger *slog.Logger
}

// Store is the SQLite implementation of eventstore.Store. It is safe for
// concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *os.File

	wdb   *sql.DB // the drainer's connection to ledger.db (and Open's)
	wconn *sql.Conn
	rdb   *sql.DB // readers of ledger.db
	idx   *index
	clog  *commitLog
	tail  tail

	insertStmt *sql.Stmt // on wconn: one chunk

	pageStmt *sql.Stmt // on rdb: chunks from a position on
	getStmt  *sql.Stmt // on rdb: the chunk holding a position

	// commitMu makes commits one at a time, whether the writer goroutine runs
	// them or a lone caller does (writer.go); it guards stopped.
	commitMu sync.Mutex
	stopped  bool // set by Close: no commit may start
	// appending counts Appends in progress; a lone one may commit directly.
	appending atomic.Int64

	reqs       chan *request
	head       atomic.Uint64 // the last acknowledged position
	durable    atomic.Uint64 // the last position ledger.db holds durably
	failed     atomic.Pointer[error]
	committed  broadcast // after every commit
	drained    broadcast // after every drain, and when the store fails
	closed     chan struct{}
	closeOnce  sync.Once
	closeErr   error
	drainNow   chan struct{} // wakes the drainer early
	drainStop  chan struct{} // closed once no commit can start
	writerDone chan struct{}
	flushDone  chan struct{}
	drainDone  chan struct{}
	drainErr   error // the final drain's, set before drainDone closes
}

var _ eventstore.Store = (*Store)(nil)

// ErrInUse is matched by the error of Open when another process (or another
// Store in this one) has the directory open.
var ErrInUse = sqlitefile.ErrInUse

const (
	ledgerFile = "ledger.db"
	indexFile  = "ledger-index.db"
	lockFile   = "ledger.lock"
	formatKey  = "format"
	format     = "1"
	logIDKey   = "log_id"
)

// Open opens (creating if needed) the store in dir. Only one process may have a
// directory open; a second Open fails at once. Open reads back the events the
// stream index does not yet cover, so its cost grows with IndexFlushEntries, not
// with the ledger.
func Open(ctx context.Context, dir string, opts Options) (_ *Store, err error) {
	if opts.IndexFlushInterval <= 0 {
		opts.IndexFlushInterval = time.Second
	}
	if opts.IndexFlushEntries <= 0 {
		opts.IndexFlushEntries = 1 << 16
	}
	if opts.LogFileBytes <= 0 {
		opts.LogFileBytes = defaultLogBytes
	}
	opts.LogFileBytes = max(opts.LogFileBytes, minLogBytes)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	s := &Store{dir: dir, opts: opts, log: log, reqs: make(chan *request, 4096),
		closed:   make(chan struct{}),
		drainNow: make(chan struct{}, 1), drainStop: make(chan struct{}), writerDone: make(chan struct{}),
		flushDone: make(chan struct{}), drainDone: make(chan struct{})}
	defer func() {
		if err != nil {
			s.closeFiles()
		}
	}()
	if s.lock, err = sqlitefile.Lock(filepath.Join(dir, lockFile), dir); err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	if err := s.openLedger(ctx); err != nil {
		return nil, err
	}
	if err := s.recoverLog(ctx); err != nil {
		return nil, err
	}
	if s.idx, err = openIndex(ctx, filepath.Join(dir, indexFile)); err != nil {
		return nil, err
	}
	if err := s.recoverIndex(ctx); err != nil {
		return nil, err
	}
	go s.writeLoop()
	go s.flushLoop()
	go s.drainLoop()
	return s, nil
}

func (s *Store) openLedger(ctx context.Context) error {
	path := filepath.Join(s.dir, ledgerFile)
	created, err := createFile(path)
	if err != nil {
		return err
	}
	s.wdb, err = sql.Open("sqlite3", sqlitefile.DSN(path, map[string]string{
		"_journal_mode": "WAL", "_synchronous": "FULL", "_busy_timeout": "5000",
	}))
	if err != nil {
		return fmt.Errorf("event store: open ledger: %w", err)
	}
	s.wdb.SetMaxOpenConns(1)
	if s.wconn, err = s.wdb.Conn(ctx); err != nil {
		return fmt.Errorf("event store: open ledger: %w", err)
	}
	logID, err := randomLogID()
	if err != nil {
		return err
	}
	for _, q := range []string{
		// SQLite checkpoints inside the drain transaction that takes the WAL past
		// 1000 pages: off the appenders' path (drain.go).
		`PRAGMA wal_autocheckpoint = 1000`,
		`CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
		// One row per chunk of consecutive events (chunk.go).
		`CREATE TABLE IF NOT EXISTS events(first INTEGER PRIMARY KEY, last INTEGER NOT NULL, data BLOB NOT NULL)`,
		`INSERT OR IGNORE INTO meta(key, value) VALUES('` + formatKey + `', '` + format + `')`,
		// Ledgers made before the commit log get their log id here too.
		`INSERT OR IGNORE INTO meta(key, value) VALUES('` + logIDKey + `', '` + strconv.FormatUint(logID, 10) + `')`,
	} {
		if _, err := s.wconn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("event store: prepare ledger: %w", err)
		}
	}
	if created {
		// The new file's directory entry must survive a crash too.
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	if err := checkFormat(ctx, s.wconn); err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	var id string
	if err := s.wconn.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, logIDKey).Scan(&id); err != nil {
		return fmt.Errorf("event store: read log id: %w", err)
	}
	if logID, err = strconv.ParseUint(id, 10, 64); err != nil {
		return fmt.Errorf("event store: log id %q: %w", id, err)
	}
	if s.clog, err = openCommitLog(s.dir, s.opts.LogFileBytes, logID); err != nil {
		return err
	}
	if s.insertStmt, err = s.wconn.PrepareContext(ctx, `INSERT OR REPLACE INTO events(first, last, data) VALUES(?, ?, ?)`); err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	head, err := readHead(ctx, s.wconn)
	if err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	s.head.Store(head)
	s.rdb, err = sql.Open("sqlite3", sqlitefile.DSN(path, map[string]string{"_query_only": "true", "_busy_timeout": "5000"}))
	if err != nil {
		return fmt.Errorf("event store: open ledger: %w", err)
	}
	s.rdb.SetMaxOpenConns(8)
	s.rdb.SetMaxIdleConns(8)
	// Chunks from the one that holds position ?1 on, and the chunk that holds ?1.
	if s.pageStmt, err = s.rdb.PrepareContext(ctx, `SELECT first, last, data FROM events
		WHERE first >= coalesce((SELECT max(first) FROM events WHERE first <= ?1), 0) ORDER BY first LIMIT ?2`); err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	if s.getStmt, err = s.rdb.PrepareContext(ctx, `SELECT first, last, data FROM events WHERE first <= ? ORDER BY first DESC LIMIT 1`); err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	return nil
}

// recoverLog writes to ledger.db, durably, the chunks the commit log holds past
// its head: commits acknowledged (or under way) when the process stopped that the
// drainer had not written yet. After it, ledger.db holds every acknowledged event
// and both log files may be reused, under a new log id.
func (s *Store) recoverLog(ctx context.Context) error {
	head := s.head.Load()
	cs, err := s.clog.unapplied(head)
	if gap := (*gapError)(nil); errors.As(err, &gap) {
		return &eventstore.CorruptError{Position: gap.missing, Err: err}
	}
	if err != nil {
		return err
	}
	if len(cs) > 0 {
		// Through the drainer's own path: into the tail, then into ledger.db.
		s.tail.add(cs)
		for {
			n, err := s.drain(ctx)
			if err != nil {
				return fmt.Errorf("event store: replay the commit log: %w", err)
			}
			if n == 0 {
				break
			}
		}
		head = cs[len(cs)-1].last
		s.log.Info("replayed commit log records into the ledger", "from", cs[0].first, "through", head)
	}
	// What the files hold past the head was never acknowledged: the records of
	// a torn commit, checksums intact. New commits reuse their positions, and a
	// second crash before the drain would replay them with (or instead of) the
	// new ones. A new log id voids every record written so far; it is durable
	// (synchronous=FULL) before any commit is written under it.
	id, err := randomLogID()
	if err != nil {
		return err
	}
	if _, err := s.wconn.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = ?`, strconv.FormatUint(id, 10), logIDKey); err != nil {
		return fmt.Errorf("event store: new log id: %w", err)
	}
	s.clog.id = id
	s.head.Store(head)
	s.durable.Store(head)
	return nil
}

// recoverIndex brings the stream index up to the ledger's head: entries past the
// head (the index can only be ahead if ledger.db was replaced) are dropped, and the
// events it does not cover are read back into memory.
func (s *Store) recoverIndex(ctx context.Context) error {
	head := s.head.Load()
	through, err := s.idx.through(ctx)
	if err != nil {
		return err
	}
	if through > head {
		s.log.Warn("stream index is ahead of the ledger; trimming it", "index_through", through, "head", head)
		if err := s.idx.trim(ctx, head); err != nil {
			return err
		}
		through = head
	}
	var entries []entry
	for e, err := range s.readAll(ctx, through+1, head) {
		if err != nil {
			return err
		}
		entries = append(entries, entry{stream: e.Stream, version: e.Version, position: e.Position})
		if len(entries) >= s.opts.IndexFlushEntries {
			s.idx.add(entries)
			entries = entries[:0]
			if err := s.idx.flush(ctx); err != nil {
				return err
			}
		}
	}
	s.idx.add(entries)
	return nil
}

// Head implements eventstore.Store.
func (s *Store) Head(ctx context.Context) (uint64, error) {
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	return s.head.Load(), nil
}

func (s *Store) usable(ctx context.Context) error {
	select {
	case <-s.closed:
		return eventstore.ErrClosed
	default:
	}
	return ctx.Err()
}

// Close implements eventstore.Store.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		<-s.writerDone
		s.commitMu.Lock() // waits for a caller's commit under way
		s.stopped = true
		s.commitMu.Unlock()
		// The drainer runs until here: a commit may wait for it to free a log file.
		close(s.drainStop)
		<-s.drainDone
		<-s.flushDone
		s.closeErr = errors.Join(s.drainErr, s.closeFiles())
	})
	return s.closeErr
}

func (s *Store) closeFiles() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.pageStmt, s.getStmt, s.insertStmt} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.wconn != nil {
		errs = append(errs, s.wconn.Close())
	}
	for _, db := range []*sql.DB{s.wdb, s.rdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if s.clog != nil {
		errs = append(errs, s.clog.close())
	}
	if s.idx != nil {
		errs = append(errs, s.idx.close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // releases the flock
	}
	return errors.Join(errs...)
}

// broadcast wakes every goroutine waiting on it at once: a waiter takes the
// channel before checking its condition, and wake closes it and starts a new one.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) wake() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

func randomLogID() (uint64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("event store: %w", err)
	}
	// Positive as an SQLite integer and never zero.
	return binary.BigEndian.Uint64(b[:])>>1 | 1, nil
}

// queryRower is a *sql.DB or *sql.Conn.
type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// readHead returns the position of the ledger's last event (0: none). The
// last chunk by primary key: one row read, where max(last) would scan them
// all.
func readHead(ctx context.Context, q queryRower) (uint64, error) {
	var head int64
	err := q.QueryRowContext(ctx, `SELECT last FROM events ORDER BY first DESC LIMIT 1`).Scan(&head)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("read head: %w", err)
	}
	return uint64(head), nil
}

// checkFormat checks that the ledger's format is the one this version
// writes.
func checkFormat(ctx context.Context, q queryRower) error {
	var f string
	if err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, formatKey).Scan(&f); err != nil {
		return fmt.Errorf("ledger format: %w", err)
	}
	if f != format {
		return fmt.Errorf("ledger format %q is not supported by this version (want %q)", f, format)
	}
	return nil
}

// createFile makes sure path exists with mode 0600 before SQLite opens it
// (sqlitefile.Create). It reports whether it created the file.
func createFile(path string) (bool, error) {
	created, _, err := sqlitefile.Create(path)
	if err != nil {
		return false, fmt.Errorf("event store: %w", err)
	}
	return created, nil
}

func syncDir(dir string) error {
	if err := secretfile.SyncDir(dir); err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	return nil
}

// decodeAt decodes the event stored at position and checks it sits there.
func decodeAt(position uint64, data []byte) (domain.Event, error) {
	e, err := domain.Decode(data)
	if err != nil {
		return e, &eventstore.CorruptError{Position: position, Err: err}
	}
	if e.Position != position {
		return e, &eventstore.CorruptError{Position: position, Err: fmt.Errorf("event claims position %d", e.Position)}
	}
	return e, nil
}
