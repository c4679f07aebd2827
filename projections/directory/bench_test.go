package directory_test

import (
	"context"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections/directory"
	"github.com/caledger/caledger/projections/directory/slapdtest"
)

// BenchmarkReconcile makes one subject's entry match: the ledger and vault
// reads of domain.Handlers.Publication, then one LDAP modify on the
// publisher's connection. BenchmarkRawModify is its baseline, measured on the
// same slapd: the same modify sent on a bound connection, with nothing read.
func BenchmarkReconcile(b *testing.B) {
	_, p, id := benchRig(b)
	ctx := context.Background()
	for b.Loop() {
		if err := p.Reconcile(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawModify(b *testing.B) {
	srv, _, id := benchRig(b)
	e := entry(b, srv, id)
	conn := srv.Admin()
	defer conn.Close()
	mod := ldap.NewModifyRequest(e.DN, nil)
	for _, a := range e.Attributes {
		if a.Name != "objectClass" && a.Name != "uid" {
			mod.Replace(a.Name, a.Values)
		}
	}
	for b.Loop() {
		if err := conn.Modify(mod); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRig(b *testing.B) (*slapdtest.Server, *directory.Publisher, domain.SubjectID) {
	b.Helper()
	srv := slapdtest.Start(b, slapdtest.Options{})
	r := newRig(b)
	id := r.register(b, ada)
	r.issue(b, id, "email-protection")
	p := newPublisher(b, r.options(srv, &memCheckpoints{}), r.h)
	if err := p.Reconcile(context.Background(), id); err != nil {
		b.Fatal(err)
	}
	return srv, p, id
}

// catchUpRig is a ledger of 200 subjects, each with three email-protection
// certificates of which one is revoked (four events that change its entry),
// and a slapd.
func catchUpRig(b *testing.B) (*slapdtest.Server, *rig, uint64) {
	const subjects = 200
	srv := slapdtest.Start(b, slapdtest.Options{})
	r := newRig(b)
	ctx := context.Background()
	for range subjects {
		id := r.register(b, ada)
		for i := range 3 {
			issued := r.issue(b, id, "email-protection")
			if i == 0 {
				if err := r.h.RevokeCertificate(ctx, officer, issued.Serial, domain.ReasonSuperseded); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	return srv, r, r.head(b)
}

// publishAll runs a new publisher, with no checkpoint, until it has published
// the ledger up to head, and returns it stopped.
func publishAll(b *testing.B, srv *slapdtest.Server, r *rig, head uint64) *directory.Publisher {
	b.Helper()
	p := newPublisher(b, r.options(srv, &memCheckpoints{}), r.h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, r.store) }()
	if err := p.WaitFor(ctx, head); err != nil {
		b.Fatal(err)
	}
	cancel()
	<-done
	return p
}

// BenchmarkCatchUp publishes catchUpRig's ledger from its start: the
// publisher's catch-up after a new directory, base DN or profile list. One op
// is the whole catch-up; the entries exist from the first op on, so each op
// modifies them, and the sweep at start finds them.
func BenchmarkCatchUp(b *testing.B) {
	srv, r, head := catchUpRig(b)
	for b.Loop() {
		publishAll(b, srv, r, head).Close()
	}
	b.ReportMetric(float64(b.N*200)/b.Elapsed().Seconds(), "subjects/s")
	b.ReportMetric(float64(b.N)*float64(head)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkSweep sweeps catchUpRig's 200 entries, which already match.
func BenchmarkSweep(b *testing.B) {
	srv, r, head := catchUpRig(b)
	ctx := context.Background()
	p := publishAll(b, srv, r, head)
	for b.Loop() {
		if n, err := p.Sweep(ctx); err != nil || n != 200 {
			b.Fatalf("Sweep = %d, %v", n, err)
		}
	}
	b.ReportMetric(float64(b.N*200)/b.Elapsed().Seconds(), "entries/s")
}
