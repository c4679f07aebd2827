// Package projections keeps caledger's read models (certificates, subjects,
// revocations and the access log) in one SQLite file, built from the ledger and
// rebuildable from it at any time.
//
// # Checkpoints
//
// Each projection has its own checkpoint: the position of the last ledger event
// it applied, written in the same transaction as the rows that event changed, so
// a crash loses neither or both. Run reads the ledger from the lowest checkpoint
// and each projection skips what it has already applied; a projection whose
// stored layout is older than the program's is emptied on Open and catches up
// alone while the others stay served. Rebuild empties them all and replays from
// position 1. The file is opened with synchronous=NORMAL: a power loss may undo
// the last commits, which Run then applies again.
//
// A checkpoint also records the id of its event. When Run starts it compares it
// with the ledger and rebuilds a projection whose checkpoint names another event
// or lies past the head (the ledger was restored from an older backup, or the
// file belongs to another ledger); until then WaitFor trusts no checkpoint.
//
// # Personal data
//
// Only the subjects view holds personal data, in the table subject_attributes:
// the attribute values of subject.registered and subject.corrected, opened with
// the vault. Nothing else is written anywhere: not in other tables, logs or
// errors (a sealed part that fails to decode gives an error without its text),
// and sorts stay in memory (temp_store=MEMORY). The file and its directory are
// private to the owner.
//
// An erasure of a whole subject deletes its rows; an erasure of key groups
// deletes the values those groups set, and an attribute falls back to the value
// an earlier event set under a group still held, exactly as a replay would find
// it. The file has secure_delete on, so deleted rows are overwritten with zeros,
// and the commit of an erasure is followed by a WAL checkpoint with TRUNCATE, so
// no old frame keeps a copy; WaitFor for the erasure's position returns after
// that (if a reader blocks the checkpoint past the busy timeout, it is logged and
// retried at the next commit). A sealed part whose key was destroyed is skipped,
// so a rebuild after an erasure yields no personal data of that subject.
//
// # Lag
//
// Run applies up to Options.BatchSize events per transaction while catching up,
// and commits as soon as no next event is ready, so in steady state an
// event is visible a few milliseconds after its append. WaitFor gives callers
// read-your-writes; Lag reports per projection how many events are not applied
// and how old the oldest of them is, for the caledger_view_lag_seconds gauge.
package projections
