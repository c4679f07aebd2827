// Package sqlitefile prepares the SQLite files of the rebuildable read models
// (the views and the Merkle tree): the file made with mode 0600 before SQLite
// opens it, an exclusive lock so that one process writes it, and the
// go-sqlite3 data source name with the pragmas every pooled connection gets.
package sqlitefile

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

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
// making its directory 0700 when missing. It returns the file's mode: a file
// that existed keeps its own, for the caller to judge.
func Create(path string) (fs.FileMode, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return 0o600, f.Close()
	}
	if !errors.Is(err, os.ErrExist) {
		return 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", path)
	}
	return fi.Mode(), nil
}

// Lock takes an exclusive flock on lockPath (made 0600 when missing) for the
// file it guards, so that one process at a time writes that file. The caller
// closes the returned file to release the lock.
func Lock(lockPath, guarded string) (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another process", guarded)
		}
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	return f, nil
}
