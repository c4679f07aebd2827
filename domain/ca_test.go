package domain_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

func streamTypes(t *testing.T, r *rig, stream string) []string {
	t.Helper()
	var types []string
	for e, err := range r.store.ReadStream(context.Background(), stream, 1) {
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, e.Type)
	}
	return types
}

func TestCALifecycle(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	admin := domain.Actor{ID: "init", Role: "admin"}
	p := domain.CACreated{CAID: "issuing", Kind: domain.CAKindIssuing, ParentID: "root",
		Certificate: r.h.Signer.(*testSigner).ca.Raw, Key: domain.CAKey{Provider: "software", Label: "issuing", Algorithm: "P-256"},
		RetainUntilExpiry: true}
	if err := r.h.CreateCA(ctx, admin, p); err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.h.CreateCA(ctx, admin, p), domain.ErrConflict, "ca-exists")
	bad := p
	bad.CAID = "Issuing CA"
	wantErr(t, r.h.CreateCA(ctx, admin, bad), domain.ErrInvalid, "bad-ca-id")
	bad = p
	bad.CAID, bad.ParentID = "other", ""
	wantErr(t, r.h.CreateCA(ctx, admin, bad), domain.ErrInvalid, "bad-parent")

	ca, err := r.h.LoadCA(ctx, "issuing")
	if err != nil || ca.Created.Key != p.Key || !ca.Created.RetainUntilExpiry || ca.CRLNumber != 0 {
		t.Fatalf("LoadCA = %+v, %v", ca, err)
	}
	_, err = r.h.LoadCA(ctx, "nope")
	wantErr(t, err, domain.ErrNotFound, "no-ca")

	// CRL numbers run 1, 2, ... and each CRL leaves the process only once recorded.
	for want := uint64(1); want <= 3; want++ {
		der, rec, err := r.h.PublishCRL(ctx, admin, "issuing", func(n uint64, last time.Time) (domain.CRLPublished, []byte, error) {
			if n != want {
				t.Errorf("sign got number %d, want %d", n, want)
			}
			if wantLast := r.now; want == 1 && !last.IsZero() || want > 1 && !last.Equal(wantLast) {
				t.Errorf("sign of CRL %d got the last CRL's this update %v", n, last)
			}
			return domain.CRLPublished{Number: n, ThisUpdate: r.now, NextUpdate: r.now.Add(time.Hour), SHA256: "00"}, []byte{byte(n)}, nil
		})
		if err != nil || rec.Number != want || len(der) != 1 || der[0] != byte(want) || rec.CAID != "issuing" {
			t.Fatalf("PublishCRL %d = %x, %+v, %v", want, der, rec, err)
		}
	}
	if ca, _ := r.h.LoadCA(ctx, "issuing"); ca.CRLNumber != 3 {
		t.Fatalf("CRL number after three CRLs = %d", ca.CRLNumber)
	}
	// A CRL whose number does not follow is refused and not recorded.
	_, _, err = r.h.PublishCRL(ctx, admin, "issuing", func(n uint64, _ time.Time) (domain.CRLPublished, []byte, error) {
		return domain.CRLPublished{Number: n + 1, ThisUpdate: r.now, NextUpdate: r.now.Add(time.Hour)}, nil, nil
	})
	wantErr(t, err, domain.ErrConflict, "crl-number")
	// So is one older than the last: the highest number is the newest CRL.
	_, _, err = r.h.PublishCRL(ctx, admin, "issuing", func(n uint64, last time.Time) (domain.CRLPublished, []byte, error) {
		return domain.CRLPublished{Number: n, ThisUpdate: last.Add(-time.Second), NextUpdate: r.now.Add(time.Hour)}, nil, nil
	})
	wantErr(t, err, domain.ErrInvalid, "bad-crl-dates")
	if got := streamTypes(t, r, domain.CAStream("issuing")); len(got) != 4 {
		t.Fatalf("CA stream = %v", got)
	}

	// A delegated OCSP responder: signed once with the serial drawn for it,
	// recorded after the CRLs, and refused when malformed or for no CA.
	calls := 0
	rec, err := r.h.IssueOCSPResponder(ctx, admin, "issuing", func(serial domain.Serial) (domain.OCSPResponderIssued, error) {
		calls++
		return domain.OCSPResponderIssued{Serial: serial, NotBefore: r.now, NotAfter: r.now.Add(time.Hour), Certificate: []byte{1}}, nil
	})
	if err != nil || calls != 1 || rec.CAID != "issuing" || !rec.Serial.Valid() {
		t.Fatalf("IssueOCSPResponder = %+v, %v after %d signatures", rec, err, calls)
	}
	if got := streamTypes(t, r, domain.CAStream("issuing")); len(got) != 5 || got[4] != domain.TypeOCSPResponderIssued {
		t.Fatalf("CA stream = %v", got)
	}
	if ca, err := r.h.LoadCA(ctx, "issuing"); err != nil || ca.CRLNumber != 3 || ca.Version != 5 {
		t.Fatalf("LoadCA after the responder = %+v, %v", ca, err)
	}
	for _, tc := range []struct {
		name string
		id   string
		edit func(*domain.OCSPResponderIssued)
		want *domain.Error
		code string
	}{
		{"another serial", "issuing", func(p *domain.OCSPResponderIssued) { p.Serial = "1" }, domain.ErrInvalid, "bad-serial"},
		{"no validity", "issuing", func(p *domain.OCSPResponderIssued) { p.NotAfter = p.NotBefore }, domain.ErrInvalid, "bad-validity"},
		{"no certificate", "issuing", func(p *domain.OCSPResponderIssued) { p.Certificate = nil }, domain.ErrInvalid, "no-certificate"},
		{"no such CA", "nope", func(*domain.OCSPResponderIssued) {}, domain.ErrNotFound, "no-ca"},
	} {
		_, err := r.h.IssueOCSPResponder(ctx, admin, tc.id, func(serial domain.Serial) (domain.OCSPResponderIssued, error) {
			p := domain.OCSPResponderIssued{Serial: serial, NotBefore: r.now, NotAfter: r.now.Add(time.Hour), Certificate: []byte{1}}
			tc.edit(&p)
			return p, nil
		})
		wantErr(t, err, tc.want, tc.code)
	}
	if got := streamTypes(t, r, domain.CAStream("issuing")); len(got) != 5 {
		t.Fatalf("refused responders were recorded: %v", got)
	}
}

// lintingSigner refuses every certificate the way the real signer does when a
// pre-issuance lint fails.
type lintingSigner struct{}

func (lintingSigner) SignCertificate(context.Context, domain.SignRequest) (domain.Signed, error) {
	return domain.Signed{}, &domain.Error{Kind: domain.KindInvalid, Code: "lint-failed", Detail: "lints failed: e_example",
		Err: &domain.LintFailure{Lints: []string{"e_example"}}}
}

func TestLintFailureIsRecorded(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	r.h.Signer = lintingSigner{}
	_, err := r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t)})
	wantErr(t, err, domain.ErrInvalid, "lint-failed")

	var rejected []domain.Event
	for e, err := range r.store.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Type == domain.TypeCertificateRejected {
			rejected = append(rejected, e)
		}
	}
	if len(rejected) != 1 || rejected[0].Sealed != nil || rejected[0].Actor != officer {
		t.Fatalf("rejections: %+v", rejected)
	}
	var p domain.CertificateRejected
	if err := domain.UnmarshalPublic(&rejected[0], &p); err != nil || p.SubjectID != id || !slices.Equal(p.Lints, []string{"e_example"}) {
		t.Fatalf("rejection = %+v, %v", p, err)
	}
	// Nothing was linked to the subject, and the serial names no certificate.
	if got := streamTypes(t, r, domain.SubjectStream(id)); !slices.Equal(got, []string{domain.TypeSubjectRegistered}) {
		t.Fatalf("subject stream = %v", got)
	}
	err = r.h.RevokeCertificate(ctx, officer, p.Serial, domain.ReasonKeyCompromise)
	wantErr(t, err, domain.ErrNotFound, "no-certificate")
}

func TestCorrectAndReissue(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	issue := func() domain.Issued {
		t.Helper()
		got := r.issue(t, id, "tls-client")
		return got
	}
	live, revoked := issue(), issue()
	if err := r.h.RevokeCertificate(ctx, officer, revoked.Serial, domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}

	out, err := r.h.CorrectAndReissue(ctx, officer, id, map[string]string{"common_name": "Ada King"}, domain.GroupIdentity, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Old != live.Serial {
		t.Fatalf("reissued %+v, want only %s", out, live.Serial)
	}
	old, _ := x509.ParseCertificate(live.Certificate)
	repl, err := x509.ParseCertificate(out[0].New.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if repl.Subject.CommonName != "Ada King" || string(repl.RawSubjectPublicKeyInfo) != string(old.RawSubjectPublicKeyInfo) {
		t.Fatalf("replacement names %q; same key: %v", repl.Subject.CommonName,
			string(repl.RawSubjectPublicKeyInfo) == string(old.RawSubjectPublicKeyInfo))
	}
	// The old certificate is revoked as superseded; revoking it again is a conflict.
	err = r.h.RevokeCertificate(ctx, officer, live.Serial, domain.ReasonSuperseded)
	var de *domain.Error
	if !errors.As(err, &de) || de.Code != "already-revoked" {
		t.Fatalf("old certificate not revoked: %v", err)
	}
	if got := streamTypes(t, r, domain.CertificateStream(live.Serial)); !slices.Equal(got, []string{domain.TypeCertificateIssued, domain.TypeCertificateRevoked}) {
		t.Fatalf("old stream = %v", got)
	}

	// A reissue that allow refuses records nothing, not even the correction.
	before := streamTypes(t, r, domain.SubjectStream(id))
	refused := errors.New("refused")
	_, err = r.h.CorrectAndReissue(ctx, officer, id, map[string]string{"common_name": "Ada Byron"}, domain.GroupIdentity,
		func(profile string) error {
			if profile == "tls-client" {
				return refused
			}
			return nil
		})
	if !errors.Is(err, refused) {
		t.Fatalf("refused reissue: %v", err)
	}
	if after := streamTypes(t, r, domain.SubjectStream(id)); !slices.Equal(after, before) {
		t.Fatalf("a refused reissue wrote to the subject: %v, then %v", before, after)
	}

	// An erased subject cannot be corrected or reissued.
	if err := r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	_, err = r.h.CorrectAndReissue(ctx, officer, id, map[string]string{"common_name": "X"}, domain.GroupIdentity, nil)
	wantErr(t, err, domain.ErrGone, "subject-erased")
}

// TestConcurrentReissueLeavesOneReplacement runs two corrections with reissue
// on one subject at once: whatever interleaving, the one valid certificate must
// end with exactly one valid replacement.
func TestConcurrentReissueLeavesOneReplacement(t *testing.T) {
	for round := range 5 {
		r := newRig(t)
		ctx := context.Background()
		id := r.register(t)
		original := r.issue(t, id, "tls-client")
		type result struct {
			reissued []domain.Reissued
			err      error
		}
		results := make(chan result, 2)
		for i := range 2 {
			go func() {
				re, err := r.h.CorrectAndReissue(ctx, officer, id, map[string]string{"common_name": fmt.Sprintf("Ada %d", i)}, domain.GroupIdentity, nil)
				results <- result{re, err}
			}()
		}
		replaced := 0
		for range 2 {
			res := <-results
			if res.err != nil {
				var de *domain.Error
				if !errors.As(res.err, &de) || de.Kind != domain.KindConflict {
					t.Fatalf("round %d: %v", round, res.err)
				}
			}
			replaced += len(res.reissued)
		}
		if replaced == 0 {
			t.Fatalf("round %d: neither correction reissued anything", round)
		}
		issued, revoked := map[domain.Serial]bool{}, map[domain.Serial]bool{}
		for e, err := range r.store.ReadAll(ctx, 1) {
			if err != nil {
				t.Fatal(err)
			}
			switch e.Type {
			case domain.TypeCertificateIssued:
				var p domain.CertificateIssued
				if err := domain.UnmarshalPublic(&e, &p); err != nil {
					t.Fatal(err)
				}
				issued[p.Serial] = true
			case domain.TypeCertificateRevoked:
				var p domain.CertificateRevoked
				if err := domain.UnmarshalPublic(&e, &p); err != nil {
					t.Fatal(err)
				}
				revoked[p.Serial] = true
			}
		}
		valid := 0
		for s := range issued {
			if !revoked[s] {
				valid++
			}
		}
		if valid != 1 || !revoked[original.Serial] || len(issued) < 2 {
			t.Fatalf("round %d: %d valid certificates after two concurrent reissues of one (issued %d, revoked %d, original revoked: %v)",
				round, valid, len(issued), len(revoked), revoked[original.Serial])
		}
	}
}

// certificateState folds the stream of certificate serial.
func certificateState(t *testing.T, r *rig, serial domain.Serial) domain.Certificate {
	t.Helper()
	var c domain.Certificate
	for e, err := range r.store.ReadStream(context.Background(), domain.CertificateStream(serial), 1) {
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(&e); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TestLostReissueWithdrawsItsChain puts the race that
// TestConcurrentReissueLeavesOneReplacement hits now and then at fixed
// points. Reissue B has issued its replacement b1 of the original and not
// yet superseded the original; reissue A reads the subject then, finds both
// valid, and supersedes both (a1, a2). B then finds the original superseded
// and withdraws b1: b1 is already superseded by a2, so a2 is withdrawn, and
// a1 is the one valid certificate left, as before the corrections.
func TestLostReissueWithdrawsItsChain(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	original := r.issue(t, id, "tls-client")
	b1 := r.issue(t, id, "tls-client") // B's replacement, before B supersedes the original
	reissued, err := r.h.CorrectAndReissue(ctx, officer, id, map[string]string{"common_name": "Ada A"}, domain.GroupIdentity, nil)
	if err != nil || len(reissued) != 2 || reissued[0].Old != original.Serial || reissued[1].Old != b1.Serial {
		t.Fatalf("reissue A = %+v, %v; want the original and b1 replaced", reissued, err)
	}
	a1, a2 := reissued[0].New.Serial, reissued[1].New.Serial
	for old, want := range map[domain.Serial]domain.Serial{original.Serial: a1, b1.Serial: a2} {
		if c := certificateState(t, r, old); !c.Revoked || c.Reason != domain.ReasonSuperseded || c.ReplacedBy != want {
			t.Fatalf("%s: revoked %v, reason %d, replaced by %q; want superseded by %s", old, c.Revoked, c.Reason, c.ReplacedBy, want)
		}
	}

	// B lost the original: its withdrawal of b1 reaches a2.
	if err := r.h.Withdraw(ctx, officer, b1.Serial); err != nil {
		t.Fatal(err)
	}
	for _, s := range []domain.Serial{original.Serial, b1.Serial, a1, a2} {
		c := certificateState(t, r, s)
		if valid := !c.Revoked; valid != (s == a1) {
			t.Errorf("%s: valid %v; want only a1 (%s) valid", s, valid, a1)
		}
	}
	if c := certificateState(t, r, a2); c.Reason != domain.ReasonSuperseded || c.ReplacedBy != "" {
		t.Errorf("a2 withdrawn with reason %d, replaced by %q; want superseded, by nothing", c.Reason, c.ReplacedBy)
	}

	// Withdrawing again, or a certificate revoked for another reason,
	// changes nothing.
	other := r.issue(t, id, "tls-client")
	if err := r.h.RevokeCertificate(ctx, officer, other.Serial, domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	head, err := r.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []domain.Serial{b1.Serial, a2, other.Serial} {
		if err := r.h.Withdraw(ctx, officer, s); err != nil {
			t.Fatalf("withdraw %s again: %v", s, err)
		}
	}
	// Nor does withdrawing one that has expired.
	now := r.h.Now
	r.h.Now = func() time.Time { return now().Add(20 * 365 * 24 * time.Hour) }
	if err := r.h.Withdraw(ctx, officer, a1); err != nil {
		t.Fatalf("withdraw an expired certificate: %v", err)
	}
	r.h.Now = now
	if after, _ := r.store.Head(ctx); after != head {
		t.Fatalf("withdrawing revoked or expired certificates appended %d events", after-head)
	}
}

// TestKeyGeneratedIsRecorded: a soft token's certificate says publicly that
// caledger generated its key, its replacement after a correction says so too,
// and a certificate from the subject's own CSR leaves the field out of its
// public part altogether.
func TestKeyGeneratedIsRecorded(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t)
	token, err := r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t), KeyGenerated: true})
	if err != nil {
		t.Fatal(err)
	}
	own := r.issue(t, id, "tls-client")
	issuedEvent := func(serial domain.Serial) (domain.Event, domain.CertificateIssued) {
		t.Helper()
		for e, err := range r.store.ReadStream(ctx, domain.CertificateStream(serial), 1) {
			if err != nil {
				t.Fatal(err)
			}
			var p domain.CertificateIssued
			if err := domain.UnmarshalPublic(&e, &p); err != nil {
				t.Fatal(err)
			}
			return e, p
		}
		t.Fatalf("no events for %s", serial)
		return domain.Event{}, domain.CertificateIssued{}
	}
	e, p := issuedEvent(token.Serial)
	if !p.KeyGenerated || !bytes.Contains(e.Public, []byte(`"key_generated":true`)) {
		t.Fatalf("soft token's certificate.issued = %s", e.Public)
	}
	e, p = issuedEvent(own.Serial)
	if p.KeyGenerated || bytes.Contains(e.Public, []byte("key_generated")) {
		t.Fatalf("CSR certificate.issued = %s", e.Public)
	}
	if c, err := r.h.CertificateState(ctx, token.Serial); err != nil || !c.KeyGenerated {
		t.Fatalf("CertificateState = %+v, %v", c, err)
	}

	out, err := r.h.CorrectAndReissue(ctx, officer, id, map[string]string{"common_name": "Ada King"}, domain.GroupIdentity, nil)
	if err != nil || len(out) != 2 {
		t.Fatalf("reissued %+v, %v", out, err)
	}
	for _, re := range out {
		_, p := issuedEvent(re.New.Serial)
		if p.KeyGenerated != (re.Old == token.Serial) {
			t.Errorf("replacement of %s: key_generated %v", re.Old, p.KeyGenerated)
		}
	}
}

// failingSigner fails every signature with err.
type failingSigner struct{ err error }

func (s failingSigner) SignCertificate(context.Context, domain.SignRequest) (domain.Signed, error) {
	return domain.Signed{}, s.err
}

// TestSignerErrors: a signer's *domain.Error reaches the caller as the signer
// chose it (wrapped or not), any other error becomes unavailable naming the
// signer, and neither writes to the ledger. The same holds for the signatures
// of certificates, CRLs and delegated OCSP responders.
func TestSignerErrors(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	admin := domain.Actor{ID: "init", Role: "admin"}
	if err := r.h.CreateCA(ctx, admin, domain.CACreated{CAID: "issuing", Kind: domain.CAKindIssuing, ParentID: "root",
		Certificate: r.h.Signer.(*testSigner).ca.Raw, Key: domain.CAKey{Provider: "software", Label: "issuing", Algorithm: "P-256"}}); err != nil {
		t.Fatal(err)
	}
	id := r.register(t)
	chosen := &domain.Error{Kind: domain.KindInvalid, Code: "bad-csr", Detail: "the CSR is refused"}
	ops := []struct {
		name, signer string
		run          func(err error) error
	}{
		{"certificate", "signer", func(err error) error {
			r.h.Signer = failingSigner{err}
			_, err = r.h.IssueCertificate(ctx, officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t)})
			return err
		}},
		{"CRL", "CRL signer", func(err error) error {
			_, _, err = r.h.PublishCRL(ctx, admin, "issuing", func(uint64, time.Time) (domain.CRLPublished, []byte, error) {
				return domain.CRLPublished{}, nil, err
			})
			return err
		}},
		{"OCSP responder", "OCSP responder signer", func(err error) error {
			_, err = r.h.IssueOCSPResponder(ctx, admin, "issuing", func(domain.Serial) (domain.OCSPResponderIssued, error) {
				return domain.OCSPResponderIssued{}, err
			})
			return err
		}},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			head, err := r.store.Head(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, signerErr := range []error{chosen, fmt.Errorf("lint: %w", chosen)} {
				err := op.run(signerErr)
				wantErr(t, err, domain.ErrInvalid, "bad-csr")
				if !errors.Is(err, signerErr) {
					t.Errorf("%v: the signer's error is not in the chain", err)
				}
			}
			plain := errors.New("token removed")
			err = op.run(plain)
			wantErr(t, err, domain.ErrUnavailable, "unavailable")
			if !errors.Is(err, plain) || !strings.Contains(err.Error(), op.signer+" failed") {
				t.Errorf("%v: want unavailable naming the %s, wrapping its error", err, op.signer)
			}
			if after, err := r.store.Head(ctx); err != nil || after != head {
				t.Fatalf("the ledger moved from %d to %d (%v)", head, after, err)
			}
		})
	}
}
