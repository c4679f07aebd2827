package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/caledger/caledger/eventstore/sqlitefile"
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
	err = sqlitefile.Copy(ctx, src, dst, func(ctx context.Context, db *sql.DB) (perr error) {
		head, perr = prepareCopy(ctx, db)
		return perr
	})
	if err != nil {
		return 0, fmt.Errorf("event store backup: %w", err)
	}
	return head, nil
}

// prepareCopy checks the copied ledger's format (sqlitefile.Copy checked the
// file), gives it a new log id and returns its head.
func prepareCopy(ctx context.Context, db *sql.DB) (uint64, error) {
	if err := checkFormat(ctx, db); err != nil {
		return 0, fmt.Errorf("the copy's %w", err)
	}
	id, err := randomLogID()
	if err != nil {
		return 0, err
	}
	if _, err := db.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = ?`, strconv.FormatUint(id, 10), logIDKey); err != nil {
		return 0, fmt.Errorf("new log id: %w", err)
	}
	head, err := readHead(ctx, db)
	if err != nil {
		return 0, fmt.Errorf("the copy's %w", err)
	}
	return head, nil
}
