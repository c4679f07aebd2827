package kurrent_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/kurrent"
	"github.com/caledger/caledger/eventstore/kurrent/kurrenttest"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/eventstore/storetest"
)

// The benchmarks run the adapter over the test double and, in the same run,
// the embedded SQLite store as a baseline. The double keeps events in memory
// and never syncs, while SQLite fsyncs every commit: the comparison shows the
// adapter's and the protocol's cost, not a KurrentDB cluster's. Run, e.g.:
//
//	go test ./eventstore/kurrent -run '^$' -bench . -benchtime 2s

type backend struct {
	name string
	open func(b *testing.B) eventstore.Store
}

func backends() []backend {
	return []backend{
		{"sqlite", func(b *testing.B) eventstore.Store {
			s, err := sqlite.Open(context.Background(), b.TempDir(), sqlite.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"kurrent", func(b *testing.B) eventstore.Store {
			srv := startServer(b, kurrenttest.Options{})
			s := open(b, srv.ConnectionString("admin", "changeit"), kurrent.Options{})
			b.Cleanup(func() { s.Close() })
			return s
		}},
	}
}

func kib() []byte {
	p := make([]byte, 1024)
	rand.Read(p)
	return p
}

// BenchmarkAppend appends 1 KiB events, one per append: from one goroutine
// (the latency of a lone appender) and from 64 goroutines with a stream each
// (group commit).
func BenchmarkAppend(b *testing.B) {
	payload := kib()
	for _, be := range backends() {
		b.Run(be.name+"/1-appender", func(b *testing.B) {
			s := be.open(b)
			ctx := context.Background()
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.Append(ctx, "bench", domain.Exact(uint64(i)), storetest.NewEvent(b, "bench", payload)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
		b.Run(be.name+"/64-appenders", func(b *testing.B) {
			s := be.open(b)
			var n atomic.Int64
			b.SetParallelism(32) // 64 goroutines on 2 CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				stream := fmt.Sprint("bench-", n.Add(1))
				var v uint64
				for pb.Next() {
					a, err := s.Append(context.Background(), stream, domain.Exact(v), storetest.NewEvent(b, "bench", payload))
					if err != nil {
						b.Error(err)
						return
					}
					v = a.Version
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkReadAll reads back a ledger of 20,000 1 KiB events, decoded.
func BenchmarkReadAll(b *testing.B) {
	const n = 20_000
	payload := kib()
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			for i := 0; i < n; i += 100 {
				evs := make([]domain.Event, 100)
				for j := range evs {
					evs[j] = storetest.NewEvent(b, "bench", payload)
				}
				if _, err := s.Append(context.Background(), fmt.Sprint("s-", i%50), domain.Any, evs...); err != nil {
					b.Fatal(err)
				}
			}
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
		})
	}
}
