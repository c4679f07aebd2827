package keyvault

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/caledger/caledger/crypto/datakey"
)

// rewrapBatch is how many keys Rewrap reads at a time, and how often it
// reports progress.
const rewrapBatch = 4096

// Rewrap re-wraps every data key of the vault file at path that is wrapped
// under from so that it is wrapped under to instead, and returns how many it
// re-wrapped. It is the first half of a KEK epoch: once it has returned nil,
// no key of the file needs from, and destroying from makes every older copy
// of the file's keys (a backup, freed filesystem blocks, flash) useless,
// shredded keys included.
//
// The file must not be open elsewhere (the server stopped): Rewrap writes it
// through its own connection. It works in one transaction: every key is
// unwrapped under from and wrapped under to once, and a key that does not
// unwrap (a damaged row, or one copied to another subject) makes it fail
// having written nothing, after counting the others. A stop (a cancelled ctx,
// a crash) leaves the file as it was. Keys under any other KEK than from and
// to are refused before anything is written, and a file already partly under
// to (left by an older version, which committed in batches) is completed.
// When every key is under to, from is dropped from the file's list of KEKs in
// the same transaction, and the WAL is checkpointed and truncated, so that
// the rows' old wrappings leave the vault's files (secure_delete overwrites
// them in the database file). Until then the WAL holds a copy of every page
// the transaction changed: the disk needs room for about the vault's size
// again.
//
// progress, if not nil, is called after every rewrapBatch keys with the keys
// done and the keys to do in this call; it reports work of the transaction,
// which a later failure undoes.
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
	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	// Counted in the transaction: the rows it re-wraps are these.
	total, err := v.countUnder(ctx, tx, from.ID())
	if err != nil {
		return 0, err
	}
	// Recorded before the first key is wrapped under it, as Open would.
	if _, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO keks (kek_id, added_ns) VALUES (?, ?)", v.kekID, v.now().UnixNano()); err != nil {
		return 0, err
	}
	update, err := tx.PrepareContext(ctx, `UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE rowid = ? AND kek_id = ?`)
	if err != nil {
		return 0, err
	}
	defer update.Close()
	var (
		done, bad int
		first     string
		after     int64
	)
	for {
		rows, err := keysUnder(ctx, tx, from.ID(), after, batch)
		if err != nil {
			return 0, err
		}
		if len(rows) == 0 {
			break
		}
		for i := range rows {
			r := &rows[i]
			after = r.rowid
			ad := wrapAD(r.subject, r.group)
			h, err := datakey.Unwrap(ctx, r.wrapped, from, ad)
			if err != nil {
				if err := ctx.Err(); err != nil {
					return 0, err
				}
				if bad == 0 {
					first = fmt.Sprintf("subject %s group %s: %v", r.subject, r.group, err)
				}
				bad++
				continue
			}
			if bad > 0 {
				continue // only counting the keys that do not unwrap
			}
			wrapped, err := datakey.Wrap(ctx, h, v.kek, ad)
			if err != nil {
				return 0, fmt.Errorf("subject %s group %s: wrap key: %w", r.subject, r.group, err)
			}
			if _, err := update.ExecContext(ctx, v.kekID, wrapped, r.rowid, from.ID()); err != nil {
				return 0, err
			}
			done++
		}
		if progress != nil && bad == 0 {
			progress(done, total)
		}
	}
	if bad > 0 {
		return 0, fmt.Errorf("%d keys under the old KEK do not unwrap, so nothing was re-wrapped (the first: %s)", bad, first)
	}
	// Every key counted under from was re-wrapped in this transaction:
	// from leaves the file's list of KEKs with it.
	if _, err := tx.ExecContext(ctx, `DELETE FROM keks WHERE kek_id = ?`, from.ID()); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
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
func (v *Vault) countUnder(ctx context.Context, q querier, kekID string) (int, error) {
	counts, err := kekCounts(ctx, q)
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

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// kekCounts returns how many data keys of q are wrapped under each KEK id.
func kekCounts(ctx context.Context, q querier) (map[string]int, error) {
	rows, err := q.QueryContext(ctx, "SELECT kek_id, COUNT(*) FROM data_keys GROUP BY kek_id")
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
	rowid          int64
	subject, group string
	wrapped        []byte
}

// keysUnder returns up to limit keys under kekID with a rowid above after, in
// rowid order (which the index on kek_id gives without a sort).
func keysUnder(ctx context.Context, tx *sql.Tx, kekID string, after int64, limit int) ([]wrappedRow, error) {
	rows, err := tx.QueryContext(ctx, `SELECT rowid, subject, key_group, wrapped FROM data_keys WHERE kek_id = ? AND rowid > ? ORDER BY rowid LIMIT ?`, kekID, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []wrappedRow
	for rows.Next() {
		var r wrappedRow
		if err := rows.Scan(&r.rowid, &r.subject, &r.group, &r.wrapped); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
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
