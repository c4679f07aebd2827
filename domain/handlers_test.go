package domain_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/keyvault/vaulttest"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
)

// The handler tests run on the real parts: the SQLite ledger, the key vault under a
// local KEK file, and a signer built on crypto/x509.

type rig struct {
	h     *domain.Handlers
	store *sqlite.Store
	vault *keyvault.Vault
	dir   string
	now   time.Time
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir, store, vault := vaulttest.Open(t)
	r := &rig{store: store, vault: vault, dir: dir, now: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	r.h = &domain.Handlers{Events: store, Vault: vault, Signer: newTestSigner(t), Now: func() time.Time { return r.now }, Rand: rand.Reader}
	return r
}

// register registers ada, failing the test on an error.
func (r *rig) register(t *testing.T) domain.SubjectID {
	t.Helper()
	id, err := r.h.RegisterSubject(context.Background(), officer, ada)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// issue issues a certificate of profile to subject id from the issuing CA,
// failing the test on an error.
func (r *rig) issue(t *testing.T, id domain.SubjectID, profile string) domain.Issued {
	t.Helper()
	issued, err := r.h.IssueCertificate(context.Background(), officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: profile, CSR: newCSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	return issued
}

// testSigner signs with an in-memory CA: a stand-in for the profiles and linting
// of the real signer, enough to exercise the issuance flow.
type testSigner struct {
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
}

func newTestSigner(t *testing.T) *testSigner {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour * 24 * 365),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &testSigner{ca: ca, key: key}
}

func (s *testSigner) SignCertificate(ctx context.Context, req domain.SignRequest) (domain.Signed, error) {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil || csr.CheckSignature() != nil {
		return domain.Signed{}, &domain.Error{Kind: domain.KindInvalid, Code: "bad-csr", Detail: "the CSR does not parse or verify"}
	}
	serial, _ := new(big.Int).SetString(string(req.Serial), 16)
	tmpl := &x509.Certificate{SerialNumber: serial,
		Subject:   pkix.Name{CommonName: req.Attributes["common_name"]},
		NotBefore: req.Now, NotAfter: req.Now.Add(30 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca, csr.PublicKey, s.key)
	if err != nil {
		return domain.Signed{}, err
	}
	cert, _ := x509.ParseCertificate(der)
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return domain.Signed{DER: der, Serial: req.Serial, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, SPKISHA256: hex.EncodeToString(spki[:])}, nil
}

func newCSR(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

var (
	officer    = domain.Actor{ID: "cert:0a", Role: "officer"}
	compliance = domain.Actor{ID: "cert:0b", Role: "compliance"}
	// Personal data that must never appear outside sealed parts.
	ada = map[string]string{"common_name": "Ada Lovelace", "email": "ada.lovelace@example.org", "country": "GB"}
)

func wantErr(t *testing.T, err error, kind *domain.Error, code string) {
	t.Helper()
	var de *domain.Error
	if !errors.Is(err, kind) || !errors.As(err, &de) || (code != "" && de.Code != code) {
		t.Fatalf("err = %v, want kind %v code %q", err, kind.Kind, code)
	}
}

func TestHandlersLifecycle(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	got, err := r.h.ReadSubject(ctx, officer, id, "read", "ticket 4711: Ada Lovelace called")
	if err != nil {
		t.Fatal(err)
	}
	if got["email"] != ada["email"] || got["common_name"] != ada["common_name"] {
		t.Fatalf("ReadSubject = %v", got)
	}
	if _, err := r.h.ReadSubject(ctx, officer, id, "read", ""); err == nil {
		t.Fatal("a read without a reason was allowed")
	}

	// The read is recorded before the data is returned, with its reason sealed.
	var access []domain.Event
	for e, err := range r.store.ReadStream(ctx, domain.AccessStream(id), 1) {
		if err != nil {
			t.Fatal(err)
		}
		access = append(access, e)
	}
	if len(access) != 1 || access[0].Actor != officer || access[0].Sealed == nil {
		t.Fatalf("access log: %+v", access)
	}
	reason, err := r.vault.Open(ctx, access[0].Sealed, domain.SealedAD(&access[0]))
	if err != nil || !bytes.Contains(reason, []byte("ticket 4711")) {
		t.Fatalf("sealed reason: %q, %v", reason, err)
	}

	if err := r.h.CorrectSubject(ctx, officer, id, map[string]string{"email": "ada@example.org", "country": ""}, domain.GroupIdentity); err != nil {
		t.Fatal(err)
	}
	got, _ = r.h.SubjectAttributes(ctx, id)
	if got["email"] != "ada@example.org" || got["country"] != "" || got["common_name"] != "Ada Lovelace" {
		t.Fatalf("after correction: %v", got)
	}

	issued := r.issue(t, id, "tls-client")
	cert, err := x509.ParseCertificate(issued.Certificate)
	if err != nil || cert.Subject.CommonName != "Ada Lovelace" || cert.SerialNumber.Text(16) != string(issued.Serial) {
		t.Fatalf("issued certificate: %v %v", cert.Subject, err)
	}
	if cert.SerialNumber.BitLen() < 64 {
		t.Fatalf("serial has %d bits", cert.SerialNumber.BitLen())
	}
	_, err = r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: []byte("not a csr")})
	wantErr(t, err, domain.ErrInvalid, "bad-csr")

	wantErr(t, r.h.DeleteCertificate(ctx, officer, issued.Serial, false), domain.ErrConflict, "not-revoked")
	if err := r.h.RevokeCertificate(ctx, officer, issued.Serial, domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.h.RevokeCertificate(ctx, officer, issued.Serial, domain.ReasonKeyCompromise), domain.ErrConflict, "already-revoked")
	wantErr(t, r.h.DeleteCertificate(ctx, officer, issued.Serial, true), domain.ErrConflict, "retained-until-expiry")
	if err := r.h.DeleteCertificate(ctx, officer, issued.Serial, false); err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.h.RevokeCertificate(ctx, officer, "123", domain.ReasonUnspecified), domain.ErrNotFound, "no-certificate")

	// Erasure: the subject's data is gone, from the handlers and from the ledger.
	other, err := r.h.RegisterSubject(ctx, officer, map[string]string{"common_name": "Grace Hopper"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	_, err = r.h.ReadSubject(ctx, officer, id, "read", "x")
	wantErr(t, err, domain.ErrGone, "subject-erased")
	_, err = r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t)})
	wantErr(t, err, domain.ErrGone, "subject-erased")
	// Repeating an erasure destroys the keys again, records nothing and says so.
	before, _ := r.store.Head(ctx)
	wantErr(t, r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest), domain.ErrConflict, "already-erased")
	if after, _ := r.store.Head(ctx); after != before {
		t.Fatal("a repeated erasure appended events")
	}
	if got, err := r.h.SubjectAttributes(ctx, other); err != nil || got["common_name"] != "Grace Hopper" {
		t.Fatalf("another subject suffered from the erasure: %v %v", got, err)
	}
	// Every sealed part of the erased subject now fails with ErrShredded.
	sealedParts := 0
	for e, err := range r.store.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Sealed == nil || e.Sealed.SubjectID != id {
			continue
		}
		sealedParts++
		if _, err := r.vault.Open(ctx, e.Sealed, domain.SealedAD(&e)); !errors.Is(err, domain.ErrShredded) {
			t.Fatalf("event %d (%s) still opens after erasure: %v", e.Position, e.Type, err)
		}
	}
	if sealedParts < 4 {
		t.Fatalf("only %d sealed parts of the erased subject found", sealedParts)
	}
}

// TestNoPersonalDataOutsideSealedParts checks the ledger's public side: stream
// names, envelopes and public payloads, and the raw ledger files themselves, hold
// none of the personal data that went in.
func TestNoPersonalDataOutsideSealedParts(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	if _, err := r.h.ReadSubject(ctx, officer, id, "read", "Ada Lovelace asked for a copy"); err != nil {
		t.Fatal(err)
	}
	if err := r.h.CorrectSubject(ctx, officer, id, map[string]string{"surname": "King-Noel"}, domain.GroupIdentity); err != nil {
		t.Fatal(err)
	}
	if _, err := r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t)}); err != nil {
		t.Fatal(err)
	}
	secrets := []string{"Ada Lovelace", "ada.lovelace@example.org", "King-Noel", "asked for a copy"}
	n := 0
	for e, err := range r.store.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		public, _ := json.Marshal(struct {
			Stream, Type string
			Actor        domain.Actor
			Public       json.RawMessage
		}{e.Stream, e.Type, e.Actor, e.Public})
		for _, s := range secrets {
			if bytes.Contains(public, []byte(s)) {
				t.Fatalf("event %d (%s) has %q in its public side", e.Position, e.Type, s)
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d events", n)
	}
	r.store.Close()
	files, _ := filepath.Glob(filepath.Join(r.dir, "ledger", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Fatalf("%s holds %q in the clear", filepath.Base(f), s)
			}
		}
	}
}

// TestEraseRacesIssuance issues certificates to a subject from 8 goroutines while
// it is erased. The erasure is not starved; no certificate is linked after it or
// returned from a link that came after it; every recorded certificate is linked.
func TestEraseRacesIssuance(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	var mu sync.Mutex
	var returned []domain.Serial
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				issued, err := r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t)})
				switch {
				case err == nil:
					mu.Lock()
					returned = append(returned, issued.Serial)
					mu.Unlock()
				case !errors.Is(err, domain.ErrGone) && !errors.Is(err, domain.ErrConflict):
					t.Error(err)
				}
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	eraseCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	eraseErr := r.h.EraseSubject(eraseCtx, compliance, id, nil, domain.BasisErasureRequest)
	wg.Wait()
	if eraseErr != nil {
		t.Fatalf("erasure lost to concurrent issuance: %v", eraseErr)
	}

	erasedAt := uint64(0)
	linkedAt := map[domain.Serial]uint64{}
	for e, err := range r.store.ReadStream(ctx, domain.SubjectStream(id), 1) {
		if err != nil {
			t.Fatal(err)
		}
		switch e.Type {
		case domain.TypeSubjectErased:
			erasedAt = e.Version
		case domain.TypeSubjectCertificateLinked:
			if erasedAt != 0 {
				t.Fatalf("a certificate was linked at version %d, after the erasure at %d", e.Version, erasedAt)
			}
			var p domain.SubjectCertificateLinked
			if err := domain.UnmarshalPublic(&e, &p); err != nil {
				t.Fatal(err)
			}
			linkedAt[p.Serial] = e.Version
		}
	}
	if erasedAt == 0 {
		t.Fatal("no erasure recorded")
	}
	for _, serial := range returned {
		if v, ok := linkedAt[serial]; !ok || v > erasedAt {
			t.Fatalf("certificate %s was returned but is not linked before the erasure", serial)
		}
	}
	for e, err := range r.store.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Type == domain.TypeCertificateIssued {
			var p domain.CertificateIssued
			if err := domain.UnmarshalPublic(&e, &p); err != nil {
				t.Fatal(err)
			}
			if _, ok := linkedAt[p.Serial]; !ok {
				t.Fatalf("certificate %s recorded without a link before the erasure", p.Serial)
			}
		}
	}
	t.Logf("%d certificates returned, %d linked before the erasure", len(returned), len(linkedAt))
}

// The wrappers below delay or fail one call of a real component, to put a race or
// a failure at a chosen point.

// hookedSigner runs before ahead of each signature.
type hookedSigner struct {
	domain.CertificateSigner
	before func()
	calls  atomic.Int32
}

func (s *hookedSigner) SignCertificate(ctx context.Context, req domain.SignRequest) (domain.Signed, error) {
	s.calls.Add(1)
	if s.before != nil {
		s.before()
	}
	return s.CertificateSigner.SignCertificate(ctx, req)
}

// gatedShred holds Shred until release is closed, or fails it while fail is set.
type gatedShred struct {
	domain.Sealer
	release chan struct{}
	fail    atomic.Bool
}

func (v *gatedShred) Shred(ctx context.Context, s domain.SubjectID, groups ...string) error {
	if v.fail.Load() {
		return errors.New("HSM unreachable")
	}
	if v.release != nil {
		<-v.release
	}
	return v.Sealer.Shred(ctx, s, groups...)
}

func subjectStreamHas(t *testing.T, r *rig, id domain.SubjectID, typ string) bool {
	t.Helper()
	for e, err := range r.store.ReadStream(context.Background(), domain.SubjectStream(id), 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Type == typ {
			return true
		}
	}
	return false
}

// TestIssuanceLosesToErasureDuringSigning records an erasure while the signer
// works, with the key destruction still pending: the certificate must not be
// recorded or returned.
func TestIssuanceLosesToErasureDuringSigning(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	vault := &gatedShred{Sealer: r.vault, release: make(chan struct{})}
	r.h.Vault = vault
	erased := make(chan error, 1)
	signer := &hookedSigner{CertificateSigner: r.h.Signer}
	signer.before = func() {
		if signer.calls.Load() > 1 {
			return
		}
		go func() { erased <- r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest) }()
		for !subjectStreamHas(t, r, id, domain.TypeSubjectErased) {
			time.Sleep(time.Millisecond)
		}
	}
	r.h.Signer = signer
	issued, err := r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t)})
	close(vault.release)
	if err := <-erased; err != nil {
		t.Fatal(err)
	}
	if err == nil || len(issued.Certificate) != 0 {
		t.Fatalf("certificate %s returned after the erasure was recorded", issued.Serial)
	}
	wantErr(t, err, domain.ErrGone, "subject-erased")
	for e, err := range r.store.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Type == domain.TypeCertificateIssued || e.Type == domain.TypeSubjectCertificateLinked {
			t.Fatalf("%s recorded for an issuance that lost to the erasure", e.Type)
		}
	}
}

// TestErasureCompletesAfterFailedShred: when destroying the keys fails after the
// erasure is recorded, repeating the erasure destroys them.
func TestErasureCompletesAfterFailedShred(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	vault := &gatedShred{Sealer: r.vault}
	vault.fail.Store(true)
	r.h.Vault = vault
	wantErr(t, r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest), domain.ErrUnavailable, "shred-pending")
	if !subjectStreamHas(t, r, id, domain.TypeSubjectErased) {
		t.Fatal("the erasure was not recorded")
	}
	opens := func() bool {
		for e, err := range r.store.ReadStream(ctx, domain.SubjectStream(id), 1) {
			if err != nil {
				t.Fatal(err)
			}
			if e.Sealed != nil {
				_, err := r.vault.Open(ctx, e.Sealed, domain.SealedAD(&e))
				return err == nil
			}
		}
		t.Fatal("no sealed part")
		return false
	}
	if !opens() {
		t.Fatal("the failed shred destroyed the key anyway; this test no longer tests a pending shred")
	}
	vault.fail.Store(false)
	wantErr(t, r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest), domain.ErrConflict, "already-erased")
	if opens() {
		t.Fatal("the subject's keys survived the repeated erasure")
	}
	n := 0
	for e, err := range r.store.ReadStream(ctx, domain.SubjectStream(id), 1) {
		if err == nil && e.Type == domain.TypeSubjectErased {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d erasure events, want 1", n)
	}
}

// TestIssuanceRefusedWhenIdentityErased: with the identity group erased alone, the
// signer is never called.
func TestIssuanceRefusedWhenIdentityErased(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	if err := r.h.EraseSubject(ctx, compliance, id, []string{domain.GroupIdentity}, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	signer := &hookedSigner{CertificateSigner: r.h.Signer}
	r.h.Signer = signer
	_, err := r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t)})
	wantErr(t, err, domain.ErrGone, "identity-erased")
	if signer.calls.Load() != 0 {
		t.Fatal("the CA signed for a subject whose identity data is erased")
	}
}

// TestCallerTextIsValidated: ids, CA ids and profiles from callers are checked
// before they can become stream names or public fields.
func TestCallerTextIsValidated(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	head, _ := r.store.Head(ctx)
	wantErr(t, r.h.RecordAccess(ctx, officer, "ada.lovelace@example.org", "read", "x"), domain.ErrNotFound, "no-subject")
	wantErr(t, r.h.RecordAccess(ctx, officer, "00112233445566778899aabbccddeeff", "read", "x"), domain.ErrNotFound, "no-subject")
	wantErr(t, r.h.RecordAccess(ctx, officer, id, "read", ""), domain.ErrInvalid, "no-reason")
	_, err := r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "Ada Lovelace", Profile: "tls-client", CSR: newCSR(t)})
	wantErr(t, err, domain.ErrInvalid, "bad-ca-id")
	_, err = r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "ada@example.org", CSR: newCSR(t)})
	wantErr(t, err, domain.ErrInvalid, "bad-profile")
	wantErr(t, r.h.CorrectSubject(ctx, officer, id, map[string]string{"email": "a@example.org"}, "ada@example.org"), domain.ErrInvalid, "bad-key-group")
	if after, _ := r.store.Head(ctx); after != head {
		t.Fatalf("refused commands appended %d events", after-head)
	}
}

// TestErased: Erased reports what was erased and the ledger position of the
// latest erasure.
func TestErased(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	if e, err := r.h.Erased(ctx, id); err != nil || e.All || len(e.Groups) != 0 || e.At != 0 {
		t.Fatalf("before any erasure: %+v, %v", e, err)
	}
	for _, groups := range [][]string{{domain.GroupNationalID}, nil} {
		if err := r.h.EraseSubject(ctx, compliance, id, groups, domain.BasisErasureRequest); err != nil {
			t.Fatal(err)
		}
		head, err := r.store.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e, err := r.h.Erased(ctx, id)
		if err != nil || e.At != head || e.All != (groups == nil) || !slices.Contains(e.Groups, domain.GroupNationalID) {
			t.Fatalf("after erasing %v: %+v, %v; want the erasure at %d, national-id among the groups", groups, e, err, head)
		}
	}
}
