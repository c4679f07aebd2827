package sqlite_test

import (
	"context"
	"crypto/rand"
	"fmt"
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
