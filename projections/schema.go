package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/caledger/caledger/domain"
)

// projection is one read model: the tables it owns and how an event changes them.
type projection struct {
	name string
	// version is the layout of the projection's tables. A file holding another
	// version has the projection dropped and rebuilt from position 0 alone.
	version int
	// tables lists every table the projection owns (or ever owned), for a reset.
	tables []string
	schema []string
	apply  func(b *batch, e *eventInfo) error
}

// Indexes into projections, and into checkpoint arrays.
const (
	certificatesIdx = iota
	subjectsIdx
	revocationsIdx
	accessLogIdx
	numProjections
)

var projections = [numProjections]projection{
	certificatesIdx: {
		// Version 2 added key_generated.
		name: "certificates", version: 2,
		tables: []string{"certificates"},
		schema: []string{
			// Times are microseconds since the Unix epoch: a certificate's notAfter
			// may be 9999-12-31 (RFC 5280 4.1.2.5), beyond int64 nanoseconds.
			`CREATE TABLE IF NOT EXISTS certificates (
				serial TEXT PRIMARY KEY,
				ca_id TEXT NOT NULL,
				subject_id TEXT NOT NULL,
				profile TEXT NOT NULL,
				status TEXT NOT NULL,
				not_before INTEGER NOT NULL,
				not_after INTEGER NOT NULL,
				spki_sha256 TEXT NOT NULL,
				revoked_at INTEGER,
				reason INTEGER,
				issued_position INTEGER NOT NULL,
				issued_at INTEGER NOT NULL,
				key_generated INTEGER NOT NULL
			) WITHOUT ROWID`,
			`CREATE INDEX IF NOT EXISTS certificates_ca ON certificates(ca_id, serial)`,
			`CREATE INDEX IF NOT EXISTS certificates_subject ON certificates(subject_id, serial)`,
		},
		apply: applyCertificates,
	},
	subjectsIdx: {
		name: "subjects", version: 1,
		tables: []string{"subjects", "subject_attributes"},
		schema: []string{
			`CREATE TABLE IF NOT EXISTS subjects (
				subject_id TEXT PRIMARY KEY,
				registered_at INTEGER NOT NULL,
				registered_position INTEGER NOT NULL
			) WITHOUT ROWID`,
			// The only table with personal data (value, folded). One row per
			// (subject, attribute, key group) holds the last value that group set
			// ('' when it removed the attribute); current marks the row that is the
			// subject's value: the latest one, if not empty. Keeping each group's
			// last value lets an erasure of one group fall back to the value an
			// earlier event set in another, exactly as a replay does.
			`CREATE TABLE IF NOT EXISTS subject_attributes (
				subject_id TEXT NOT NULL,
				name TEXT NOT NULL,
				key_group TEXT NOT NULL,
				position INTEGER NOT NULL,
				value TEXT NOT NULL,
				folded TEXT NOT NULL,
				current INTEGER NOT NULL,
				PRIMARY KEY (subject_id, name, key_group)
			) WITHOUT ROWID`,
			`CREATE INDEX IF NOT EXISTS subject_attributes_search ON subject_attributes(name, folded) WHERE current = 1`,
		},
		apply: applySubjects,
	},
	revocationsIdx: {
		name: "revocations", version: 1,
		tables: []string{"revocations", "revocation_revisions", "revocation_validity"},
		schema: []string{
			`CREATE TABLE IF NOT EXISTS revocations (
				ca_id TEXT NOT NULL,
				serial TEXT NOT NULL,
				revoked_at INTEGER NOT NULL,
				reason INTEGER NOT NULL,
				not_after INTEGER NOT NULL,
				position INTEGER NOT NULL,
				PRIMARY KEY (ca_id, serial)
			) WITHOUT ROWID`,
			`CREATE TABLE IF NOT EXISTS revocation_revisions (
				ca_id TEXT PRIMARY KEY,
				position INTEGER NOT NULL
			) WITHOUT ROWID`,
			// The notAfter of every issued certificate not yet revoked or deleted,
			// so the projection needs no other one to know when a revocation can
			// leave the CRL.
			`CREATE TABLE IF NOT EXISTS revocation_validity (
				serial TEXT PRIMARY KEY,
				not_after INTEGER NOT NULL
			) WITHOUT ROWID`,
		},
		apply: applyRevocations,
	},
	accessLogIdx: {
		name: "access-log", version: 1,
		tables: []string{"access_log"},
		schema: []string{
			`CREATE TABLE IF NOT EXISTS access_log (
				position INTEGER PRIMARY KEY,
				time INTEGER NOT NULL,
				actor_id TEXT NOT NULL,
				actor_role TEXT NOT NULL,
				subject_id TEXT NOT NULL,
				operation TEXT NOT NULL
			)`,
			`CREATE INDEX IF NOT EXISTS access_log_subject ON access_log(subject_id, position)`,
		},
		apply: applyAccessLog,
	},
}

// A checkpoint also records the id of the event at its position, so that Run can
// tell that the ledger it reads is still the one the views were built from.
const checkpointsSchema = `CREATE TABLE IF NOT EXISTS checkpoints (
	name TEXT PRIMARY KEY,
	position INTEGER NOT NULL,
	event_id BLOB,
	version INTEGER NOT NULL
) WITHOUT ROWID`

// initSchema creates what is missing, resets every projection whose stored layout
// differs from its version, and loads the checkpoints.
func (v *Views) initSchema(ctx context.Context) error {
	tx, err := v.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, checkpointsSchema); err != nil {
		return fmt.Errorf("projections: create schema: %w", err)
	}
	var stale []int
	for i, p := range projections {
		var position uint64
		var id []byte
		var version int
		err := tx.QueryRowContext(ctx, `SELECT position, event_id, version FROM checkpoints WHERE name = ?`, p.name).Scan(&position, &id, &version)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			stale = append(stale, i)
		case err != nil:
			return fmt.Errorf("projections: read checkpoint: %w", err)
		case version != p.version:
			v.log.Warn("projection layout changed; it will be rebuilt from the ledger",
				"projection", p.name, "stored_version", version, "version", p.version)
			stale = append(stale, i)
		default:
			v.applied[i] = position
			copy(v.ids[i][:], id)
			for _, q := range p.schema {
				if _, err := tx.ExecContext(ctx, q); err != nil {
					return fmt.Errorf("projections: create schema: %w", err)
				}
			}
		}
	}
	if err := resetTx(ctx, tx, stale); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	for _, i := range stale {
		v.applied[i], v.ids[i] = 0, domain.EventID{}
	}
	// The dropped tables may have held personal data, and so may the WAL a
	// process killed between an erasure's commit and its truncation left
	// behind (truncatePending lived in its memory only): out of the WAL,
	// whatever the last run did.
	v.truncatePending = true
	v.truncateWAL(ctx)
	return nil
}

// resetTx drops and recreates the tables of the projections at the given indexes
// and sets their checkpoints to 0. secure_delete zeroes the freed pages.
func resetTx(ctx context.Context, tx *sql.Tx, which []int) error {
	for _, i := range which {
		p := projections[i]
		for _, t := range p.tables {
			if _, err := tx.ExecContext(ctx, `DROP TABLE IF EXISTS `+t); err != nil {
				return fmt.Errorf("projections: reset %s: %w", p.name, err)
			}
		}
		for _, q := range p.schema {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("projections: create schema: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoints (name, position, event_id, version) VALUES (?, 0, NULL, ?)
			ON CONFLICT (name) DO UPDATE SET position = 0, event_id = NULL, version = excluded.version`, p.name, p.version); err != nil {
			return fmt.Errorf("projections: reset %s: %w", p.name, err)
		}
	}
	return nil
}

// reset empties the projections at the given indexes and publishes their zero
// checkpoints. The caller holds active.
func (v *Views) reset(ctx context.Context, which []int) error {
	tx, err := v.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	defer tx.Rollback()
	if err := resetTx(ctx, tx, which); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	if v.status != nil {
		v.status.clear()
	}
	v.mu.Lock()
	cps := v.applied
	v.mu.Unlock()
	for _, i := range which {
		cps[i], v.ids[i] = 0, domain.EventID{}
	}
	v.publish(cps)
	// The dropped rows may include personal data: out of the WAL too.
	v.truncatePending = true
	v.truncateWAL(ctx)
	return nil
}
