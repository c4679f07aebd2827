// Package secretfile reads files that hold secrets in the clear (the local KEK,
// the checkpoint signing key): regular files that grant no access to group or
// others, of bounded size. The checks are made on the open file, not the path,
// so a chmod or a swap between the check and the read cannot slip past them.
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
