package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"github.com/caledger/caledger/domain"
)

// Limits on the rows one query returns.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

func clampLimit(n int) int {
	if n <= 0 {
		return DefaultLimit
	}
	return min(n, MaxLimit)
}

// CertificateRow is a certificate in the certificates view: public facts only.
type CertificateRow struct {
	Serial              domain.Serial
	CAID                string
	SubjectID           domain.SubjectID
	Profile             string
	Status              string // StatusValid, StatusRevoked or StatusDeleted
	NotBefore, NotAfter time.Time
	SPKISHA256          string
	// RevokedAt and Reason are set once the certificate was revoked, and kept
	// when it is then deleted.
	RevokedAt time.Time
	Reason    domain.RevocationReason
	// IssuedPosition is the ledger position of certificate.issued; IssuedAt its time.
	IssuedPosition uint64
	IssuedAt       time.Time
	// KeyGenerated: caledger generated the key pair (a soft token).
	KeyGenerated bool
}

const certificateColumns = `serial, ca_id, subject_id, profile, status, not_before, not_after, spki_sha256,
	revoked_at, reason, issued_position, issued_at, key_generated`

const selectCertificateSQL = `SELECT ` + certificateColumns + ` FROM certificates WHERE serial = ?`

type scanner interface{ Scan(dest ...any) error }

func scanCertificate(s scanner) (CertificateRow, error) {
	var r CertificateRow
	var notBefore, notAfter, issuedAt int64
	var revokedAt, reason sql.NullInt64
	err := s.Scan(&r.Serial, &r.CAID, &r.SubjectID, &r.Profile, &r.Status, &notBefore, &notAfter,
		&r.SPKISHA256, &revokedAt, &reason, &r.IssuedPosition, &issuedAt, &r.KeyGenerated)
	if err != nil {
		return r, err
	}
	r.NotBefore, r.NotAfter, r.IssuedAt = fromMicros(notBefore), fromMicros(notAfter), fromMicros(issuedAt)
	if revokedAt.Valid {
		r.RevokedAt = fromMicros(revokedAt.Int64)
		r.Reason = domain.RevocationReason(reason.Int64)
	}
	return r, nil
}

// queryErr turns errors caused by Close into ErrClosed.
func (v *Views) queryErr(err error) error {
	if v.closed() {
		return ErrClosed
	}
	return fmt.Errorf("projections: %w", err)
}

// Certificate returns the certificate with serial, whatever its status, or
// ErrNotFound.
func (v *Views) Certificate(ctx context.Context, serial domain.Serial) (CertificateRow, error) {
	if v.closed() {
		return CertificateRow{}, ErrClosed
	}
	r, err := scanCertificate(v.certStmt.QueryRowContext(ctx, serial))
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, v.queryErr(err)
	}
	return r, nil
}

// CertificateFilter selects certificates. Empty fields select all.
type CertificateFilter struct {
	CAID      string
	SubjectID domain.SubjectID
	Status    string // StatusValid, StatusRevoked, StatusDeleted or ""
	// After is a cursor: only serials after it (in the views' serial order, which
	// is that of the strings) are returned. Pass the last serial of a page to get
	// the next.
	After domain.Serial
	// Limit bounds the rows returned: DefaultLimit when zero, at most MaxLimit.
	Limit int
}

// Certificates returns the certificates that f selects, ordered by serial.
func (v *Views) Certificates(ctx context.Context, f CertificateFilter) ([]CertificateRow, error) {
	var where []string
	var args []any
	if f.CAID != "" {
		where, args = append(where, "ca_id = ?"), append(args, f.CAID)
	}
	if f.SubjectID != "" {
		where, args = append(where, "subject_id = ?"), append(args, f.SubjectID)
	}
	switch f.Status {
	case "":
	case StatusValid, StatusRevoked, StatusDeleted:
		where, args = append(where, "status = ?"), append(args, f.Status)
	default:
		return nil, fmt.Errorf("%w: status must be %s, %s or %s", ErrInvalidQuery, StatusValid, StatusRevoked, StatusDeleted)
	}
	if f.After != "" {
		where, args = append(where, "serial > ?"), append(args, f.After)
	}
	q := `SELECT ` + certificateColumns + ` FROM certificates`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY serial LIMIT ?`
	args = append(args, clampLimit(f.Limit))
	return v.certificates(ctx, q, args...)
}

// SubjectCertificates returns every certificate of subject id, ordered by serial.
func (v *Views) SubjectCertificates(ctx context.Context, id domain.SubjectID) ([]CertificateRow, error) {
	return v.certificates(ctx, `SELECT `+certificateColumns+` FROM certificates WHERE subject_id = ? ORDER BY serial`, id)
}

func (v *Views) certificates(ctx context.Context, q string, args ...any) ([]CertificateRow, error) {
	if v.closed() {
		return nil, ErrClosed
	}
	rows, err := v.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, v.queryErr(err)
	}
	defer rows.Close()
	var out []CertificateRow
	for rows.Next() {
		r, err := scanCertificate(rows)
		if err != nil {
			return nil, v.queryErr(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, v.queryErr(err)
	}
	return out, nil
}

// RevocationRow is a revoked certificate in the revocations view.
type RevocationRow struct {
	CAID      string
	Serial    domain.Serial
	RevokedAt time.Time
	Reason    domain.RevocationReason
	NotAfter  time.Time
}

// statusSQL reads both views' rows for one serial in one query, so an OCSP
// answer costs one round trip to SQLite and sees one snapshot of both. The
// derived table always yields one row; the joins are primary-key lookups.
const statusSQL = `SELECT r.revoked_at, r.reason, c.ca_id, c.revoked_at, c.reason
	FROM (SELECT ? AS ca_id, ? AS serial) AS q
	LEFT JOIN revocations AS r ON r.ca_id = q.ca_id AND r.serial = q.serial
	LEFT JOIN certificates AS c ON c.serial = q.serial`

// CertificateStatus is what the views know of one certificate of one CA: what
// OCSP answers.
type CertificateStatus struct {
	// Issued is true when the certificates view holds the certificate as
	// issued by this CA (whatever its status: valid, revoked or deleted).
	Issued bool
	// Revoked is true when either view holds a revocation of it by this CA.
	// The revocations view keeps a revocation after deletion and expiry, and
	// decides when it has one; otherwise the certificates view may be ahead of
	// it.
	Revoked   bool
	RevokedAt time.Time
	Reason    domain.RevocationReason
}

// CertificateStatus reports whether certificate serial of CA caID was issued
// and whether it is revoked, from both views in one query. Neither flag set
// means the views know no such certificate of this CA. Answers are kept in
// memory until a commit changes the serial (see statusCache), so an answer is
// never older than the last commit WaitFor has returned for.
func (v *Views) CertificateStatus(ctx context.Context, caID string, serial domain.Serial) (CertificateStatus, error) {
	if v.closed() {
		return CertificateStatus{}, ErrClosed
	}
	var gen uint64
	if v.status != nil {
		st, g, ok := v.status.get(caID, serial)
		if ok {
			return st, nil
		}
		gen = g
	}
	var revRevokedAt, revReason, certRevokedAt, certReason sql.NullInt64
	var certCA sql.NullString
	err := v.statusStmt.QueryRowContext(ctx, caID, serial).Scan(&revRevokedAt, &revReason, &certCA, &certRevokedAt, &certReason)
	if err != nil {
		return CertificateStatus{}, v.queryErr(err)
	}
	st := CertificateStatus{Issued: certCA.Valid && certCA.String == caID}
	switch {
	case revRevokedAt.Valid:
		st.Revoked, st.RevokedAt, st.Reason = true, fromMicros(revRevokedAt.Int64), domain.RevocationReason(revReason.Int64)
	case st.Issued && certRevokedAt.Valid:
		st.Revoked, st.RevokedAt, st.Reason = true, fromMicros(certRevokedAt.Int64), domain.RevocationReason(certReason.Int64)
	}
	if v.onStatusRead != nil {
		v.onStatusRead()
	}
	if v.status != nil {
		v.status.put(caID, serial, st, gen)
	}
	return st, nil
}

// revokedPage is how many revocations one query of Revoked reads.
const revokedPage = 1000

// Revoked yields the revoked certificates of CA caID that had not expired at
// since (deleted ones included; a certificate's notAfter is its last valid
// second), ordered by serial: the entries of its CRL. It reads in pages, each
// its own snapshot, so a slow consumer never holds the file; a CRL builder
// that needs one consistent snapshot compares RevocationRevision before and
// after. A CRL builder passes the thisUpdate of the CA's last CRL, so an entry
// stays on one CRL issued after its certificate expired (RFC 5280 3.3).
func (v *Views) Revoked(ctx context.Context, caID string, since time.Time) iter.Seq2[RevocationRow, error] {
	return func(yield func(RevocationRow, error) bool) {
		after := domain.Serial("")
		for {
			page, err := v.revokedPage(ctx, caID, micros(since), after)
			if err != nil {
				yield(RevocationRow{}, err)
				return
			}
			for _, r := range page {
				if !yield(r, nil) {
					return
				}
			}
			if len(page) < revokedPage {
				return
			}
			after = page[len(page)-1].Serial
		}
	}
}

func (v *Views) revokedPage(ctx context.Context, caID string, since int64, after domain.Serial) ([]RevocationRow, error) {
	if v.closed() {
		return nil, ErrClosed
	}
	rows, err := v.rdb.QueryContext(ctx, `SELECT serial, revoked_at, reason, not_after FROM revocations
		WHERE ca_id = ? AND serial > ? AND not_after >= ? ORDER BY serial LIMIT ?`, caID, after, since, revokedPage)
	if err != nil {
		return nil, v.queryErr(err)
	}
	defer rows.Close()
	page := make([]RevocationRow, 0, 64)
	for rows.Next() {
		r := RevocationRow{CAID: caID}
		var revokedAt, notAfter int64
		var reason int
		if err := rows.Scan(&r.Serial, &revokedAt, &reason, &notAfter); err != nil {
			return nil, v.queryErr(err)
		}
		r.RevokedAt, r.Reason, r.NotAfter = fromMicros(revokedAt), domain.RevocationReason(reason), fromMicros(notAfter)
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return nil, v.queryErr(err)
	}
	return page, nil
}

// RevocationRevision returns the ledger position of the last revocation of a
// certificate of CA caID (0: none yet). A CRL built at one revision stays right
// until the revision changes or one of its entries expires.
func (v *Views) RevocationRevision(ctx context.Context, caID string) (uint64, error) {
	if v.closed() {
		return 0, ErrClosed
	}
	var p uint64
	err := v.rdb.QueryRowContext(ctx, `SELECT position FROM revocation_revisions WHERE ca_id = ?`, caID).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, v.queryErr(err)
	}
	return p, nil
}

// SubjectRow is a subject found in the subjects view. Attributes is personal data.
type SubjectRow struct {
	ID           domain.SubjectID
	RegisteredAt time.Time
	// Attributes are the subject's current values, by attribute name.
	Attributes map[string]string
}

// SearchSubjects returns the subjects whose attributes match every entry of
// match, ordered by id: the attribute's current value equals the given one
// ignoring case (Unicode simple case mapping: "ß" does not match "SS"), or, when
// the given value ends in '*', starts with what precedes the '*'. Attribute names
// must be ones domain.KnownAttribute accepts, and values must not be empty (nor
// "*" alone, which would list everyone). It returns at most limit subjects
// (DefaultLimit when 0, never more than MaxLimit).
//
// The result is personal data: the caller records a personal-data.accessed event
// for every subject returned before showing it.
func (v *Views) SearchSubjects(ctx context.Context, match map[string]string, limit int) ([]SubjectRow, error) {
	if len(match) == 0 {
		return nil, fmt.Errorf("%w: a search needs at least one attribute", ErrInvalidQuery)
	}
	names := make([]string, 0, len(match))
	for name := range match {
		if !domain.KnownAttribute(name) {
			return nil, fmt.Errorf("%w: unknown attribute name", ErrInvalidQuery)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	// One alias per attribute, all joined on subject_id; the first drives the
	// search through the partial index on (name, folded).
	var from, where strings.Builder
	var joinArgs, whereArgs []any
	for i, name := range names {
		value, prefix := strings.CutSuffix(match[name], "*")
		if value == "" {
			return nil, fmt.Errorf("%w: an attribute value is empty", ErrInvalidQuery)
		}
		f := fold(value)
		cond := fmt.Sprintf("a%d.name = ? AND a%d.current = 1 AND a%d.folded = ?", i, i, i)
		args := []any{name, f}
		if prefix {
			// In BINARY collation every string that starts with f sorts in
			// [f, f+"\xff"): no UTF-8 byte is 0xff.
			cond = fmt.Sprintf("a%d.name = ? AND a%d.current = 1 AND a%d.folded >= ? AND a%d.folded < ?", i, i, i, i)
			args = []any{name, f, f + "\xff"}
		}
		if i == 0 {
			from.WriteString("subject_attributes AS a0")
			where.WriteString(cond)
			whereArgs = args
			continue
		}
		fmt.Fprintf(&from, " JOIN subject_attributes AS a%d ON a%d.subject_id = a0.subject_id AND %s", i, i, cond)
		joinArgs = append(joinArgs, args...)
	}
	if v.closed() {
		return nil, ErrClosed
	}
	tx, err := v.rdb.BeginTx(ctx, nil) // one snapshot for both queries
	if err != nil {
		return nil, v.queryErr(err)
	}
	defer tx.Rollback()
	args := append(append(joinArgs, whereArgs...), clampLimit(limit))
	ids, err := queryStrings(ctx, tx, `SELECT a0.subject_id FROM `+from.String()+` WHERE `+where.String()+
		` ORDER BY a0.subject_id LIMIT ?`, args...)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	return v.subjectRows(ctx, tx, ids)
}

func queryStrings(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("projections: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	return out, nil
}

// subjectRows reads the current attributes of the subjects ids, in order.
func (v *Views) subjectRows(ctx context.Context, tx *sql.Tx, ids []string) ([]SubjectRow, error) {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	marks := strings.Repeat(", ?", len(ids))[2:]
	rows, err := tx.QueryContext(ctx, `SELECT a.subject_id, a.name, a.value, coalesce(s.registered_at, 0)
		FROM subject_attributes AS a LEFT JOIN subjects AS s ON s.subject_id = a.subject_id
		WHERE a.current = 1 AND a.subject_id IN (`+marks+`) ORDER BY a.subject_id, a.name`, args...)
	if err != nil {
		return nil, v.queryErr(err)
	}
	defer rows.Close()
	var out []SubjectRow
	for rows.Next() {
		var id, name, value string
		var registered int64
		if err := rows.Scan(&id, &name, &value, &registered); err != nil {
			return nil, v.queryErr(err)
		}
		if len(out) == 0 || string(out[len(out)-1].ID) != id {
			out = append(out, SubjectRow{ID: domain.SubjectID(id), RegisteredAt: fromMicros(registered), Attributes: map[string]string{}})
		}
		out[len(out)-1].Attributes[name] = value
	}
	if err := rows.Err(); err != nil {
		return nil, v.queryErr(err)
	}
	return out, nil
}

// AccessRow is one read of a subject's personal data, from the access log view.
// The reader's stated reason stays sealed in the ledger.
type AccessRow struct {
	Position  uint64
	Time      time.Time
	ActorID   string
	ActorRole string
	SubjectID domain.SubjectID
	Operation string
}

// AccessLog returns the reads of subject id's personal data recorded after ledger
// position after, oldest first, at most limit (DefaultLimit when 0, never more
// than MaxLimit). Pass the last row's Position to get the next page. The log
// stays after the subject's erasure: it holds no personal data.
func (v *Views) AccessLog(ctx context.Context, id domain.SubjectID, after uint64, limit int) ([]AccessRow, error) {
	if v.closed() {
		return nil, ErrClosed
	}
	rows, err := v.rdb.QueryContext(ctx, `SELECT position, time, actor_id, actor_role, subject_id, operation
		FROM access_log WHERE subject_id = ? AND position > ? ORDER BY position LIMIT ?`, id, after, clampLimit(limit))
	if err != nil {
		return nil, v.queryErr(err)
	}
	defer rows.Close()
	var out []AccessRow
	for rows.Next() {
		var r AccessRow
		var t int64
		if err := rows.Scan(&r.Position, &t, &r.ActorID, &r.ActorRole, &r.SubjectID, &r.Operation); err != nil {
			return nil, v.queryErr(err)
		}
		r.Time = fromMicros(t)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, v.queryErr(err)
	}
	return out, nil
}
