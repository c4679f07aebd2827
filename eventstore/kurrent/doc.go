// Package kurrent is an eventstore.Store on a KurrentDB cluster (26.1 or
// later), through KurrentDB-Client-Go.
//
// docs/distributed.md ("Ledger on KurrentDB") has the design, its failure
// modes and its limits; this is the summary.
//
// # Mapping
//
// Caledger stream s is KurrentDB stream Prefix+s (default prefix "caledger-").
// Each caledger event is one KurrentDB event: its canonical encoding (domain
// codec, with position and version filled in) as binary data, its type as
// event type, its id as event id, no metadata. Version v is revision v-1.
//
// # Positions
//
// Every append is one AppendRecords transaction whose first record is a commit
// record in the commit stream (Prefix+"$commits") announcing the global
// positions first..last its events take, followed by the events, with a
// consistency check that the commit stream is still at the revision the writer
// last saw. The commit stream is therefore a single sequence: two commits can
// never claim the same positions, and positions are claimed with their events
// or not at all. ReadAll and Follow read $all through a subscription filtered
// on the server to the prefix, starting after the commit found by a binary
// search of the commit stream, and check that positions run on without a gap.
//
// # Concurrency
//
// Expected versions become consistency checks: NoStream is "no stream",
// Exact(v) is revision v-1. Any and StreamExists are settled first (from a cache
// or a read), because the version is part of the bytes; a wrong guess is
// corrected and retried. A failed check is a *domain.WrongVersionError with the
// actual version KurrentDB reported. One writer goroutine group-commits: the
// appends queued during one round trip go out in the next.
//
// # Connection loss
//
// A commit whose reply is lost is resolved through the commit stream: the
// revision it would occupy holds it (written), holds another record (not
// written), or is free, in which case an empty commit record is written there
// first so the lost one can never succeed. If that cannot be learnt within
// Options.ResolveTimeout the append fails with eventstore.ErrFailed and the
// store refuses appends until reopened. Every request asks for the leader, so
// reads see every acknowledged append. Reads retry through connection loss,
// Follow resubscribes from the last commit it fully delivered, and the
// connection is re-established with exponential backoff (see conn.go for why a
// client is replaced rather than reused after a connection error).
package kurrent
