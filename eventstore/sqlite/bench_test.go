package sqlite_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/eventstore/storetest"
)

// The figures users care about come from sims/ledgerbench, which measures a
// baseline in the same run. These benchmarks are for profiling single paths.

func benchStore(b *testing.B) *sqlite.Store {
	s, err := sqlite.Open(context.Background(), b.TempDir(), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func kib(b *testing.B) []byte {
	p := make([]byte, 1024)
	rand.Read(p)
	return p
}

// BenchmarkAppendAlone appends 1 KiB events from one goroutine, to one stream.
func BenchmarkAppendAlone(b *testing.B) {
	s := benchStore(b)
	payload := kib(b)
	var version uint64
	for b.Loop() {
		a, err := s.Append(context.Background(), "bench", domain.Exact(version), storetest.NewEvent(b, "bench", payload))
		if err != nil {
			b.Fatal(err)
		}
		version = a.Version
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendParallel appends 1 KiB events from 64 goroutines, one stream each.
func BenchmarkAppendParallel(b *testing.B) {
	s := benchStore(b)
	payload := kib(b)
	var n atomic.Int64
	b.SetParallelism(32) // 64 goroutines on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		stream := fmt.Sprintf("bench-%d", n.Add(1))
		for pb.Next() {
			if _, err := s.Append(context.Background(), stream, domain.Any, storetest.NewEvent(b, "bench", payload)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkReadAll reads back a ledger of 1 KiB events.
func BenchmarkReadAll(b *testing.B) {
	s := benchStore(b)
	payload := kib(b)
	const n = 50_000
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n / 50 {
				if _, err := s.Append(context.Background(), fmt.Sprint("s-", w), domain.Any, storetest.NewEvent(b, "bench", payload)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ResetTimer()
	for range b.N {
		count := 0
		for _, err := range s.ReadAll(context.Background(), 1) {
			if err != nil {
				b.Fatal(err)
			}
			count++
		}
		if count != n {
			b.Fatalf("read %d events", count)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
}

// backupLedger makes a ledger of 100,000 events of 1 KiB (about 100 MiB),
// appended 100 at a time, and returns its directory with a store open on it
// (closed when the benchmark ends) and ledger.db holding every event.
func backupLedger(b *testing.B) string {
	dir := b.TempDir()
	s, err := sqlite.Open(context.Background(), dir, sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	payload := kib(b)
	for i := range 1000 {
		es := make([]domain.Event, 100)
		for j := range es {
			es[j] = storetest.NewEvent(b, "bench", payload)
		}
		if _, err := s.Append(context.Background(), fmt.Sprintf("bench-%d", i), domain.NoStream, es...); err != nil {
			b.Fatal(err)
		}
	}
	// Closed, ledger.db holds every event; reopened, the store is live again.
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	live, err := sqlite.Open(context.Background(), dir, sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { live.Close() })
	return dir
}

// BenchmarkBackup copies that ledger with Backup beside the open store (the
// path of a running server): VACUUM INTO, the check, the new log id, fsync.
// BenchmarkRawCopy is its baseline: a plain copy of ledger.db and an fsync.
func BenchmarkBackup(b *testing.B) {
	dir := backupLedger(b)
	out := b.TempDir()
	i := 0
	var size int64
	for b.Loop() {
		i++
		dst := filepath.Join(out, fmt.Sprintf("ledger-%d.db", i))
		head, err := sqlite.Backup(context.Background(), dir, dst, sqlite.Options{})
		if err != nil || head != 100_000 {
			b.Fatalf("backup: head %d, %v", head, err)
		}
		fi, _ := os.Stat(dst)
		size = fi.Size()
		os.Remove(dst)
	}
	b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds()/(1<<20), "MiB/s")
}

func BenchmarkRawCopy(b *testing.B) {
	dir := backupLedger(b)
	out := b.TempDir()
	i := 0
	var size int64
	for b.Loop() {
		i++
		dst := filepath.Join(out, fmt.Sprintf("ledger-%d.db", i))
		in, err := os.Open(filepath.Join(dir, "ledger.db"))
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(dst)
		if err != nil {
			b.Fatal(err)
		}
		if size, err = io.Copy(f, in); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		in.Close()
		os.Remove(dst)
	}
	b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds()/(1<<20), "MiB/s")
}
