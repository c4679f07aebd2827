package keyvault

// schemaVersion is stored in PRAGMA user_version. Bump it with a migration when the
// tables change; Open refuses a file with a newer version.
const schemaVersion = 1

// The vault's tables. Nothing here holds key material in the clear: wrapped is the
// binary Tink EncryptedKeyset, readable only with the KEK named by kek_id.
//
// keks lists every KEK that has wrapped keys in this file. It exists for KEK epochs:
// re-wrapping rows under a new KEK and then destroying the old one, after which the
// old KEK's rows (and every copy of them in backups) are useless.
const schemaSQL = `
CREATE TABLE IF NOT EXISTS data_keys (
	subject    TEXT    NOT NULL,
	key_group  TEXT    NOT NULL,
	kek_id     TEXT    NOT NULL,
	wrapped    BLOB    NOT NULL,
	created_ns INTEGER NOT NULL,
	PRIMARY KEY (subject, key_group)
);
CREATE INDEX IF NOT EXISTS data_keys_kek ON data_keys (kek_id);
CREATE TABLE IF NOT EXISTS shreds (
	subject     TEXT    NOT NULL,
	key_group   TEXT    NOT NULL, -- '*': every group of the subject, now and later
	shredded_ns INTEGER NOT NULL,
	PRIMARY KEY (subject, key_group)
);
CREATE TABLE IF NOT EXISTS keks (
	kek_id   TEXT    NOT NULL PRIMARY KEY,
	added_ns INTEGER NOT NULL
);
`

const (
	selectKeySQL = `SELECT kek_id, wrapped FROM data_keys WHERE subject = ? AND key_group = ?`

	// The NOT EXISTS makes creation safe against a shred that committed after this
	// caller looked, even from another process; OR IGNORE lets concurrent first
	// Seals race, the loser re-reading the winner's row.
	insertKeySQL = `INSERT OR IGNORE INTO data_keys (subject, key_group, kek_id, wrapped, created_ns)
SELECT ?, ?, ?, ?, ?
WHERE NOT EXISTS (SELECT 1 FROM shreds WHERE subject = ? AND key_group IN (?, '*'))`

	shreddedSQL = `SELECT EXISTS (SELECT 1 FROM shreds WHERE subject = ? AND key_group IN (?, '*'))`

	selectShredsSQL = `SELECT key_group FROM shreds WHERE subject = ? ORDER BY shredded_ns, key_group`
	insertShredSQL  = `INSERT OR IGNORE INTO shreds (subject, key_group, shredded_ns) VALUES (?, ?, ?)`
	deleteGroupSQL  = `DELETE FROM data_keys WHERE subject = ? AND key_group = ?`
	deleteAllSQL    = `DELETE FROM data_keys WHERE subject = ?`
)
