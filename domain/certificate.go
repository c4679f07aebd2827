package domain

import (
	"fmt"
	"time"
)

// Certificate is the aggregate of one certificate, rebuilt from its stream.
type Certificate struct {
	Serial    Serial
	CAID      string
	SubjectID SubjectID
	Profile   string
	Version   uint64
	Issued    bool
	// KeyGenerated: caledger generated the key pair (a soft token).
	KeyGenerated bool
	// Rejected is set when pre-issuance linting refused the certificate: the
	// serial exists in the ledger but no certificate was issued under it.
	Rejected  bool
	NotBefore time.Time
	NotAfter  time.Time
	// SPKISHA256 is the hex SHA-256 of the certificate's public key info.
	SPKISHA256 string
	Revoked    bool
	Reason     RevocationReason
	RevokedAt  time.Time
	// ReplacedBy is the certificate a correction reissued c as, if any.
	ReplacedBy Serial
	Deleted    bool
}

// Apply folds one event of the certificate's stream into c.
func (c *Certificate) Apply(e *Event) error {
	if e.Version != c.Version+1 {
		return fmt.Errorf("certificate stream %s: version %d after %d", e.Stream, e.Version, c.Version)
	}
	switch e.Type {
	case TypeCertificateIssued:
		var p CertificateIssued
		if err := UnmarshalPublic(e, &p); err != nil {
			return err
		}
		c.Serial, c.CAID, c.SubjectID, c.Profile, c.NotAfter, c.Issued = p.Serial, p.CAID, p.SubjectID, p.Profile, p.NotAfter, true
		c.KeyGenerated, c.NotBefore, c.SPKISHA256 = p.KeyGenerated, p.NotBefore, p.SPKISHA256
	case TypeCertificateRevoked:
		var p CertificateRevoked
		if err := UnmarshalPublic(e, &p); err != nil {
			return err
		}
		c.Revoked, c.Reason, c.RevokedAt, c.ReplacedBy = true, p.Reason, p.RevokedAt, p.ReplacedBy
	case TypeCertificateDeleted:
		c.Deleted = true
	case TypeCertificateRejected:
		var p CertificateRejected
		if err := UnmarshalPublic(e, &p); err != nil {
			return err
		}
		c.Serial, c.CAID, c.SubjectID, c.Profile, c.Rejected = p.Serial, p.CAID, p.SubjectID, p.Profile, true
	default:
		return fmt.Errorf("certificate stream %s: unexpected event type %q", e.Stream, e.Type)
	}
	c.Version = e.Version
	return nil
}

// Issue decides the record of a newly signed certificate. p describes it.
func (c *Certificate) Issue(p CertificateIssued, material CertificateMaterial) ([]Change, error) {
	if c.Issued || c.Rejected {
		return nil, errorf(KindConflict, "serial-taken", "serial %s is already used", c.Serial)
	}
	if !p.Serial.Valid() || !p.SubjectID.Valid() || !p.NotAfter.After(p.NotBefore) {
		return nil, errorf(KindInvalid, "bad-certificate", "issued certificate %s has an invalid serial, subject or validity", p.Serial)
	}
	return []Change{{Payload: p, Personal: material, Subject: p.SubjectID, KeyGroup: GroupIdentity}}, nil
}

// Revoke decides the revocation of c for reason at now. Revocation is final: a
// second revocation is a conflict and changes nothing.
func (c *Certificate) Revoke(reason RevocationReason, now time.Time) ([]Change, error) {
	return c.revoke(reason, now, "")
}

// revoke is Revoke, recording replacedBy when it is not empty.
func (c *Certificate) revoke(reason RevocationReason, now time.Time, replacedBy Serial) ([]Change, error) {
	if err := c.present(); err != nil {
		return nil, err
	}
	if !reason.Valid() {
		return nil, errorf(KindInvalid, "bad-reason", "revocation reason %d is not one a CA may use (RFC 5280 5.3.1)", int(reason))
	}
	if c.Revoked {
		return nil, &Error{Kind: KindConflict, Code: "already-revoked",
			Detail: fmt.Sprintf("certificate %s was already revoked at %s", c.Serial, c.RevokedAt.Format(time.RFC3339))}
	}
	return []Change{{Payload: CertificateRevoked{Serial: c.Serial, CAID: c.CAID, Reason: reason, RevokedAt: now.UTC(), ReplacedBy: replacedBy}}}, nil
}

// Supersede decides the revocation of c at now, reason superseded, by
// replacement: the certificate a correction reissued it as.
func (c *Certificate) Supersede(replacement Serial, now time.Time) ([]Change, error) {
	if !replacement.Valid() || replacement == c.Serial {
		return nil, errorf(KindInvalid, "bad-serial", "certificate %s cannot be replaced by %q", c.Serial, replacement)
	}
	return c.revoke(ReasonSuperseded, now, replacement)
}

// Delete decides the deletion of c at now. A certificate can be deleted once it is
// revoked or expired; when retainUntilExpiry (a CA policy) is set, only once it is
// expired.
func (c *Certificate) Delete(now time.Time, retainUntilExpiry bool) ([]Change, error) {
	if err := c.present(); err != nil {
		return nil, err
	}
	expired := !now.Before(c.NotAfter)
	switch {
	case retainUntilExpiry && !expired:
		return nil, &Error{Kind: KindConflict, Code: "retained-until-expiry",
			Detail: fmt.Sprintf("CA policy keeps certificate %s until it expires", c.Serial),
			Until:  c.NotAfter.UTC().Format(time.RFC3339)}
	case !c.Revoked && !expired:
		return nil, errorf(KindConflict, "not-revoked", "certificate %s must be revoked or expired before it is deleted", c.Serial)
	}
	return []Change{{Payload: CertificateDeleted{Serial: c.Serial, CAID: c.CAID}}}, nil
}

func (c *Certificate) present() error {
	switch {
	case !c.Issued:
		return errorf(KindNotFound, "no-certificate", "no such certificate")
	case c.Deleted:
		return errorf(KindGone, "certificate-deleted", "certificate %s was deleted", c.Serial)
	}
	return nil
}
