package authority_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/authority"
	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/revocation"
	"github.com/caledger/caledger/crypto/signer"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/projections"
)

// rig is a CA on the real parts: the SQLite ledger, the key vault, software CA
// keys, the issuer and the views.
type rig struct {
	h     *domain.Handlers
	views *projections.Views
	store *sqlite.Store
	a     *authority.Authority
}

var admin = domain.Actor{ID: "test", Role: "admin"}

func newRig(t *testing.T) *rig { return newRigWith(t, nil) }

// newRigWith is newRig with the authority's options edited by edit.
func newRigWith(t *testing.T, edit func(*authority.Options)) *rig {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "ledger"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := kek.OpenOrCreateFile(ctx, filepath.Join(dir, "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	vault, err := keyvault.Open(ctx, filepath.Join(dir, "vault.db"), k)
	if err != nil {
		t.Fatal(err)
	}
	views, err := projections.Open(ctx, filepath.Join(dir, "views.db"), projections.Options{Sealer: vault})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { views.Close(); vault.Close(); store.Close() })
	h := &domain.Handlers{Events: store, Vault: vault, Now: time.Now, Rand: rand.Reader}
	keys := signer.NewSoftware(filepath.Join(dir, "ca"), k)
	now := time.Now()
	rootKey, rootRef, err := keys.Generate(ctx, "root", signer.P256)
	if err != nil {
		t.Fatal(err)
	}
	root, err := issuer.NewRoot(ctx, rootKey, pkix.Name{CommonName: "Test Root"}, 24*time.Hour, big.NewInt(1), now)
	if err != nil {
		t.Fatal(err)
	}
	issKey, issRef, err := keys.Generate(ctx, "issuing", signer.P256)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.NewIntermediate(ctx, issuer.CA{ID: "root", Certificate: root, Key: rootKey}, issKey.Public(), pkix.Name{CommonName: "Test Issuing"},
		24*time.Hour, big.NewInt(2), now, issuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []domain.CACreated{
		{CAID: "root", Kind: domain.CAKindRoot, Certificate: root.Raw, Key: domain.CAKey{Provider: rootRef.Provider, Label: rootRef.Label, Algorithm: string(rootRef.Algorithm)}},
		{CAID: "issuing", Kind: domain.CAKindIssuing, ParentID: "root", Certificate: iss.Raw, Key: domain.CAKey{Provider: issRef.Provider, Label: issRef.Label, Algorithm: string(issRef.Algorithm)}},
	} {
		if err := h.CreateCA(ctx, admin, c); err != nil {
			t.Fatal(err)
		}
	}
	opts := authority.Options{Head: store.Head, CRLWait: 200 * time.Millisecond}
	if edit != nil {
		edit(&opts)
	}
	a, err := authority.Load(ctx, h, views, authority.Keys{"software": keys}, []string{"root", "issuing"}, "issuing", opts)
	if err != nil {
		t.Fatal(err)
	}
	is, err := issuer.New(a.Issuers(), issuer.DefaultProfiles(), issuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.Signer = is
	return &rig{h: h, views: views, store: store, a: a}
}

func (r *rig) credential(t *testing.T, profile string) *x509.Certificate {
	t.Helper()
	ctx := context.Background()
	id, err := r.h.RegisterSubject(ctx, admin, map[string]string{"common_name": "Officer Person"})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	issued, err := r.h.IssueCertificate(ctx, admin, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: profile, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(issued.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// The views never ran here: every check must fall back on the ledger.
func TestAuthenticateWithViewsBehind(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	good, revoked, plain := r.credential(t, "officer"), r.credential(t, "auditor"), r.credential(t, "tls-client")
	if err := r.h.RevokeCertificate(ctx, admin, domain.Serial(revoked.SerialNumber.Text(16)), domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	p, err := r.a.Authenticate(ctx, good)
	if err != nil || !p.Has("officer") || p.Actor.ID != "cert:"+good.SerialNumber.Text(16) {
		t.Fatalf("valid officer credential: %+v, %v", p, err)
	}
	if _, err := r.a.Authenticate(ctx, revoked); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked credential the views have not seen was accepted: %v", err)
	}
	if _, err := r.a.Authenticate(ctx, plain); err == nil {
		t.Fatal("a certificate without a role was accepted")
	}
	// A CRL is not built from views that are behind.
	if _, err := r.a.CRL(ctx, "issuing"); err == nil || !strings.Contains(err.Error(), "catching up") {
		t.Fatalf("CRL from views that never ran: %v", err)
	}
}

func TestCRLAndOCSPFollowTheViews(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.views.Run(ctx, r.store)
	cert := r.credential(t, "tls-client")
	serial := domain.Serial(cert.SerialNumber.Text(16))

	head, _ := r.store.Head(ctx)
	if err := r.views.WaitFor(ctx, head); err != nil {
		t.Fatal(err)
	}
	if got, err := r.a.Lookup(ctx, "issuing", cert.SerialNumber); err != nil || got.Status != revocation.Good {
		t.Fatalf("OCSP before revocation: %+v, %v", got, err)
	}
	if got, _ := r.a.Lookup(ctx, "root", cert.SerialNumber); got.Status != revocation.Unknown {
		t.Errorf("OCSP for the wrong CA: %+v", got)
	}
	if got, _ := r.a.Lookup(ctx, "issuing", big.NewInt(12345)); got.Status != revocation.Unknown {
		t.Errorf("OCSP for a serial never issued: %+v", got)
	}
	first, err := r.a.CRL(ctx, "issuing")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := r.a.CRL(ctx, "issuing")
	if string(again) != string(first) {
		t.Error("an unchanged CRL was rebuilt")
	}
	if err := r.h.RevokeCertificate(ctx, admin, serial, domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	der, err := r.a.CRL(ctx, "issuing")
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(cert.SerialNumber) != 0 || crl.Number.Int64() != 2 {
		t.Fatalf("CRL after revocation: number %v, entries %+v", crl.Number, crl.RevokedCertificateEntries)
	}
	if got, _ := r.a.Lookup(ctx, "issuing", cert.SerialNumber); got.Status != revocation.Revoked {
		t.Errorf("OCSP after revocation: %+v", got)
	}
	ca, _ := r.h.LoadCA(ctx, "issuing")
	if ca.CRLNumber != 2 {
		t.Errorf("the ledger recorded %d CRLs, want 2", ca.CRLNumber)
	}
}

// clockedRig is newRig with the authority's clock at start until set moves
// it, and the views following the ledger until the test ends.
func clockedRig(t *testing.T, start time.Time) (r *rig, set func(time.Time)) {
	var clock atomic.Pointer[time.Time]
	clock.Store(&start)
	r = newRigWith(t, func(o *authority.Options) { o.Now = func() time.Time { return *clock.Load() } })
	go r.views.Run(t.Context(), r.store)
	return r, func(at time.Time) { clock.Store(&at) }
}

// revoke revokes cert and waits for the views to show it.
func (r *rig) revoke(t *testing.T, cert *x509.Certificate) {
	t.Helper()
	ctx := t.Context()
	if err := r.h.RevokeCertificate(ctx, admin, domain.Serial(cert.SerialNumber.Text(16)), domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	head, _ := r.store.Head(ctx)
	if err := r.views.WaitFor(ctx, head); err != nil {
		t.Fatal(err)
	}
}

// crl returns the issuing CA's CRL, parsed.
func (r *rig) crl(t *testing.T) *x509.RevocationList {
	t.Helper()
	der, err := r.a.CRL(t.Context(), "issuing")
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// TestCRLKeepsAnExpiredEntryOnce: a revoked certificate stays on the first
// CRL issued after it expired, and leaves the one after (RFC 5280 3.3).
func TestCRLKeepsAnExpiredEntryOnce(t *testing.T) {
	start := time.Now()
	r, set := clockedRig(t, start)
	cert := r.credential(t, "tls-client")
	r.revoke(t, cert)
	if n := len(r.crl(t).RevokedCertificateEntries); n != 1 {
		t.Fatalf("CRL before expiry: %d entries", n)
	}
	expired := cert.NotAfter.Add(time.Hour)
	set(expired)
	if crl := r.crl(t); len(crl.RevokedCertificateEntries) != 1 || !crl.ThisUpdate.After(cert.NotAfter) {
		t.Fatalf("first CRL after expiry (this update %v, not after %v): %d entries, want the expired one",
			crl.ThisUpdate, cert.NotAfter, len(crl.RevokedCertificateEntries))
	}
	set(expired.Add(13 * time.Hour))
	if n := len(r.crl(t).RevokedCertificateEntries); n != 0 {
		t.Fatalf("second CRL after expiry: %d entries, want none", n)
	}
}

// TestCRLNeverOlderThanTheLast: a node whose clock runs behind the one that
// published the last CRL (here two days, past the expiry of the certificate)
// dates its own no earlier, and still lists the certificates valid by its
// own clock.
func TestCRLNeverOlderThanTheLast(t *testing.T) {
	ahead := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	r, set := clockedRig(t, ahead)
	r.crl(t)
	// The revision moves, so the next request builds again, two days "earlier".
	r.revoke(t, r.credential(t, "tls-client"))
	set(ahead.Add(-48 * time.Hour))
	if crl := r.crl(t); !crl.ThisUpdate.Equal(ahead) || len(crl.RevokedCertificateEntries) != 1 {
		t.Fatalf("CRL %v: this update %v, %d entries; want %v and the revocation", crl.Number, crl.ThisUpdate, len(crl.RevokedCertificateEntries), ahead)
	}
}
