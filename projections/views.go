package projections

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlitefile"
)

// Source is the part of the ledger the views read. eventstore.Store implements it.
type Source interface {
	// Follow yields every event from position from on, in order, with no gap,
	// then waits for new ones until ctx ends (it then yields ctx's error) or the
	// ledger closes.
	Follow(ctx context.Context, from uint64) iter.Seq2[domain.Event, error]
	// Head returns the position of the last committed event (0: empty ledger).
	Head(ctx context.Context) (uint64, error)
}

// Options configure Open. Sealer is required; the zero value of every other field
// is its default.
type Options struct {
	// Sealer opens the sealed attributes of subject events for the subjects view.
	Sealer domain.Sealer
	// Logger receives skipped event types and checkpoint failures, never personal
	// data. Default: discarded.
	Logger *slog.Logger
	// Now is the clock Lag measures ages with. Default: time.Now.
	Now func() time.Time
	// BatchSize is the most events applied in one transaction (default 1000).
	// Run commits earlier whenever no further event is ready to apply.
	BatchSize int
	// StatusCacheEntries bounds the CertificateStatus answers kept in memory
	// (default DefaultStatusCacheEntries); a negative value turns the cache off.
	StatusCacheEntries int
}

// Errors. Match them with errors.Is.
var (
	// ErrNotFound: no row matches.
	ErrNotFound = errors.New("projections: not found")
	// ErrClosed: the views were closed.
	ErrClosed = errors.New("projections: views are closed")
	// ErrBusy: Run or Rebuild is already running on these views.
	ErrBusy = errors.New("projections: Run or Rebuild is already running")
	// ErrInvalidQuery: a query's arguments are not acceptable. Its message never
	// repeats the arguments, which may be personal data.
	ErrInvalidQuery = errors.New("projections: invalid query")
)

const (
	defaultBatchSize = 1000
	// maxBatchDelay bounds how long applied events wait for their commit when the
	// ledger is read slower than it is applied.
	maxBatchDelay = 50 * time.Millisecond
)

// Views are the read models of one ledger, in one SQLite file. They are safe for
// concurrent use: queries run on a pool of read connections while Run (or
// Rebuild) applies events on the one write connection.
type Views struct {
	path string
	log  *slog.Logger
	now  func() time.Time
	seal domain.Sealer
	size int
	lock *os.File

	wdb *sql.DB // one connection: every write and every WAL checkpoint
	rdb *sql.DB // queries

	statusStmt *sql.Stmt    // CertificateStatus
	status     *statusCache // CertificateStatus answers; nil when off
	certStmt   *sql.Stmt    // Certificate

	// active is held by Run and Rebuild for their whole run; the fields below it
	// are used only by its holder.
	active          sync.Mutex
	ids             [numProjections]domain.EventID // of the events at the committed checkpoints
	truncatePending bool
	skipped         map[string]bool // event types already logged as skipped

	mu      sync.Mutex
	applied [numProjections]uint64 // committed checkpoints
	// verified is set once Run has checked the checkpoints against the ledger
	// (or Rebuild has reset them): until then WaitFor trusts none of them.
	verified bool
	notify   chan struct{} // closed and replaced after every commit

	stop      context.Context // done once Close starts
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error

	// onApply, when set (by tests), is called for every event a projection applies.
	onApply func(projection string, position uint64)
	// onStatusRead, when set (by tests), is called by CertificateStatus between
	// its SQLite read and its store in the cache.
	onStatusRead func()
}

// Open opens (creating if needed) the views file at path, with mode 0600 and its
// directory with mode 0700: the subjects view holds personal data. Only one
// process may have the file open. A projection whose stored layout differs from
// this program's is emptied, and Run rebuilds it alone.
func Open(ctx context.Context, path string, opts Options) (_ *Views, err error) {
	if opts.Sealer == nil {
		return nil, errors.New("projections: Options.Sealer is required")
	}
	v := &Views{seal: opts.Sealer, log: opts.Logger, now: opts.Now, size: opts.BatchSize,
		notify: make(chan struct{}), skipped: map[string]bool{}, status: newStatusCache(opts.StatusCacheEntries)}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.size <= 0 {
		v.size = defaultBatchSize
	}
	v.stop, v.cancel = context.WithCancel(context.Background())
	if v.path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	defer func() {
		if err != nil {
			v.closeFiles()
		}
	}()
	if err := createFile(v.path); err != nil {
		return nil, err
	}
	if v.lock, err = sqlitefile.Lock(v.path+".lock", v.path); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	v.wdb = sql.OpenDB(newConnector(v.path, map[string]string{
		"_journal_mode": "WAL", "_synchronous": "NORMAL", "_secure_delete": "on",
		"_busy_timeout": "5000", "_txlock": "immediate", "_stmt_cache_size": "32",
	}))
	v.wdb.SetMaxOpenConns(1)
	v.wdb.SetMaxIdleConns(1)
	v.wdb.SetConnMaxLifetime(0)
	v.wdb.SetConnMaxIdleTime(0)
	if err := checkSettings(ctx, v.wdb); err != nil {
		return nil, err
	}
	if err := v.initSchema(ctx); err != nil {
		return nil, err
	}
	v.rdb = sql.OpenDB(newConnector(v.path, map[string]string{
		"_query_only": "true", "_secure_delete": "on", "_busy_timeout": "5000", "_stmt_cache_size": "16",
	}))
	v.rdb.SetMaxOpenConns(8)
	v.rdb.SetMaxIdleConns(8)
	if err := checkSettings(ctx, v.rdb); err != nil {
		return nil, err
	}
	if v.statusStmt, err = v.rdb.PrepareContext(ctx, statusSQL); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	if v.certStmt, err = v.rdb.PrepareContext(ctx, selectCertificateSQL); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	return v, nil
}

// Close stops a running Run or Rebuild (which commit what they applied and
// return), waits for it, and closes the file.
func (v *Views) Close() error {
	v.closeOnce.Do(func() {
		v.cancel()
		v.active.Lock()
		defer v.active.Unlock()
		v.closeErr = v.closeFiles()
		v.mu.Lock()
		close(v.notify) // wakes WaitFor, which then sees stop
		v.notify = make(chan struct{})
		v.mu.Unlock()
	})
	return v.closeErr
}

func (v *Views) closeFiles() error {
	var errs []error
	for _, s := range []*sql.Stmt{v.statusStmt, v.certStmt} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	for _, db := range []*sql.DB{v.rdb, v.wdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if v.lock != nil {
		errs = append(errs, v.lock.Close()) // releases the flock
	}
	return errors.Join(errs...)
}

func (v *Views) closed() bool { return v.stop.Err() != nil }

// Checkpoints returns each projection's checkpoint: the position of the last
// ledger event it has applied and committed. Keys are "certificates", "subjects",
// "revocations" and "access-log".
func (v *Views) Checkpoints() map[string]uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := make(map[string]uint64, numProjections)
	for i, p := range projections {
		m[p.name] = v.applied[i]
	}
	return m
}

// minApplied returns the lowest committed checkpoint (0 until verified) and the
// channel that is closed at the next commit.
func (v *Views) minApplied() (uint64, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.verified {
		return 0, v.notify
	}
	return minOf(v.applied), v.notify
}

func minOf(cps [numProjections]uint64) uint64 {
	m := cps[0]
	for _, c := range cps[1:] {
		m = min(m, c)
	}
	return m
}

// publish makes checkpoints that match the ledger visible to WaitFor.
func (v *Views) publish(cps [numProjections]uint64) {
	v.mu.Lock()
	v.applied, v.verified = cps, true
	close(v.notify)
	v.notify = make(chan struct{})
	v.mu.Unlock()
}

// WaitFor returns once every projection has applied position p and committed it,
// for a caller that wants to read its own write (the position an append
// returned). It fails with ctx's error when ctx ends first, and with ErrClosed
// when the views close. Checkpoints read from the file count only once Run has
// checked them against the ledger.
func (v *Views) WaitFor(ctx context.Context, p uint64) error {
	for {
		applied, wake := v.minApplied()
		if applied >= p {
			return nil
		}
		if v.closed() {
			return ErrClosed
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-v.stop.Done():
			return ErrClosed
		}
	}
}

// Lag is how far a projection is behind the ledger.
type Lag struct {
	// Events is the number of ledger events the projection has not applied.
	Events uint64
	// Age is how long the oldest of them has been in the ledger (by the event's
	// time and Options.Now); zero when Events is zero.
	Age time.Duration
}

// Lag reports each projection's lag behind src, keyed like Checkpoints. It reads
// the ledger's head and, for a projection that is behind, the first event it has
// not applied: cheap enough for every metrics scrape.
func (v *Views) Lag(ctx context.Context, src Source) (map[string]Lag, error) {
	head, err := src.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("projections: ledger head: %w", err)
	}
	return v.LagAt(ctx, src, head)
}

// LagAt is Lag for a caller that has read src's head already (a metrics
// scrape that reports the head too). A checkpoint past head counts as caught
// up.
func (v *Views) LagAt(ctx context.Context, src Source, head uint64) (map[string]Lag, error) {
	cps := v.Checkpoints()
	ages := map[uint64]time.Duration{} // by checkpoint: projections usually share one
	out := make(map[string]Lag, len(cps))
	for name, cp := range cps {
		if cp >= head {
			out[name] = Lag{}
			continue
		}
		age, ok := ages[cp]
		if !ok {
			e, err := EventAt(ctx, src, cp+1)
			if err != nil {
				return nil, err
			}
			age = max(0, v.now().Sub(e.Time))
			ages[cp] = age
		}
		out[name] = Lag{Events: head - cp, Age: age}
	}
	return out, nil
}

// connector opens go-sqlite3 connections with a DSN and sets temp_store=MEMORY,
// which no DSN parameter does: sorts and temporary indexes over personal data must
// not spill into temporary files.
type connector struct {
	dsn string
	drv *sqlite3.SQLiteDriver
}

func newConnector(path string, params map[string]string) connector {
	return connector{dsn: sqlitefile.DSN(path, params), drv: &sqlite3.SQLiteDriver{
		ConnectHook: func(c *sqlite3.SQLiteConn) error {
			_, err := c.Exec("PRAGMA temp_store = MEMORY", nil)
			return err
		},
	}}
}

func (c connector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c connector) Driver() driver.Driver                        { return c.drv }

// checkSettings reads the settings back from a pooled connection rather than
// trusting the DSN: a parameter the driver ignored would silently void the
// erasure guarantee.
func checkSettings(ctx context.Context, db *sql.DB) error {
	var mode string
	var secure, temp int
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	if err := db.QueryRowContext(ctx, "PRAGMA secure_delete").Scan(&secure); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	if err := db.QueryRowContext(ctx, "PRAGMA temp_store").Scan(&temp); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	if mode != "wal" || secure != 1 || temp != 2 {
		return fmt.Errorf("projections: connection settings journal_mode=%s secure_delete=%d temp_store=%d, want wal, 1, 2 (memory)", mode, secure, temp)
	}
	return nil
}

// createFile makes sure path exists with mode 0600 before SQLite opens it, and
// refuses a file that group or others can read: the views hold personal data.
func createFile(path string) error {
	_, mode, err := sqlitefile.Create(path)
	if err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	if perm := mode.Perm(); perm&0o077 != 0 {
		return fmt.Errorf("projections: %s has mode %04o, which lets group or others read personal data; run chmod 600 %s", path, perm, path)
	}
	return nil
}
