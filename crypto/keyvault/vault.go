package keyvault

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlitefile"
)

// Errors. Every error the vault returns for a given (subject, group) wraps at most one
// of them, so callers can tell "gone for good" from "never existed" from "forged".
var (
	// ErrShredded is matched by Seal and Open errors for a destroyed data key.
	ErrShredded = domain.ErrShredded
	// ErrNoKey is matched by Open errors for a (subject, group) that never had a key.
	ErrNoKey = errors.New("keyvault: no data key")
	// ErrInvalidCiphertext is matched by Open errors for a ciphertext that does not
	// authenticate: tampered, sealed with other associated data, or under another key.
	ErrInvalidCiphertext = errors.New("keyvault: ciphertext does not authenticate")
	// ErrWrongKEK is matched by Open (the function) when the file holds keys wrapped
	// under a KEK other than the one given.
	ErrWrongKEK = errors.New("keyvault: data keys are wrapped under another KEK")
	// ErrCheckpoint is matched by Shred errors when the keys were deleted but the WAL
	// could not be checkpointed, so their bytes may still be in the -wal file. The
	// keys are already unusable through the vault; calling Shred again retries.
	ErrCheckpoint = errors.New("keyvault: WAL checkpoint did not complete")
	// ErrClosed is matched by errors from a closed Vault.
	ErrClosed = errors.New("keyvault: vault is closed")
)

// DefaultCacheSize is how many unwrapped data keys a Vault keeps by default.
const DefaultCacheSize = 10_000

// Option configures Open.
type Option func(*options)

type options struct {
	cacheSize int
	now       func() time.Time
}

// WithCacheSize bounds the cache of unwrapped data keys; 0 disables it.
func WithCacheSize(n int) Option { return func(o *options) { o.cacheSize = max(n, 0) } }

// WithClock sets the clock that timestamps key creation and shredding, and
// spaces ErasureStatus's retries of an owed checkpoint (a clock that does not
// move stops those retries).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Vault holds per-(subject, group) data keys in a SQLite file, wrapped by a KEK. It
// implements domain.Sealer and is safe for concurrent use. The file MUST be used by
// one Vault at a time: Shred relies on seeing every reader of the file.
type Vault struct {
	db    *sql.DB
	kek   KEK
	kekID string
	wal   string
	now   func() time.Time
	cache *datakey.Cache

	// mu is held shared by Seal and Open for their whole run, and exclusively by
	// Shred and Close. Shred needs it exclusive for two reasons: the WAL checkpoint
	// can only truncate the log when no connection holds a read snapshot, and a
	// Seal or Open must not re-fill the cache with a key Shred just evicted.
	mu     sync.RWMutex
	closed bool
	// checkpointOwed is set while deleted keys may still have bytes in the -wal
	// file: the checkpoint after a Shred's deletion, or Open's, did not
	// complete. Open sets it before the Vault is shared; later it is written
	// only with mu held exclusively. ErasureStatus reports it, and retries the
	// checkpoint; a Shred that returns nil clears it.
	checkpointOwed bool
	// retryAt is when ErasureStatus may next retry an owed checkpoint: a retry
	// holds mu exclusively for up to checkpointBusyMS, so status polls while an
	// outside reader pins the WAL must not stall Seal and Open on every call.
	// Written with mu held exclusively, like checkpointOwed.
	retryAt time.Time
}

var _ domain.Sealer = (*Vault)(nil)

// Open opens the vault file at path, creating it (mode 0600, and its directory with
// mode 0700) if needed. It fails if the file grants any access to group or others, or
// holds keys wrapped under a KEK other than kek (ErrWrongKEK). The caller keeps
// ownership of kek: Close does not close it.
func Open(ctx context.Context, path string, kek KEK, opts ...Option) (*Vault, error) {
	o := options{cacheSize: DefaultCacheSize, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if kek == nil || kek.ID() == "" {
		return nil, errors.New("keyvault: a KEK with a non-empty ID is required")
	}
	db, abs, err := openDB(path, false)
	if err != nil {
		return nil, err
	}
	v := &Vault{
		db:    db,
		kek:   kek,
		kekID: kek.ID(),
		wal:   abs + "-wal",
		now:   o.now,
		cache: datakey.NewCache(o.cacheSize, 0, nil),
	}
	if err := v.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	// A process that died between a Shred's deletion and its checkpoint left
	// the keys' old pages in the -wal file; this removes them. A failure is not
	// fatal: ErasureStatus reports the owed checkpoint, and retries it, until
	// one completes.
	v.setCheckpointOwed(v.checkpoint(ctx, 1) != nil)
	return v, nil
}

// dsn sets the pragmas on every connection the pool opens. synchronous=FULL makes a
// commit durable in WAL mode (NORMAL would not fsync the WAL on commit), and must
// be given: go-sqlite3 picks NORMAL for WAL, then applies _synchronous after
// _journal_mode whatever the DSN's order (init's checkSettings reads it back).
// _txlock=immediate takes the write lock at BEGIN, so a transaction never fails
// half-way on a lock upgrade.
func dsn(path string) string {
	return sqlitefile.DSN(path, map[string]string{
		"_journal_mode":  "WAL",
		"_synchronous":   "FULL",
		"_secure_delete": "on",
		"_busy_timeout":  strconv.Itoa(busyTimeoutMS),
		"_txlock":        "immediate",
	})
}

// openDB opens the pool of the vault file at path (made if missing, unless
// mustExist: a command that only reads or changes a vault must not make one),
// after createFile's mode checks, and returns it with the file's absolute
// path.
func openDB(path string, mustExist bool) (*sql.DB, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("keyvault: %w", err)
	}
	if mustExist {
		if _, err := os.Stat(abs); err != nil {
			return nil, "", fmt.Errorf("keyvault: %w", err)
		}
	}
	if err := createFile(abs); err != nil {
		return nil, "", err
	}
	db, err := sql.Open("sqlite3", dsn(abs))
	if err != nil {
		return nil, "", fmt.Errorf("keyvault: %w", err)
	}
	return db, abs, nil
}

// createFile makes sure path exists with mode 0600 before SQLite opens it: SQLite
// would create it with 0644, and gives the -wal and -shm files the database file's
// mode.
func createFile(path string) error {
	created, mode, err := sqlitefile.Create(path)
	if err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	if created {
		// The new file, and its name, must survive a crash.
		if err := sqlitefile.SyncFile(path); err != nil {
			return fmt.Errorf("keyvault: %w", err)
		}
	}
	if perm := mode.Perm(); perm&0o077 != 0 {
		return fmt.Errorf("keyvault: %s has mode %04o, which lets group or others read it; run chmod 600 %s", path, perm, path)
	}
	return nil
}

func (v *Vault) init(ctx context.Context) error {
	// Checked on a connection from the pool rather than trusted: a driver that
	// ignored a DSN parameter would silently void the shredding guarantee.
	if err := v.checkSettings(ctx); err != nil {
		return err
	}

	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	if version > schemaVersion {
		return fmt.Errorf("keyvault: file has schema version %d, this program knows up to %d", version, schemaVersion)
	}
	if _, err := tx.ExecContext(ctx, schemaSQL); err != nil {
		return fmt.Errorf("keyvault: create schema: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", schemaVersion)); err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	rows, err := tx.QueryContext(ctx, "SELECT DISTINCT kek_id FROM data_keys WHERE kek_id <> ?", v.kekID)
	if err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	var others []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("keyvault: %w", err)
		}
		others = append(others, id)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	if len(others) > 0 {
		return fmt.Errorf("%w: the file has keys under %q, the given KEK is %q", ErrWrongKEK, others, v.kekID)
	}
	if _, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO keks (kek_id, added_ns) VALUES (?, ?)", v.kekID, v.now().UnixNano()); err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("keyvault: %w", err)
	}
	return nil
}

// Seal encrypts plaintext under the data key of (subject, group) with ad as associated
// data, creating the key if it has none. A new key is durable in the vault file before
// Seal returns. Seal fails with an error matching ErrShredded if that key was
// destroyed, including by a Shred of the subject before the key was ever created.
func (v *Vault) Seal(ctx context.Context, subject domain.SubjectID, group string, plaintext, ad []byte) (domain.Sealed, error) {
	if err := checkNames(subject, group); err != nil {
		return domain.Sealed{}, err
	}
	if err := ctx.Err(); err != nil {
		return domain.Sealed{}, err
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return domain.Sealed{}, ErrClosed
	}
	k, err := v.dataKey(ctx, subject, group, true)
	if err != nil {
		return domain.Sealed{}, err
	}
	sealed, err := k.Seal(subject, group, plaintext, ad)
	if err != nil {
		return domain.Sealed{}, fmt.Errorf("keyvault: subject %s group %s: encrypt: %w", subject, group, err)
	}
	return sealed, nil
}

// Open decrypts s with ad. It fails with an error matching ErrShredded if the key was
// destroyed, ErrNoKey if (s.SubjectID, s.KeyGroup) never had one, and
// ErrInvalidCiphertext if s does not authenticate with exactly ad under that key. It
// returns plaintext only on success.
func (v *Vault) Open(ctx context.Context, s *domain.Sealed, ad []byte) ([]byte, error) {
	if s == nil {
		return nil, errors.New("keyvault: nil sealed part")
	}
	if err := checkNames(s.SubjectID, s.KeyGroup); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !datakey.PrefixMatches(s) {
		return nil, fmt.Errorf("keyvault: subject %s group %s: %w", s.SubjectID, s.KeyGroup, ErrInvalidCiphertext)
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return nil, ErrClosed
	}
	k, err := v.dataKey(ctx, s.SubjectID, s.KeyGroup, false)
	if err != nil {
		return nil, err
	}
	pt, ok := k.Open(s, ad)
	if !ok {
		return nil, fmt.Errorf("keyvault: subject %s group %s: %w", s.SubjectID, s.KeyGroup, ErrInvalidCiphertext)
	}
	return pt, nil
}

// Shred destroys the data keys of subject: those of groups, or every group (including
// groups that get no key until later) when groups is empty. It records a tombstone,
// deletes the wrapped keys, and returns nil only once their bytes are gone from the
// vault's files: the rows are overwritten (secure_delete) and the WAL is checkpointed
// and truncated. Shred is idempotent; shredding an unknown subject records the
// tombstone, so a later Seal for it fails with ErrShredded.
//
// If Shred returns an error, the keys may already be deleted (and unusable through the
// vault) without their bytes being gone from the files yet; the caller MUST retry
// until Shred returns nil before it reports the erasure as done.
func (v *Vault) Shred(ctx context.Context, subject domain.SubjectID, groups ...string) error {
	if err := checkSubject(subject); err != nil {
		return err
	}
	for _, g := range groups {
		if err := checkGroup(g); err != nil {
			return err
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return ErrClosed
	}
	// Evicted whatever happens below: a half-done Shred must not leave a key usable
	// from memory that the file may no longer have.
	defer v.cache.Evict(subject, groups)

	if err := v.deleteKeys(ctx, subject, groups); err != nil {
		return fmt.Errorf("keyvault: shred subject %s: %w", subject, err)
	}
	if err := v.checkpoint(ctx, shredCheckpointAttempts); err != nil {
		v.setCheckpointOwed(true) // the next retry waits from this attempt on
		return fmt.Errorf("keyvault: shred subject %s: %w", subject, err)
	}
	v.setCheckpointOwed(false)
	return nil
}

// ErasureStatus is what a vault file says of a subject's erasure.
type ErasureStatus struct {
	// Groups are the subject's shredded key groups; "*" is every group.
	Groups []string
	// CheckpointPending is set while the bytes of deleted keys, of this subject
	// or another, may still be in the -wal file: a Shred (or Open) could not
	// checkpoint the WAL, nor could ErasureStatus's own retry. A later
	// checkpoint that completes (a Shred's, or a retry's) clears it.
	CheckpointPending bool
}

// ErasureStatus reports the shredded key groups of subject, and whether the
// bytes of deleted keys may still be on disk; if they may, it first retries the
// WAL checkpoint that removes them, at most once per checkpointRetryInterval
// (by the vault's clock). The keys of a group with a tombstone are deleted in
// the same transaction that records it.
func (v *Vault) ErasureStatus(ctx context.Context, subject domain.SubjectID) (ErasureStatus, error) {
	var st ErasureStatus
	if err := checkSubject(subject); err != nil {
		return st, err
	}
	v.mu.RLock()
	retry := v.checkpointOwed && !v.now().Before(v.retryAt)
	v.mu.RUnlock()
	if retry {
		v.mu.Lock()
		if !v.closed && v.checkpointOwed && !v.now().Before(v.retryAt) {
			v.setCheckpointOwed(v.checkpoint(ctx, 1) != nil)
		}
		v.mu.Unlock()
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return st, ErrClosed
	}
	st.CheckpointPending = v.checkpointOwed
	rows, err := v.db.QueryContext(ctx, selectShredsSQL, subject)
	if err != nil {
		return st, fmt.Errorf("keyvault: subject %s: %w", subject, err)
	}
	defer rows.Close()
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return st, fmt.Errorf("keyvault: subject %s: %w", subject, err)
		}
		st.Groups = append(st.Groups, g)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("keyvault: subject %s: %w", subject, err)
	}
	return st, nil
}

func (v *Vault) deleteKeys(ctx context.Context, subject domain.SubjectID, groups []string) error {
	now := v.now().UnixNano()
	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if len(groups) == 0 {
		if _, err := tx.ExecContext(ctx, insertShredSQL, subject, "*", now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, deleteAllSQL, subject); err != nil {
			return err
		}
	}
	for _, g := range groups {
		if _, err := tx.ExecContext(ctx, insertShredSQL, subject, g, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, deleteGroupSQL, subject, g); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// setCheckpointOwed records whether a checkpoint is owed; while one is, the
// next retry by ErasureStatus waits checkpointRetryInterval. The caller holds mu
// exclusively, or has not yet shared the Vault.
func (v *Vault) setCheckpointOwed(owed bool) {
	v.checkpointOwed = owed
	if owed {
		v.retryAt = v.now().Add(checkpointRetryInterval)
	}
}

// checkpointRetryInterval is the least time between two retries of an owed
// checkpoint by ErasureStatus.
const checkpointRetryInterval = time.Second

// busyTimeoutMS is how long a connection waits for a lock held elsewhere.
const busyTimeoutMS = 5000

// checkpointBusyMS is how long one checkpoint attempt waits for readers.
const checkpointBusyMS = 100

// shredCheckpointAttempts is how often Shred tries the checkpoint. Open and
// ErasureStatus try once: they hold up start-up, or every Seal and Open.
const shredCheckpointAttempts = 5

// checkpoint copies the WAL into the database file and truncates the WAL to zero
// bytes, making up to attempts attempts. The caller holds mu exclusively, so no
// connection of this Vault has a read snapshot that would pin old frames; the
// retries cover a transient lock. A reader outside this Vault (a sqlite3 shell, a
// backup tool) makes each attempt fail after checkpointBusyMS, rather than after
// the connection's busy timeout.
func (v *Vault) checkpoint(ctx context.Context, attempts int) error {
	conn, err := v.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", checkpointBusyMS)); err != nil {
		return fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	// The connection goes back to the pool with the usual timeout, or not at all.
	defer func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), fmt.Sprintf("PRAGMA busy_timeout = %d", busyTimeoutMS)); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	var busy, logFrames, done int
	for attempt := range attempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		err = conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done)
		if err != nil || busy != 0 || logFrames != done {
			continue
		}
		fi, serr := os.Stat(v.wal)
		if serr == nil && fi.Size() != 0 {
			err = fmt.Errorf("%s is %d bytes after the checkpoint", filepath.Base(v.wal), fi.Size())
			continue
		}
		if serr != nil && !errors.Is(serr, os.ErrNotExist) {
			return serr
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	return fmt.Errorf("%w: busy=%d log=%d checkpointed=%d", ErrCheckpoint, busy, logFrames, done)
}

// Close closes the vault file and drops the cached keys. It does not close the KEK.
func (v *Vault) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	v.cache.SetEnabled(false)
	return v.db.Close()
}

// dataKey returns the key of (subject, group), from the cache or the file, creating
// it if create is set. The caller holds mu shared.
func (v *Vault) dataKey(ctx context.Context, subject domain.SubjectID, group string, create bool) (datakey.Key, error) {
	ck := datakey.CacheKey{Subject: subject, Group: group}
	if k, ok := v.cache.Get(ck); ok {
		return k, nil
	}
	// Shred holds mu exclusively, so no eviction can come between this and Add.
	gen := v.cache.Generation()
	k, err := v.loadKey(ctx, subject, group)
	if errors.Is(err, sql.ErrNoRows) {
		if !create {
			return datakey.Key{}, v.missing(ctx, subject, group)
		}
		k, err = v.createKey(ctx, subject, group)
	}
	if err != nil {
		return datakey.Key{}, err
	}
	v.cache.Add(ck, k, gen)
	return k, nil
}

// loadKey reads and unwraps the key of (subject, group); sql.ErrNoRows if it has none.
func (v *Vault) loadKey(ctx context.Context, subject domain.SubjectID, group string) (datakey.Key, error) {
	var kekID string
	var wrapped []byte
	err := v.db.QueryRowContext(ctx, selectKeySQL, subject, group).Scan(&kekID, &wrapped)
	if errors.Is(err, sql.ErrNoRows) {
		return datakey.Key{}, err
	}
	if err != nil {
		return datakey.Key{}, fmt.Errorf("keyvault: subject %s group %s: read key: %w", subject, group, err)
	}
	if kekID != v.kekID {
		return datakey.Key{}, fmt.Errorf("keyvault: subject %s group %s: %w: %q", subject, group, ErrWrongKEK, kekID)
	}
	k, err := v.unwrap(ctx, string(subject), group, wrapped)
	if err != nil {
		return datakey.Key{}, fmt.Errorf("keyvault: subject %s group %s: %w", subject, group, err)
	}
	return k, nil
}

// missing says why (subject, group) has no key: shredded, or never created.
func (v *Vault) missing(ctx context.Context, subject domain.SubjectID, group string) error {
	var shredded bool
	if err := v.db.QueryRowContext(ctx, shreddedSQL, subject, group).Scan(&shredded); err != nil {
		return fmt.Errorf("keyvault: subject %s group %s: %w", subject, group, err)
	}
	if shredded {
		return fmt.Errorf("keyvault: subject %s group %s: %w", subject, group, ErrShredded)
	}
	return fmt.Errorf("keyvault: subject %s group %s: %w", subject, group, ErrNoKey)
}

func (v *Vault) createKey(ctx context.Context, subject domain.SubjectID, group string) (datakey.Key, error) {
	h, key, err := datakey.New()
	if err != nil {
		return datakey.Key{}, fmt.Errorf("keyvault: %w", err)
	}
	wrapped, err := datakey.Wrap(ctx, h, v.kek, wrapAD(string(subject), group))
	if err != nil {
		return datakey.Key{}, fmt.Errorf("keyvault: subject %s group %s: wrap key: %w", subject, group, err)
	}
	res, err := v.db.ExecContext(ctx, insertKeySQL,
		subject, group, v.kekID, wrapped, v.now().UnixNano(), subject, group)
	if err != nil {
		return datakey.Key{}, fmt.Errorf("keyvault: subject %s group %s: store key: %w", subject, group, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return datakey.Key{}, fmt.Errorf("keyvault: subject %s group %s: store key: %w", subject, group, err)
	} else if n == 1 {
		return key, nil
	}
	// Another caller stored a key first, or the pair is shredded.
	k, err := v.loadKey(ctx, subject, group)
	if errors.Is(err, sql.ErrNoRows) {
		return datakey.Key{}, v.missing(ctx, subject, group)
	}
	return k, err
}

func (v *Vault) unwrap(ctx context.Context, subject, group string, wrapped []byte) (datakey.Key, error) {
	h, err := datakey.Unwrap(ctx, wrapped, v.kek, wrapAD(subject, group))
	if err != nil {
		return datakey.Key{}, fmt.Errorf("unwrap key: %w", err)
	}
	return datakey.FromHandle(h)
}

// checkNames applies the domain's rules for names in sealed parts (printable ASCII,
// no spaces, at most domain.MaxNameLen bytes). Errors do not quote a rejected name:
// it is not known to be a pseudonym.
func checkNames(subject domain.SubjectID, group string) error {
	if err := checkSubject(subject); err != nil {
		return err
	}
	return checkGroup(group)
}

func checkSubject(subject domain.SubjectID) error {
	if !datakey.Printable(string(subject), domain.MaxNameLen) {
		return errors.New("keyvault: subject id is empty, too long or not printable ASCII")
	}
	return nil
}

// checkGroup also rejects "*", which tombstones use for "every group".
func checkGroup(group string) error {
	if !datakey.ValidGroup(group) {
		return errors.New("keyvault: key group is empty, \"*\", too long or not printable ASCII")
	}
	return nil
}

// Backup writes to dst, a file that must not exist, a consistent copy of the
// vault file at path, which may be open meanwhile, in this process or another
// (a running server): SQLite copies it inside one read transaction (VACUUM
// INTO). The copy holds the live rows only (wrapped keys, shred tombstones,
// KEK ids): it is built afresh, so no page of a shredded key, in the file's
// free pages or its -wal, is carried into it. It is made with mode 0600,
// checked and synced.
//
// A backup holds every key that was not yet shredded when it was taken: it
// must be kept no longer than erasures may take, and restoring it must
// shred again every erasure the ledger records (docs/backup.md).
func Backup(ctx context.Context, path, dst string) error {
	if err := sqlitefile.Copy(ctx, path, dst, checkCopy); err != nil {
		return fmt.Errorf("keyvault backup: %w", err)
	}
	return nil
}

// checkCopy checks that the copied vault file c has a schema version this
// program knows.
func checkCopy(ctx context.Context, c *sql.DB) error {
	var version int
	if err := c.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("check the copy: %w", err)
	}
	if version < 1 || version > schemaVersion {
		return fmt.Errorf("the copy has schema version %d, this program knows 1 to %d", version, schemaVersion)
	}
	return nil
}
