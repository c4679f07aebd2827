// Package sqlite is the embedded eventstore.Store: a commit log and two SQLite
// files in one directory, owned by one process at a time.
//
// # Files
//
//	ledger-0.log     the commit log, two preallocated files used in turn
//	ledger-1.log     (commitlog.go): what makes an append durable
//	ledger.db        the events, in chunks keyed by first position
//	ledger-index.db  the stream index (stream, version) -> position, derived
//	ledger.lock      an flock that keeps a second process out
//
// # Write path
//
// Appends are group-committed: callers encode their events in their own goroutine
// and queue them; one writer goroutine takes everything queued, checks expected
// versions, patches positions and versions into the encoded bytes, packs them into
// chunks of up to 64 KiB (chunk.go) and writes the chunks to the commit log with
// one write and one fdatasync. Every caller in the group is acknowledged after
// that. A lone caller is committed at once, in its own goroutine when the queue is
// empty and no commit is under way; nothing waits for a group to fill. One mutex
// makes every commit exclusive, whichever goroutine runs it.
//
// The committed chunks wait in memory (tail.go), where readers find them, until
// the drainer (drain.go) writes them to ledger.db: every 20 ms, many commits per
// transaction (WAL, synchronous=FULL). A log file is reused only once ledger.db
// durably holds everything it held, and Open replays into ledger.db the whole
// commits the log holds past ledger.db's head (a torn last commit, never
// acknowledged, is dropped whole). So together the log and ledger.db are the
// durable truth; after Open (and after Close) ledger.db alone is.
//
// # Why the stream index is a separate file
//
// Stream names hold random serials and pseudonyms, so index entries land on random
// B-tree pages. Written in the commit transaction they dirtied about one page per
// event and cut throughput by two thirds (docs/eventstore.md has the figures). So
// the index entries go to an in-memory table that a background goroutine flushes,
// sorted, into ledger-index.db (synchronous=NORMAL: it is never corrupted, but may
// lose its last flushes in a power loss). The index records the last position it
// covers; on open the events after it are read back from ledger.db into memory.
package sqlite
