package projections

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/caledger/caledger/domain"
)

// Statuses of a certificate in the certificates view. Expiry is not a status: it
// is NotAfter compared with the caller's clock.
const (
	StatusValid   = "valid"
	StatusRevoked = "revoked"
	StatusDeleted = "deleted"
)

func applyCertificates(b *batch, e *eventInfo) error {
	var err error
	switch p := e.payload.(type) {
	case *domain.CertificateIssued:
		b.statusChanged(p.Serial)
		_, err = b.exec(`INSERT INTO certificates (serial, ca_id, subject_id, profile, status, not_before, not_after,
				spki_sha256, issued_position, issued_at, key_generated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (serial) DO NOTHING`,
			p.Serial, p.CAID, p.SubjectID, p.Profile, StatusValid, micros(p.NotBefore), micros(p.NotAfter),
			p.SPKISHA256, e.Position, micros(e.Time), p.KeyGenerated)
	case *domain.CertificateRevoked:
		b.statusChanged(p.Serial)
		_, err = b.exec(`UPDATE certificates SET status = ?, revoked_at = ?, reason = ? WHERE serial = ? AND status = ?`,
			StatusRevoked, micros(p.RevokedAt), int(p.Reason), p.Serial, StatusValid)
	case *domain.CertificateDeleted:
		// Not a status change: CertificateStatus reads the CA and the
		// revocation, which a deletion leaves as they are.
		_, err = b.exec(`UPDATE certificates SET status = ? WHERE serial = ?`, StatusDeleted, p.Serial)
	}
	return err
}

func applyRevocations(b *batch, e *eventInfo) error {
	var err error
	switch p := e.payload.(type) {
	case *domain.CertificateIssued:
		_, err = b.exec(`INSERT INTO revocation_validity (serial, not_after) VALUES (?, ?) ON CONFLICT (serial) DO NOTHING`,
			p.Serial, micros(p.NotAfter))
	case *domain.CertificateRevoked:
		b.statusChanged(p.Serial)
		// A certificate whose issuance this projection never saw stays on the CRL
		// for good rather than dropping off it.
		if _, err = b.exec(`INSERT INTO revocations (ca_id, serial, revoked_at, reason, not_after, position)
				VALUES (?1, ?2, ?3, ?4, coalesce((SELECT not_after FROM revocation_validity WHERE serial = ?2), ?5), ?6)
				ON CONFLICT (ca_id, serial) DO NOTHING`,
			p.CAID, p.Serial, micros(p.RevokedAt), int(p.Reason), int64(math.MaxInt64), e.Position); err != nil {
			return err
		}
		if _, err = b.exec(`INSERT INTO revocation_revisions (ca_id, position) VALUES (?, ?)
				ON CONFLICT (ca_id) DO UPDATE SET position = excluded.position`, p.CAID, e.Position); err != nil {
			return err
		}
		_, err = b.exec(`DELETE FROM revocation_validity WHERE serial = ?`, p.Serial)
	case *domain.CertificateDeleted:
		// A revoked certificate stays in revocations until it expires, deleted or
		// not: a relying party must still find it on the CRL.
		_, err = b.exec(`DELETE FROM revocation_validity WHERE serial = ?`, p.Serial)
	}
	return err
}

func applyAccessLog(b *batch, e *eventInfo) error {
	p, ok := e.payload.(*domain.PersonalDataAccessed)
	if !ok {
		return nil
	}
	_, err := b.exec(`INSERT INTO access_log (position, time, actor_id, actor_role, subject_id, operation)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (position) DO NOTHING`,
		e.Position, micros(e.Time), e.Actor.ID, e.Actor.Role, p.SubjectID, p.Operation)
	return err
}

func applySubjects(b *batch, e *eventInfo) error {
	switch p := e.payload.(type) {
	case *domain.SubjectRegistered:
		if _, err := b.exec(`INSERT INTO subjects (subject_id, registered_at, registered_position) VALUES (?, ?, ?)
				ON CONFLICT (subject_id) DO NOTHING`, p.SubjectID, micros(e.Time), e.Position); err != nil {
			return err
		}
		return b.setAttributes(e, p.SubjectID)
	case *domain.SubjectCorrected:
		return b.setAttributes(e, p.SubjectID)
	case *domain.SubjectErased:
		b.erased = true
		if len(p.KeyGroups) == 0 {
			if _, err := b.exec(`DELETE FROM subject_attributes WHERE subject_id = ?`, p.SubjectID); err != nil {
				return err
			}
			_, err := b.exec(`DELETE FROM subjects WHERE subject_id = ?`, p.SubjectID)
			return err
		}
		for _, g := range p.KeyGroups {
			if _, err := b.exec(`DELETE FROM subject_attributes WHERE subject_id = ? AND key_group = ?`, p.SubjectID, g); err != nil {
				return err
			}
		}
		_, err := b.exec(`UPDATE subject_attributes SET current = `+currentExpr+`
			WHERE subject_id = ? AND current <> `+currentExpr, p.SubjectID)
		return err
	}
	return nil
}

// currentExpr is whether a subject_attributes row is its subject's value of the
// attribute: the latest row of any group still held, unless that row removed it.
const currentExpr = `(value <> '' AND position = (SELECT max(o.position) FROM subject_attributes AS o
	WHERE o.subject_id = subject_attributes.subject_id AND o.name = subject_attributes.name))`

// setAttributes records the attributes sealed in e (subject.registered or
// subject.corrected) as the values of e's key group. A sealed part whose key was
// destroyed is skipped: the subject, or that group, was erased later, and its
// erasure (still to come in the ledger) has nothing of it to delete.
func (b *batch) setAttributes(e *eventInfo, subject domain.SubjectID) error {
	s := e.Sealed
	if s == nil {
		return errors.New("no sealed attributes")
	}
	if s.SubjectID != subject {
		return errors.New("sealed part belongs to another subject")
	}
	plaintext, err := b.v.seal.Open(b.ctx, s, domain.SealedAD(e.Event))
	if errors.Is(err, domain.ErrShredded) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open sealed attributes: %w", err)
	}
	var a domain.SubjectAttributes
	err = json.Unmarshal(plaintext, &a)
	clear(plaintext)
	if err != nil {
		// json errors may quote the input, which is personal data.
		return errors.New("sealed attributes do not decode")
	}
	names := make([]string, 0, len(a.Attributes))
	for name := range a.Attributes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		value := a.Attributes[name]
		if _, err := b.exec(`INSERT INTO subject_attributes (subject_id, name, key_group, position, value, folded, current)
				VALUES (?, ?, ?, ?, ?, ?, 0)
				ON CONFLICT (subject_id, name, key_group) DO UPDATE
				SET position = excluded.position, value = excluded.value, folded = excluded.folded`,
			subject, name, s.KeyGroup, e.Position, value, fold(value)); err != nil {
			return err
		}
		if _, err := b.exec(`UPDATE subject_attributes SET current = `+currentExpr+`
				WHERE subject_id = ? AND name = ? AND current <> `+currentExpr, subject, name); err != nil {
			return err
		}
	}
	return nil
}

// fold maps a value to the form searches compare, so that matching ignores case.
// Upper then lower case also folds characters such as 'ſ' and the Kelvin sign
// that have no lower-case form of their own.
func fold(s string) string { return strings.ToLower(strings.ToUpper(s)) }

// Times are stored as microseconds since the Unix epoch: nanoseconds overflow
// int64 in 2262, before the 9999-12-31 notAfter of RFC 5280 4.1.2.5.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(n int64) time.Time { return time.UnixMicro(n).UTC() }
