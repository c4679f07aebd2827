package projections

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"iter"
	"math/big"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// sliceSource is a ledger in memory, so that a benchmark measures the views.
type sliceSource []domain.Event

func (s sliceSource) Head(context.Context) (uint64, error) { return uint64(len(s)), nil }

func (s sliceSource) Follow(ctx context.Context, from uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		for p := max(from, 1); p <= uint64(len(s)); p++ {
			if !yield(s[p-1], nil) {
				return
			}
		}
		<-ctx.Done()
		yield(domain.Event{}, ctx.Err())
	}
}

// certificateEvents returns n events of the certificate lifecycle: every
// certificate is issued, every 4th is revoked, every 8th then deleted. Each
// issuance carries a 1 KiB sealed part, as a real one (DER and CSR) would.
func certificateEvents(b testing.TB, n int) (events []domain.Event, serials []domain.Serial) {
	ciphertext := make([]byte, 1024)
	rand.Read(ciphertext)
	add := func(stream string, version uint64, p domain.Payload, sealed *domain.Sealed) {
		public, err := domain.MarshalPublic(p)
		if err != nil {
			b.Fatal(err)
		}
		id, _ := domain.NewEventID(rand.Reader)
		events = append(events, domain.Event{Position: uint64(len(events) + 1), Stream: stream, Version: version, ID: id,
			Type: p.EventType(), Schema: p.SchemaVersion(), Time: start.Add(time.Duration(len(events)) * time.Millisecond),
			Actor: officer, Public: public, Sealed: sealed})
	}
	for i := 0; len(events) < n; i++ {
		serial := domain.Serial(new(big.Int).SetInt64(1<<62 + int64(i)*7919).Text(16))
		subject := domain.SubjectID(fmt.Sprintf("%032x", i/3))
		stream := domain.CertificateStream(serial)
		ca := "issuing"
		if i%5 == 0 {
			ca = "other-ca"
		}
		add(stream, 1, domain.CertificateIssued{Serial: serial, CAID: ca, SubjectID: subject, Profile: "tls-client",
			NotBefore: start, NotAfter: start.AddDate(1, 0, 0), SPKISHA256: fmt.Sprintf("%064x", i)},
			&domain.Sealed{SubjectID: subject, KeyGroup: domain.GroupIdentity, KeyID: 1, Ciphertext: ciphertext})
		serials = append(serials, serial)
		if i%4 == 0 {
			add(stream, 2, domain.CertificateRevoked{Serial: serial, CAID: ca, Reason: domain.ReasonKeyCompromise, RevokedAt: start}, nil)
		}
		if i%8 == 0 {
			add(stream, 3, domain.CertificateDeleted{Serial: serial, CAID: ca}, nil)
		}
	}
	return events[:n], serials
}

// subjectEvents returns n subject.corrected events over 100 subjects, sealed by
// the rig's vault, so that a rebuild opens every one.
func subjectEvents(b testing.TB, r *rig, n int) []domain.Event {
	ctx := context.Background()
	events := make([]domain.Event, 0, n)
	for i := range n {
		id := domain.SubjectID(fmt.Sprintf("%032x", i%100+1))
		attrs := map[string]string{"email": fmt.Sprintf("person%d@example.org", i), "common_name": fmt.Sprintf("Person %d", i)}
		p := domain.SubjectCorrected{SubjectID: id, Attributes: []string{"common_name", "email"}, KeyGroup: domain.GroupIdentity}
		public, _ := domain.MarshalPublic(p)
		eid, _ := domain.NewEventID(rand.Reader)
		e := domain.Event{Position: uint64(i + 1), Stream: domain.SubjectStream(id), Version: uint64(i/100 + 1), ID: eid,
			Type: p.EventType(), Schema: 1, Time: start, Actor: officer, Public: public,
			Sealed: &domain.Sealed{SubjectID: id, KeyGroup: domain.GroupIdentity}}
		plaintext, _ := json.Marshal(domain.SubjectAttributes{Attributes: attrs})
		sealed, err := r.vault.Seal(ctx, id, domain.GroupIdentity, plaintext, domain.SealedAD(&e))
		if err != nil {
			b.Fatal(err)
		}
		e.Sealed = &sealed
		events = append(events, e)
	}
	return events
}

// BenchmarkRebuild measures the apply rate of a rebuild from an in-memory ledger:
// certificate events (three projections write, nothing to open) and subject
// corrections (each opened with the vault, two attributes written).
func BenchmarkRebuild(b *testing.B) {
	for _, c := range []struct {
		name   string
		events func(*rig) []domain.Event
	}{
		{"certificates-50k", func(*rig) []domain.Event { e, _ := certificateEvents(b, 50_000); return e }},
		{"subjects-10k", func(r *rig) []domain.Event { return subjectEvents(b, r, 10_000) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := newRig(b)
			src := sliceSource(c.events(r))
			v := r.open(b, filepath.Join(b.TempDir(), "views.db"))
			ctx := context.Background()
			n := 0
			for b.Loop() {
				if err := v.Rebuild(ctx, src, nil); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(len(src)*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkRebuildFromLedger is BenchmarkRebuild/certificates through the real
// SQLite ledger, decoding included.
func BenchmarkRebuildFromLedger(b *testing.B) {
	r := newRig(b)
	ctx := context.Background()
	events, _ := certificateEvents(b, 50_000)
	// Appended from 64 goroutines, one stream each, so group commit keeps it short.
	var wg sync.WaitGroup
	var failed atomic.Bool
	byStream := map[string][]domain.Event{}
	var order []string
	for _, e := range events {
		if _, ok := byStream[e.Stream]; !ok {
			order = append(order, e.Stream)
		}
		e.Position = 0
		byStream[e.Stream] = append(byStream[e.Stream], e)
	}
	var next atomic.Int64
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(order)); i = next.Add(1) - 1 {
				s := order[i]
				if _, err := r.store.Append(ctx, s, domain.NoStream, byStream[s]...); err != nil {
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		b.Fatal("append failed")
	}
	v := r.open(b, filepath.Join(b.TempDir(), "views.db"))
	n := 0
	for b.Loop() {
		if err := v.Rebuild(ctx, r.store, nil); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(len(events)*n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkCertificateStatus measures OCSP lookups over 50k certificates, a
// quarter of them revoked; half the lookups hit a revoked one. "sqlite" reads
// the views file for every lookup (the cache off), "cached" answers from the
// status cache once each serial has been asked about.
func BenchmarkCertificateStatus(b *testing.B) {
	for _, c := range []struct {
		name    string
		entries int
	}{{"sqlite", -1}, {"cached", 0}} {
		b.Run(c.name, func(b *testing.B) { benchmarkCertificateStatus(b, c.entries) })
	}
}

func benchmarkCertificateStatus(b *testing.B, cacheEntries int) {
	r := newRig(b)
	ctx := context.Background()
	events, serials := certificateEvents(b, 50_000)
	v, err := Open(ctx, filepath.Join(b.TempDir(), "views.db"), Options{Sealer: r.sealer, StatusCacheEntries: cacheEntries})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	if err := v.Rebuild(ctx, sliceSource(events), nil); err != nil {
		b.Fatal(err)
	}
	// Lookups alternate between a revoked serial (i%4 == 0) and a good one.
	var revoked, good []domain.Serial
	for i, s := range serials {
		ca := "issuing"
		if i%5 == 0 {
			ca = "other-ca"
		}
		if ca != "issuing" {
			continue
		}
		if i%4 == 0 {
			revoked = append(revoked, s)
		} else {
			good = append(good, s)
		}
	}
	var seq atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			s := good[i%uint64(len(good))]
			if i%2 == 0 {
				s = revoked[i%uint64(len(revoked))]
			}
			st, err := v.CertificateStatus(ctx, "issuing", s)
			if err != nil || !st.Issued || st.Revoked != (i%2 == 0) {
				b.Errorf("CertificateStatus(%s) = %+v, %v", s, st, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}
