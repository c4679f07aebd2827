package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

const sid domain.SubjectID = "00112233445566778899aabbccddeeff"

// history turns decided changes into stored events, as a handler and a store
// would (without sealing: aggregates never read sealed parts).
func history(t *testing.T, stream string, changes ...domain.Change) []domain.Event {
	t.Helper()
	var out []domain.Event
	for i, c := range changes {
		public, err := domain.MarshalPublic(c.Payload)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, domain.Event{Position: uint64(i + 1), Stream: stream, Version: uint64(i + 1),
			Type: c.Payload.EventType(), Schema: c.Payload.SchemaVersion(), Time: time.Now(), Public: public})
	}
	return out
}

func subjectFrom(t *testing.T, changes ...domain.Change) *domain.Subject {
	t.Helper()
	var s domain.Subject
	for _, e := range history(t, domain.SubjectStream(sid), changes...) {
		if err := s.Apply(&e); err != nil {
			t.Fatal(err)
		}
	}
	return &s
}

// must(t)(decision) returns the one change of a decision that must succeed.
func must(t *testing.T) func([]domain.Change, error) domain.Change {
	return func(changes []domain.Change, err error) domain.Change {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) != 1 {
			t.Fatalf("%d changes, want 1", len(changes))
		}
		return changes[0]
	}
}

func wantKind(t *testing.T, err error, kind *domain.Error, code string) {
	t.Helper()
	var de *domain.Error
	if !errors.Is(err, kind) || !errors.As(err, &de) || de.Code != code {
		t.Fatalf("err = %v, want kind %v code %q", err, kind.Kind, code)
	}
}

func TestSubjectRules(t *testing.T) {
	var empty domain.Subject
	reg := must(t)(empty.Register(sid, map[string]string{"common_name": "Ada Example", "email": "ada@example.org"}))
	if reg.Personal == nil || reg.KeyGroup != domain.GroupIdentity || reg.Subject != sid {
		t.Fatalf("registration does not seal the attributes under the identity group: %+v", reg)
	}
	registered := subjectFrom(t, reg)
	if !registered.Registered || strings.Join(registered.Attributes, ",") != "common_name,email" {
		t.Fatalf("registered subject: %+v", registered)
	}

	t.Run("register twice", func(t *testing.T) {
		_, err := registered.Register(sid, map[string]string{"email": "x@example.org"})
		wantKind(t, err, domain.ErrConflict, "already-registered")
	})
	t.Run("bad attributes", func(t *testing.T) {
		for name, attrs := range map[string]map[string]string{
			"none":         {},
			"unknown":      {"shoe_size": "42"},
			"empty":        {"email": ""},
			"control":      {"common_name": "Ada\x00Example"},
			"not utf-8":    {"common_name": "\xff"},
			"too long":     {"common_name": strings.Repeat("a", domain.MaxAttributeLen+1)},
			"name is data": {"Ada Lovelace": "x"},
		} {
			var s domain.Subject
			_, err := s.Register(sid, attrs)
			if !errors.Is(err, domain.ErrInvalid) {
				t.Errorf("%s: %v, want invalid", name, err)
			}
			// Errors name attributes, never echo values or unknown names.
			if err != nil && (strings.Contains(err.Error(), "Ada") || strings.Contains(err.Error(), "42")) {
				t.Errorf("%s: error %q echoes caller data", name, err)
			}
		}
	})
	t.Run("bad id", func(t *testing.T) {
		var s domain.Subject
		_, err := s.Register("Ada", map[string]string{"email": "a@example.org"})
		wantKind(t, err, domain.ErrInvalid, "bad-subject-id")
	})
	t.Run("correct", func(t *testing.T) {
		c := must(t)(registered.Correct(map[string]string{"surname": "Example", "email": ""}, "identity"))
		s := subjectFrom(t, reg, c)
		if strings.Join(s.Attributes, ",") != "common_name,email,surname" {
			// Names held are the union; an empty value removes the value, which only
			// sealed parts can tell.
			t.Fatalf("attributes after correction: %v", s.Attributes)
		}
	})
	t.Run("unregistered", func(t *testing.T) {
		var s domain.Subject
		_, err := s.Correct(map[string]string{"email": "a@b"}, "identity")
		wantKind(t, err, domain.ErrNotFound, "no-subject")
		_, err = s.LinkCertificate("1f", "issuing")
		wantKind(t, err, domain.ErrNotFound, "no-subject")
	})
	t.Run("erased subject accepts nothing", func(t *testing.T) {
		er := must(t)(registered.Erase(nil, domain.BasisErasureRequest))
		s := subjectFrom(t, reg, er)
		if !s.Erased || s.Attributes != nil {
			t.Fatalf("erased subject: %+v", s)
		}
		_, err := s.LinkCertificate("1f", "issuing")
		wantKind(t, err, domain.ErrGone, "subject-erased")
		_, err = s.Correct(map[string]string{"email": "a@b"}, "identity")
		wantKind(t, err, domain.ErrGone, "subject-erased")
		_, err = s.Erase(nil, domain.BasisErasureRequest)
		wantKind(t, err, domain.ErrGone, "subject-erased")
		wantKind(t, s.CheckReadable(), domain.ErrGone, "subject-erased")
	})
	t.Run("group erasure", func(t *testing.T) {
		er := must(t)(registered.Erase([]string{domain.GroupNationalID}, domain.BasisConsentWithdrawn))
		s := subjectFrom(t, reg, er)
		if s.Erased || len(s.ErasedGroups) != 1 {
			t.Fatalf("group-erased subject: %+v", s)
		}
		_, err := s.Correct(map[string]string{"serial_number": "x"}, domain.GroupNationalID)
		wantKind(t, err, domain.ErrGone, "group-erased")
		must(t)(s.LinkCertificate("1f", "issuing"))
		if !s.ErasureRecorded([]string{domain.GroupNationalID}) || s.ErasureRecorded(nil) || s.ErasureRecorded([]string{domain.GroupIdentity}) {
			t.Fatal("ErasureRecorded does not follow the erased groups")
		}
	})
	t.Run("identity erased alone", func(t *testing.T) {
		er := must(t)(registered.Erase([]string{domain.GroupIdentity}, domain.BasisErasureRequest))
		s := subjectFrom(t, reg, er)
		_, err := s.LinkCertificate("1f", "issuing")
		wantKind(t, err, domain.ErrGone, "identity-erased")
		wantKind(t, s.CheckIdentity(), domain.ErrGone, "identity-erased")
	})
	t.Run("caller text never becomes public", func(t *testing.T) {
		// Key groups, erasure bases and CA ids end up in public parts: fixed lists
		// and slugs only, so an e-mail address or a name is refused.
		_, err := registered.Correct(map[string]string{"email": "a@example.org"}, "ada@example.org")
		wantKind(t, err, domain.ErrInvalid, "bad-key-group")
		_, err = registered.Erase([]string{"Ada Lovelace"}, domain.BasisErasureRequest)
		wantKind(t, err, domain.ErrInvalid, "bad-key-group")
		_, err = registered.Erase(nil, "asked by ada@example.org")
		wantKind(t, err, domain.ErrInvalid, "bad-basis")
		_, err = registered.LinkCertificate("1f", "ada@example.org")
		wantKind(t, err, domain.ErrInvalid, "bad-ca-id")
	})
	t.Run("erasure needs a basis", func(t *testing.T) {
		_, err := registered.Erase(nil, "")
		wantKind(t, err, domain.ErrInvalid, "bad-basis")
	})
	t.Run("link", func(t *testing.T) {
		r := must(t)(registered.LinkCertificate("1f", "issuing"))
		s := subjectFrom(t, reg, r)
		if len(s.Serials) != 1 || s.Serials[0] != "1f" {
			t.Fatalf("serials: %v", s.Serials)
		}
		for _, bad := range []domain.Serial{"", "0f", "1F", "xyz", domain.Serial(strings.Repeat("1", 41))} {
			_, err := registered.LinkCertificate(bad, "issuing")
			wantKind(t, err, domain.ErrInvalid, "bad-serial")
		}
	})
	t.Run("apply rejects gaps and strangers", func(t *testing.T) {
		var s domain.Subject
		evs := history(t, "subject-x", reg)
		evs[0].Version = 2
		if err := s.Apply(&evs[0]); err == nil {
			t.Fatal("Apply accepted a version gap")
		}
		e := history(t, "subject-x", domain.Change{Payload: domain.CertificateDeleted{Serial: "1f"}})[0]
		if err := s.Apply(&e); err == nil {
			t.Fatal("Apply accepted a certificate event on a subject stream")
		}
	})
}

func TestCertificateRules(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	issued := domain.CertificateIssued{Serial: "1f", CAID: "issuing", SubjectID: sid, Profile: "tls-client",
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour), SPKISHA256: "ab"}
	var fresh domain.Certificate
	iss := must(t)(fresh.Issue(issued, domain.CertificateMaterial{Certificate: []byte{1}}))
	if iss.Personal == nil || iss.Subject != sid {
		t.Fatal("the certificate DER is not sealed under the subject's key")
	}
	certFrom := func(changes ...domain.Change) *domain.Certificate {
		var c domain.Certificate
		for _, e := range history(t, "cert-1f", changes...) {
			if err := c.Apply(&e); err != nil {
				t.Fatal(err)
			}
		}
		return &c
	}
	live := certFrom(iss)

	t.Run("issue twice", func(t *testing.T) {
		_, err := live.Issue(issued, domain.CertificateMaterial{})
		wantKind(t, err, domain.ErrConflict, "serial-taken")
	})
	t.Run("delete before revoke", func(t *testing.T) {
		_, err := live.Delete(now, false)
		wantKind(t, err, domain.ErrConflict, "not-revoked")
	})
	t.Run("revoke, then revoke again", func(t *testing.T) {
		rev := must(t)(live.Revoke(domain.ReasonKeyCompromise, now))
		c := certFrom(iss, rev)
		if !c.Revoked || c.Reason != domain.ReasonKeyCompromise || !c.RevokedAt.Equal(now) {
			t.Fatalf("revoked: %+v", c)
		}
		_, err := c.Revoke(domain.ReasonSuperseded, now)
		wantKind(t, err, domain.ErrConflict, "already-revoked")
		del := must(t)(c.Delete(now, false))
		d := certFrom(iss, rev, del)
		_, err = d.Revoke(domain.ReasonSuperseded, now)
		wantKind(t, err, domain.ErrGone, "certificate-deleted")
		_, err = d.Delete(now, false)
		wantKind(t, err, domain.ErrGone, "certificate-deleted")
	})
	t.Run("bad reasons", func(t *testing.T) {
		for _, r := range []domain.RevocationReason{-1, 6, 7, 8, 11} {
			_, err := live.Revoke(r, now)
			wantKind(t, err, domain.ErrInvalid, "bad-reason")
		}
	})
	t.Run("expired may be deleted without revocation", func(t *testing.T) {
		must(t)(live.Delete(issued.NotAfter, false))
	})
	t.Run("retain until expiry", func(t *testing.T) {
		rev := must(t)(live.Revoke(domain.ReasonSuperseded, now))
		c := certFrom(iss, rev)
		_, err := c.Delete(now, true)
		wantKind(t, err, domain.ErrConflict, "retained-until-expiry")
		var de *domain.Error
		errors.As(err, &de)
		if de.Until != issued.NotAfter.Format(time.RFC3339) {
			t.Fatalf("retention error says until %q, want %s", de.Until, issued.NotAfter.Format(time.RFC3339))
		}
		must(t)(c.Delete(issued.NotAfter, true))
	})
	t.Run("unknown certificate", func(t *testing.T) {
		var c domain.Certificate
		_, err := c.Revoke(domain.ReasonUnspecified, now)
		wantKind(t, err, domain.ErrNotFound, "no-certificate")
	})
}
