package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/caledger/caledger/crypto/secretfile"
)

// readFileLimit reads the file at path, refusing one of more than limit
// bytes.
func readFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// writeFileAtomic writes data to path with mode perm so that path holds
// either its old content or all of data, even across a crash: it writes a
// temporary file in the same directory, syncs it, renames it over path and
// syncs the directory.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = func() error {
		defer f.Close()
		// Chmod, not the umask-dependent create mode, sets the final mode.
		if err := f.Chmod(perm); err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	}()
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return secretfile.SyncDir(dir)
}

// maxJSONFile bounds what jsonFile reads.
const maxJSONFile = 64 << 10

// jsonFile keeps a T as JSON in a file, replaced atomically (a checkpoint).
// A missing file loads as T's zero value.
type jsonFile[T any] struct{ path string }

func (f jsonFile[T]) Load(context.Context) (T, error) {
	var v T
	b, err := readFileLimit(f.path, maxJSONFile)
	if errors.Is(err, fs.ErrNotExist) {
		return v, nil
	}
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		var zero T
		return zero, fmt.Errorf("%s: %w", f.path, err)
	}
	return v, nil
}

func (f jsonFile[T]) Save(_ context.Context, v T) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFileAtomic(f.path, b, 0o600)
}
