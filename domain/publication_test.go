package domain_test

import (
	"bytes"
	"context"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// TestPublication: what a directory may hold of a subject follows its current
// attributes and its certificates in force, and nothing of an erased subject.
func TestPublication(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	issue := func() domain.Issued {
		t.Helper()
		issued := r.issue(t, id, "email-protection")
		return issued
	}
	kept, revoked, deleted := issue(), issue(), issue()
	if err := r.h.RevokeCertificate(ctx, officer, revoked.Serial, domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if err := r.h.RevokeCertificate(ctx, officer, deleted.Serial, domain.ReasonCessationOfOperation); err != nil {
		t.Fatal(err)
	}
	if err := r.h.DeleteCertificate(ctx, officer, deleted.Serial, false); err != nil {
		t.Fatal(err)
	}
	if err := r.h.CorrectSubject(ctx, officer, id, map[string]string{"email": "ada@example.org"}, domain.GroupIdentity); err != nil {
		t.Fatal(err)
	}
	if err := r.h.CorrectSubject(ctx, officer, id, map[string]string{"serial_number": "NID-1815"}, domain.GroupNationalID); err != nil {
		t.Fatal(err)
	}

	p, err := r.h.Publication(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(ada)
	want["email"], want["serial_number"] = "ada@example.org", "NID-1815"
	if p.Erased || p.SubjectID != id || !maps.Equal(p.Attributes, want) {
		t.Fatalf("publication = erased %v, subject %s, attributes %v; want %v", p.Erased, p.SubjectID, p.Attributes, want)
	}
	if len(p.Certificates) != 1 || p.Certificates[0].Serial != kept.Serial || !bytes.Equal(p.Certificates[0].DER, kept.Certificate) ||
		p.Certificates[0].Profile != "email-protection" || p.Certificates[0].CAID != "issuing" {
		t.Fatalf("certificates = %+v, want only %s", p.Certificates, kept.Serial)
	}

	// A key group erased alone takes its attributes with it, and the
	// certificates signed before, which may carry them; one signed after
	// cannot.
	if err := r.h.EraseSubject(ctx, compliance, id, []string{domain.GroupNationalID}, domain.BasisConsentWithdrawn); err != nil {
		t.Fatal(err)
	}
	if p, err = r.h.Publication(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	// With no certificate to publish, the attributes are not read.
	if p.Attributes != nil || len(p.Certificates) != 0 {
		t.Fatalf("after the national-id erasure: attributes %v, %d certificates; want neither", p.Attributes, len(p.Certificates))
	}
	after := issue()
	if p, err = r.h.Publication(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	delete(want, "serial_number")
	if len(p.Certificates) != 1 || p.Certificates[0].Serial != after.Serial || !maps.Equal(p.Attributes, want) {
		t.Fatalf("after the erasure: certificates %+v, attributes %v; want only %s and %v", p.Certificates, p.Attributes, after.Serial, want)
	}

	// An expired certificate is not in force.
	r.now = p.Certificates[0].NotAfter
	if p, err = r.h.Publication(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	if len(p.Certificates) != 0 {
		t.Fatalf("%d certificates in force at their notAfter", len(p.Certificates))
	}
	r.now = r.now.Add(-time.Hour)

	if err := r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	if p, err = r.h.Publication(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	if !p.Erased || p.Attributes != nil || p.Certificates != nil {
		t.Fatalf("after erasure: %+v", p)
	}

	// A subject never registered has nothing to publish either.
	unknown := domain.SubjectID("00112233445566778899aabbccddeeff")
	if p, err = r.h.Publication(ctx, unknown, nil); err != nil || !p.Erased {
		t.Fatalf("unknown subject: %+v, %v", p, err)
	}
}

// TestPublicationAfterIdentityErasure: once the identity group is erased, no
// certificate is in the publication, even before (or without) the destruction
// of its key: the erasure is recorded first.
func TestPublicationAfterIdentityErasure(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	if _, err := r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "email-protection", CSR: newCSR(t)}); err != nil {
		t.Fatal(err)
	}
	// The vault keeps the key: the publication must not rely on the shred.
	r.h.Vault = keepKeys{r.h.Vault}
	if err := r.h.EraseSubject(ctx, compliance, id, []string{domain.GroupIdentity}, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	p, err := r.h.Publication(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Certificates) != 0 || len(p.Attributes) != 0 {
		t.Fatalf("after the identity erasure: %d certificates, attributes %v", len(p.Certificates), p.Attributes)
	}
}

// TestPublicationOpensOnlyWhatIsPublished: the certificates of profiles the
// directory does not publish are left out without their sealed parts being
// opened, and a subject with nothing to publish has none of its personal data
// read.
func TestPublicationOpensOnlyWhatIsPublished(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	mail := r.issue(t, id, "email-protection")
	if _, err := r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t)}); err != nil {
		t.Fatal(err)
	}
	opens := &countOpens{Sealer: r.h.Vault}
	r.h.Vault = opens
	only := func(want string) func(string) bool { return func(p string) bool { return p == want } }

	p, err := r.h.Publication(ctx, id, only("email-protection"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Certificates) != 1 || p.Certificates[0].Serial != mail.Serial || p.Attributes["email"] != ada["email"] {
		t.Fatalf("email-protection only: %d certificates, attributes %v", len(p.Certificates), p.Attributes)
	}
	if got := opens.n.Load(); got != 2 { // the certificate, and the identity group's attributes
		t.Fatalf("%d sealed parts opened, want 2 (the email-protection certificate and the identity attributes)", got)
	}
	opens.n.Store(0)
	if p, err = r.h.Publication(ctx, id, only("officer")); err != nil {
		t.Fatal(err)
	}
	if p.Erased || len(p.Certificates) != 0 || p.Attributes != nil {
		t.Fatalf("no published profile: %+v", p)
	}
	if got := opens.n.Load(); got != 0 {
		t.Fatalf("%d sealed parts opened for a subject with nothing to publish", got)
	}
}

// countOpens counts the sealed parts a vault opens.
type countOpens struct {
	domain.Sealer
	n atomic.Int64
}

func (c *countOpens) Open(ctx context.Context, s *domain.Sealed, ad []byte) ([]byte, error) {
	c.n.Add(1)
	return c.Sealer.Open(ctx, s, ad)
}

// keepKeys is a vault whose Shred destroys nothing, as a failed destruction
// would leave it.
type keepKeys struct{ domain.Sealer }

func (keepKeys) Shred(context.Context, domain.SubjectID, ...string) error { return nil }
