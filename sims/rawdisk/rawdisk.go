// Package rawdisk measures the baseline every durability figure in sims is
// compared with: how many durable 4 KiB writes per second the disk under a
// directory takes, in a loop with nothing around it.
package rawdisk

import (
	"crypto/rand"
	"errors"
	"os"
	"syscall"
	"time"
)

// RefuseTmpfs stops a measurement on a RAM file system, where a sync costs nothing.
func RefuseTmpfs(dir string) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err
	}
	const tmpfsMagic = 0x01021994
	if st.Type == tmpfsMagic {
		return errors.New(dir + " is on tmpfs; sync figures would be meaningless")
	}
	return nil
}

// SyncRate measures for d the disk's rate of durable 4 KiB writes in dir, each
// followed by fsync, over a preallocated file.
func SyncRate(dir string, d time.Duration) (float64, error) { return rate(dir, d, false) }

// DatasyncRate is SyncRate with fdatasync, which the ledger's commit log calls.
func DatasyncRate(dir string, d time.Duration) (float64, error) { return rate(dir, d, true) }

func rate(dir string, d time.Duration, data bool) (float64, error) {
	f, err := os.CreateTemp(dir, "rawsync-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	const blocks = 256
	if _, err := f.Write(make([]byte, blocks*4096)); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	buf := make([]byte, 4096)
	rand.Read(buf)
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := f.WriteAt(buf, int64(n%blocks)*4096); err != nil {
			return 0, err
		}
		if data {
			err = Fdatasync(f)
		} else {
			err = f.Sync() // retries EINTR itself
		}
		if err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// Fdatasync is fdatasync(2) retried on EINTR, as os.File.Sync does for fsync
// and as the ledger's commit log does: a signal (the Go runtime's preemption
// among them) must not end a measurement.
func Fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
