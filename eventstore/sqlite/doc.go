// Package sqlite is the embedded eventstore.Store: two SQLite files in one
// directory, owned by one process at a time.
//
// # Files
//
//	ledger.db        the events, in chunks keyed by first position: the durable truth
//	ledger-index.db  the stream index (stream, version) -> position, derived
//	ledger.lock      an flock that keeps a second process out
//
// # Write path
//
// Appends are group-committed: callers encode their events in their own goroutine
// and queue them; one writer goroutine takes everything queued, checks expected
// versions, patches positions and versions into the encoded bytes, packs them into
// chunks of up to 64 KiB (chunk.go) and writes them in one transaction (WAL,
// synchronous=FULL: one fsync). Every caller in the group is acknowledged after
// that fsync. A lone caller is committed at once, in its own goroutine when the
// queue is empty and no commit is under way; nothing waits for a group to fill.
// One mutex makes every commit exclusive, whichever goroutine runs it. Under load,
// checkpoint.go keeps SQLite's WAL checkpoints short.
//
// # Why the stream index is a separate file
//
// Stream names hold random serials and pseudonyms, so index entries land on random
// B-tree pages. Written in the commit transaction they dirtied about one page per
// event and cut throughput by two thirds (docs/eventstore.md has the figures). So a
// commit writes only the event chunks, which are sequential; the index entries go to
// an in-memory table that a background goroutine flushes, sorted, into
// ledger-index.db (synchronous=NORMAL: it is never corrupted, but may lose its last
// flushes in a power loss). The index records the last position it covers; on open
// the events after it are read back from ledger.db into memory. The ledger is
// therefore the only file whose durability matters.
package sqlite
