// Package sqlitefile holds what every SQLite file of caledger needs, the
// ledger's (eventstore/sqlite), the key vault's (crypto/keyvault) and the
// rebuildable read models' (projections): the file made with mode 0600 before
// SQLite opens it, an exclusive lock so that one process writes it, the
// go-sqlite3 data source name with the pragmas every pooled connection gets,
// and a consistent, compacted copy for backups.
package sqlitefile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver Copy uses

	"github.com/caledger/caledger/crypto/secretfile"
)

// ErrInUse is matched by the error of Lock when another process (or another
// open file in this one) holds the lock.
var ErrInUse = errors.New("in use by another process")

// DSN builds a go-sqlite3 data source name for path; the params (pragmas and
// driver options) apply to every connection the pool opens.
func DSN(path string, params map[string]string) string {
	q := url.Values{}
	for k, p := range params {
		q.Set(k, p)
	}
	// The path is part of a URI: characters that start its query or fragment,
	// and the escape character itself, must be escaped.
	p := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + p + "?" + q.Encode()
}

// Create makes sure path exists with mode 0600 before SQLite opens it (SQLite
// would create it 0644, and gives the -wal and -shm files the same mode),
// making its directory 0700 when missing. It reports whether it created the
// file, and the file's mode: a file that existed keeps its own, for the caller
// to judge. A caller that needs the new file's name to survive a crash syncs
// its directory (SyncDir) once the file holds what makes it valid.
func Create(path string) (created bool, mode fs.FileMode, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, 0, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return true, 0o600, f.Close()
	}
	if !errors.Is(err, os.ErrExist) {
		return false, 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, 0, err
	}
	if !fi.Mode().IsRegular() {
		return false, 0, fmt.Errorf("%s is not a regular file", path)
	}
	return false, fi.Mode(), nil
}

// Lock takes an exclusive flock on lockPath (made 0600 when missing) for what
// it guards (named in the error), so that one process at a time writes it. The
// caller closes the returned file to release the lock.
func Lock(lockPath, guarded string) (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is %w", guarded, ErrInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	return f, nil
}

// SyncFile syncs the file path and its directory.
func SyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err // an *fs.PathError: it names the operation and path
	}
	return secretfile.SyncDir(filepath.Dir(path))
}

// busyTimeout is how long Copy's connection waits for a lock held elsewhere,
// in milliseconds.
const busyTimeout = "5000"

// Copy writes to dst, a file that must not exist, a consistent copy of the
// database src, which may be open meanwhile, in this process or another (a
// running server): SQLite copies it inside one read transaction (VACUUM INTO),
// which holds the live rows only, none of the free pages of src or its -wal.
// The copy gets mode 0600 and must pass SQLite's quick_check, then check (if
// not nil), which makes the caller's own checks and changes on a connection to
// the copy; the copy is then synced, with its directory. On an error dst is
// removed.
//
// The connection to src sets only a busy timeout (go-sqlite3 adds its own
// per-connection defaults) and writes nothing to its content; it reads inside
// SQLite's locks, so a writer in another process goes on meanwhile. (As any
// SQLite connection, the last one to close a WAL database checkpoints it.)
func Copy(ctx context.Context, src, dst string, check func(context.Context, *sql.DB) error) (err error) {
	if _, err := os.Stat(src); err != nil {
		return err
	}
	// VACUUM INTO writes into an empty file; creating it first gives it mode
	// 0600 instead of one the umask decides.
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err // dst is not this call's: it is left alone
	}
	defer func() {
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := f.Close(); err != nil {
		return err
	}
	db, err := sql.Open("sqlite3", DSN(src, map[string]string{"_busy_timeout": busyTimeout}))
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, dst)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(src), err)
	}
	c, err := sql.Open("sqlite3", DSN(dst, map[string]string{"_synchronous": "FULL"}))
	if err != nil {
		return err
	}
	var result string
	err = c.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&result)
	switch {
	case err != nil:
		err = fmt.Errorf("check the copy: %w", err)
	case result != "ok":
		err = fmt.Errorf("check the copy: %s", result)
	case check != nil:
		err = check(ctx, c)
	}
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return SyncFile(dst)
}
