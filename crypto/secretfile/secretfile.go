// Package secretfile reads files that hold secrets in the clear (the local KEK,
// the checkpoint signing key): regular files that grant no access to group or
// others, of bounded size. The checks are made on the open file, not the path,
// so a chmod or a swap between the check and the read cannot slip past them.
// SyncDir makes the creation, renaming or removal of such a file (and of the
// wrapped CA key files, and of the SQLite files) durable. It has no cgo, so
// every package calls it, those that must not link SQLite included.
package secretfile

import (
	"fmt"
	"io"
	"os"
)

// Read returns the content of the file at path, refusing a file that is not
// regular, that group or others may access, or that is over limit bytes. Its
// errors name the path and the remedy, never the content.
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o, so group or others can read a secret; run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// SyncDir syncs the directory dir, so that the files created, renamed or
// removed in it stay so after a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err // an *fs.PathError: it names the operation and dir
}
