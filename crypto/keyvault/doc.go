// Package keyvault keeps the per-subject data keys that seal personal data, and
// destroys them on erasure (crypto-shredding).
//
// # Keys
//
// Each (subject, key group) has its own Tink AES-256-GCM keyset, created on the first
// Seal. The vault stores it only wrapped by a KEK, with associated data that binds it
// to its (subject, group), in a SQLite file beside (never inside) the ledger. A
// bounded LRU cache keeps recently used keys unwrapped in memory.
//
// # Shredding
//
// Shred writes a tombstone, deletes the wrapped keys with SQLite's secure_delete on
// (freed bytes are zeroed), checkpoints the WAL with TRUNCATE, checks that the
// checkpoint completed, and evicts the keys from the cache. After it returns nil the
// key bytes are gone from the vault's files; Seal and Open for the shredded pairs fail
// with ErrShredded. docs/keyvault.md describes what is left outside the files' live
// content (freed filesystem blocks, SSD remapping, backups) and how KEK epochs deal
// with it.
package keyvault
