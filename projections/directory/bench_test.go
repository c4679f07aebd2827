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
	p, err := directory.New(r.options(srv, &memCheckpoints{}), r.h)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	if err := p.Reconcile(context.Background(), id); err != nil {
		b.Fatal(err)
	}
	return srv, p, id
}
