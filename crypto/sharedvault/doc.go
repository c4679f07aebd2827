// Package sharedvault is a domain.Sealer for several stateless nodes sharing one
// ledger: the per-subject data keys live, wrapped by a KEK, as events in the ledger's
// own store (eventstore.Store; KurrentDB in production), and erasure is completed by
// destroying KEK epochs rather than by deleting rows, which an append-only engine
// cannot do. docs/distributed.md ("Shared key vault") has the reasoning.
//
// # Keys
//
// Each (subject, key group) has one Tink AES-256-GCM keyset, created on the first
// Seal on any node, wrapped by the current epoch's KEK with associated data that
// binds it to (subject, group, epoch), and appended as vault.key-created to the
// stream "vault-<subject>" at the exact version the creator read. Two nodes racing
// to create a key both append at that version; one wins, the other gets
// ErrWrongVersion, re-reads and uses the winner's key. A key can never be created
// after its tombstone, for the same reason.
//
// # Tombstones
//
// Shred appends vault.keys-shredded to the subject's stream. An Open or Seal of a
// key this node has not cached reads the stream first, so it sees every tombstone
// appended before it started. Cached keys (kept only while Run follows the store)
// are evicted when Run reads the tombstone: until then, for the subscription lag,
// a node may still use a key another node shredded.
//
// # Epochs
//
// The stream "vault.epochs" records each epoch's KEK (vault.epoch-started) and its
// retirement. Rotate starts an epoch and re-wraps every surviving key under it
// (vault.key-rewrapped, at an exact stream version, so never after a tombstone);
// RetireEpoch marks an old epoch retiring, re-wraps whatever is still under it, and
// records it retired; DestroyEpoch destroys its KEK (through Destroyer) and records
// that. ErasureStatus reports an erasure complete only once every epoch that wrapped
// a copy of the shredded keys is destroyed.
//
// A node may not have heard of a new epoch and wrap a new key under a retiring one.
// So before any node uses a key it has just created or unwrapped, it reads the epoch
// stream afresh and, if the key's epoch is retiring, re-wraps the key under the
// current epoch itself: a key in use was therefore either in the store before its
// epoch started retiring (and RetireEpoch's sweep moves it) or moved by its user.
//
// # Store events
//
// Vault events are not domain catalogue events; the domain never reads their
// streams and projections skip their types. Their payloads are JSON in the public
// part: a wrapped keyset (useless without its KEK), a group name, epoch numbers and
// KEK ids. Nothing in them, in errors or in logs is key material or plaintext.
package sharedvault
