package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Backup writes to dst, a file that must not exist, a consistent copy of the
// ledger in dir, and returns the copy's head: the position of the last event
// it holds.
//
// If no process has dir open, Backup first opens and closes the store, which
// replays into ledger.db the commits only the commit log holds (those of a
// process killed before its drain): the copy then holds every acknowledged
// event. If a process has dir open (a running server), Backup copies what
// ledger.db holds at one instant, in one read transaction: a prefix of the
// ledger that lacks at most the commits of the last drain interval (tens of
// milliseconds). That prefix is the backup's point in time.
//
// The copy is a ledger.db alone, compacted (VACUUM INTO), checked, synced, and
// given a new log id, so that no commit log record written under the source's
// id can ever be replayed into it. Open on a directory holding only the copy
// (named ledger.db) makes new commit log files and rebuilds the stream index.
//
// opts are those the store is opened with (for the commit log's file size).
func Backup(ctx context.Context, dir, dst string, opts Options) (head uint64, err error) {
	src := filepath.Join(dir, ledgerFile)
	if _, err := os.Stat(src); err != nil {
		return 0, fmt.Errorf("event store backup: %w", err)
	}
	s, err := Open(ctx, dir, opts)
	switch {
	case err == nil:
		if err := s.Close(); err != nil {
			return 0, fmt.Errorf("event store backup: %w", err)
		}
	case !errors.Is(err, ErrInUse):
		return 0, fmt.Errorf("event store backup: %w", err)
	}
	// VACUUM INTO writes into an empty file; creating it first gives it mode
	// 0600 instead of one the umask decides.
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, fmt.Errorf("event store backup: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("event store backup: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := vacuumInto(ctx, src, dst); err != nil {
		return 0, fmt.Errorf("event store backup: %w", err)
	}
	if head, err = prepareCopy(ctx, dst); err != nil {
		return 0, fmt.Errorf("event store backup: %w", err)
	}
	f, err = os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("event store backup: %w", err)
	}
	serr := f.Sync()
	if cerr := f.Close(); serr == nil {
		serr = cerr
	}
	if serr != nil {
		return 0, fmt.Errorf("event store backup: sync %s: %w", dst, serr)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return 0, fmt.Errorf("event store backup: %w", err)
	}
	return head, nil
}

// vacuumInto copies the database src into the empty file dst. The connection
// sets no pragma and writes nothing to src's content; it reads inside SQLite's
// locks, so a writer in another process goes on meanwhile. (As any SQLite
// connection, the last one to close a WAL database checkpoints it.)
func vacuumInto(ctx context.Context, src, dst string) error {
	db, err := sql.Open("sqlite3", dsn(src, map[string]string{"_busy_timeout": "5000"}))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dst); err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(src), err)
	}
	return nil
}

// prepareCopy checks the copied ledger, gives it a new log id and returns its
// head.
func prepareCopy(ctx context.Context, path string) (uint64, error) {
	db, err := sql.Open("sqlite3", dsn(path, map[string]string{"_synchronous": "FULL"}))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var check string
	if err := db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&check); err != nil {
		return 0, fmt.Errorf("check the copy: %w", err)
	}
	if check != "ok" {
		return 0, fmt.Errorf("check the copy: %s", check)
	}
	var f string
	if err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, formatKey).Scan(&f); err != nil {
		return 0, fmt.Errorf("read the copy's format: %w", err)
	}
	if f != format {
		return 0, fmt.Errorf("ledger format %q is not supported by this version (want %q)", f, format)
	}
	id, err := randomLogID()
	if err != nil {
		return 0, err
	}
	if _, err := db.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = ?`, strconv.FormatUint(id, 10), logIDKey); err != nil {
		return 0, fmt.Errorf("new log id: %w", err)
	}
	var head int64
	err = db.QueryRowContext(ctx, `SELECT last FROM events ORDER BY first DESC LIMIT 1`).Scan(&head)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("read the copy's head: %w", err)
	}
	return uint64(head), nil
}
