package keyvault

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/caledger/caledger/crypto/datakey"
)

// rewrapBatch is how many keys one transaction of Rewrap re-wraps: one commit
// (and fsync) per batch, and a stop loses at most one batch's work.
const rewrapBatch = 4096

// Rewrap re-wraps every data key of the vault file at path that is wrapped
// under from so that it is wrapped under to instead, and returns how many it
// re-wrapped. It is the first half of a KEK epoch: once it has returned nil,
// no key of the file needs from, and destroying from makes every older copy
// of the file's keys (a backup, freed filesystem blocks, flash) useless,
// shredded keys included.
//
// The file must not be open elsewhere (the server stopped): Rewrap writes it
// through its own connection. It works in batches of one transaction each, so
// a stop (a cancelled ctx, a crash) leaves some keys under each KEK; the vault
// then refuses to open with either (ErrWrongKEK), and Rewrap with the same
// from and to resumes. Keys under any other KEK are refused before anything is
// written. When every key is under to, from is dropped from the file's list of
// KEKs and the WAL is checkpointed and truncated, so that the rows' old
// wrappings leave the vault's files (secure_delete overwrites them in the
// database file).
//
// progress, if not nil, is called after each batch with the keys done and the
// keys to do in this call.
func Rewrap(ctx context.Context, path string, from, to KEK, progress func(done, total int)) (int, error) {
	return rewrap(ctx, path, from, to, rewrapBatch, progress)
}

func rewrap(ctx context.Context, path string, from, to KEK, batch int, progress func(done, total int)) (int, error) {
	if from == nil || to == nil || from.ID() == "" || to.ID() == "" {
		return 0, errors.New("keyvault: rewrap: two KEKs with non-empty IDs are required")
	}
	if from.ID() == to.ID() {
		return 0, fmt.Errorf("keyvault: rewrap: the old and the new KEK are the same (%q)", from.ID())
	}
	db, abs, err := openDB(path, true)
	if err != nil {
		return 0, err
	}
	v := &Vault{db: db, kek: to, kekID: to.ID(), wal: abs + "-wal", now: time.Now}
	defer db.Close()
	if err := v.checkSettings(ctx); err != nil {
		return 0, err
	}
	n, err := v.rewrapFrom(ctx, from, batch, progress)
	if err != nil {
		return n, fmt.Errorf("keyvault: rewrap: %w", err)
	}
	return n, nil
}

// rewrapFrom is Rewrap on an unshared Vault whose KEK is the new one.
func (v *Vault) rewrapFrom(ctx context.Context, from KEK, batch int, progress func(done, total int)) (int, error) {
	var version int
	if err := v.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return 0, err
	}
	// Open creates and migrates the schema; a file without it has never been
	// opened as a vault, and one with a later version is not this program's.
	if version != schemaVersion {
		return 0, fmt.Errorf("the file has schema version %d, want %d (is it a vault?)", version, schemaVersion)
	}
	total, err := v.countUnder(ctx, from.ID())
	if err != nil {
		return 0, err
	}
	// A key that does not unwrap (a damaged row, or one copied to another
	// subject) would stop the run half-way, with the file under two KEKs:
	// every key is checked before the first is re-wrapped.
	if err := v.checkUnwrap(ctx, from); err != nil {
		return 0, err
	}
	// Recorded before the first key is wrapped under it, as Open would.
	if _, err := v.db.ExecContext(ctx, "INSERT OR IGNORE INTO keks (kek_id, added_ns) VALUES (?, ?)", v.kekID, v.now().UnixNano()); err != nil {
		return 0, err
	}
	done := 0
	for {
		rows, err := v.keysUnder(ctx, from.ID(), batch)
		if err != nil {
			return done, err
		}
		if len(rows) == 0 {
			break
		}
		for i := range rows {
			r := &rows[i]
			ad := wrapAD(r.subject, r.group)
			h, err := datakey.Unwrap(ctx, r.wrapped, from, ad)
			if err != nil {
				return done, fmt.Errorf("subject %s group %s: unwrap key: %w", r.subject, r.group, err)
			}
			if r.wrapped, err = datakey.Wrap(ctx, h, v.kek, ad); err != nil {
				return done, fmt.Errorf("subject %s group %s: wrap key: %w", r.subject, r.group, err)
			}
		}
		if err := v.storeRewrapped(ctx, from.ID(), rows); err != nil {
			return done, err
		}
		done += len(rows)
		if progress != nil {
			progress(done, total)
		}
	}
	if err := v.retire(ctx, from.ID()); err != nil {
		return done, err
	}
	if err := v.checkpoint(ctx, shredCheckpointAttempts); err != nil {
		return done, err
	}
	return done, nil
}

// checkSettings checks that the connections have the settings the shredding
// guarantee rests on; see init.
func (v *Vault) checkSettings(ctx context.Context) error {
	var mode string
	var syncMode, secure int
	if err := v.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	if err := v.db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncMode); err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	if err := v.db.QueryRowContext(ctx, "PRAGMA secure_delete").Scan(&secure); err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	if mode != "wal" || syncMode != 2 || secure != 1 {
		return fmt.Errorf("keyvault: connection settings journal_mode=%s synchronous=%d secure_delete=%d, want wal, 2 (FULL), 1", mode, syncMode, secure)
	}
	return nil
}

// countUnder returns how many keys are wrapped under kekID, and refuses a file
// with keys under a KEK that is neither kekID nor the vault's.
func (v *Vault) countUnder(ctx context.Context, kekID string) (int, error) {
	counts, err := kekCounts(ctx, v.db)
	if err != nil {
		return 0, err
	}
	var others []string
	for id := range counts {
		if id != kekID && id != v.kekID {
			others = append(others, id)
		}
	}
	if len(others) > 0 {
		return 0, fmt.Errorf("%w: the file has keys under %q, neither the old KEK %q nor the new %q", ErrWrongKEK, others, kekID, v.kekID)
	}
	return counts[kekID], nil
}

// kekCounts returns how many data keys of db are wrapped under each KEK id.
func kekCounts(ctx context.Context, db *sql.DB) (map[string]int, error) {
	rows, err := db.QueryContext(ctx, "SELECT kek_id, COUNT(*) FROM data_keys GROUP BY kek_id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

type wrappedRow struct {
	subject, group string
	wrapped        []byte
}

func (v *Vault) keysUnder(ctx context.Context, kekID string, limit int) ([]wrappedRow, error) {
	rows, err := v.db.QueryContext(ctx, `SELECT subject, key_group, wrapped FROM data_keys WHERE kek_id = ? LIMIT ?`, kekID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []wrappedRow
	for rows.Next() {
		var r wrappedRow
		if err := rows.Scan(&r.subject, &r.group, &r.wrapped); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// storeRewrapped writes rows, re-wrapped under the vault's KEK, in one
// transaction; each update applies only if the row is still under from.
func (v *Vault) storeRewrapped(ctx context.Context, from string, rows []wrappedRow) error {
	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE subject = ? AND key_group = ? AND kek_id = ?`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, r := range rows {
		res, err := stmt.ExecContext(ctx, v.kekID, r.wrapped, r.subject, r.group, from)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return fmt.Errorf("subject %s group %s: the row changed during the rewrap (is the vault open elsewhere?)", r.subject, r.group)
		}
	}
	return tx.Commit()
}

// checkUnwrap unwraps every key under from, in one pass over the rows (one
// read transaction: nothing else writes the file), and fails if any does not
// unwrap, saying how many and which first.
func (v *Vault) checkUnwrap(ctx context.Context, from KEK) error {
	rows, err := v.db.QueryContext(ctx, `SELECT subject, key_group, wrapped FROM data_keys WHERE kek_id = ?`, from.ID())
	if err != nil {
		return err
	}
	defer rows.Close()
	var bad int
	var first string
	for rows.Next() {
		var r wrappedRow
		if err := rows.Scan(&r.subject, &r.group, &r.wrapped); err != nil {
			return err
		}
		if _, err := datakey.Unwrap(ctx, r.wrapped, from, wrapAD(r.subject, r.group)); err != nil {
			if err := ctx.Err(); err != nil {
				return err
			}
			if bad == 0 {
				first = fmt.Sprintf("subject %s group %s: %v", r.subject, r.group, err)
			}
			bad++
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%d keys under the old KEK do not unwrap, so nothing was re-wrapped (the first: %s)", bad, first)
	}
	return nil
}

// retire drops from the file's list of KEKs, in one transaction with the
// check that no key is under it any more.
func (v *Vault) retire(ctx context.Context, from string) error {
	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var left int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM data_keys WHERE kek_id = ?`, from).Scan(&left); err != nil {
		return err
	}
	if left > 0 {
		return fmt.Errorf("%d keys under the old KEK appeared during the rewrap (is the vault open elsewhere?)", left)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM keks WHERE kek_id = ?`, from); err != nil {
		return err
	}
	return tx.Commit()
}

// KEKCounts returns how many data keys of the vault file at path are wrapped
// under each KEK id. The file must exist.
func KEKCounts(ctx context.Context, path string) (map[string]int, error) {
	db, _, err := openDB(path, true)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	out, err := kekCounts(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("keyvault: %w", err)
	}
	return out, nil
}
