// Package kurrenttest is a test double for KurrentDB: an in-process gRPC server,
// over TLS, that speaks the part of the KurrentDB protocol that
// KurrentDB-Client-Go v1.4.0 uses for the operations eventstore/kurrent needs.
// It is not a database: events live in memory, nothing is synced to disk, there
// is no cluster, no ACL beyond one set of users, no scavenging, no projections.
// Use it to test code that talks to KurrentDB, never to run it.
//
// # What it implements
//
//   - event_store.client.server_features.ServerFeatures/GetSupportedMethods:
//     the version (Options.Version, default 26.1.0) and the RPCs below, so the
//     client enables AppendRecords;
//   - event_store.client.gossip.Gossip/Read: a cluster of one alive leader, for
//     kurrentdb+discover:// connection strings;
//   - event_store.client.streams.Streams/Read: reads of a stream (forwards and
//     backwards, from a revision, the start or the end, with a count; a missing
//     stream answers StreamNotFound, which the client turns into
//     ErrorCodeResourceNotFound) and of $all (from a position, inclusive, the
//     start or the end, with an optional stream-name or event-type filter by
//     prefixes or regular expression); catch-up subscriptions to a stream or to
//     $all: a confirmation, the existing events after the starting point
//     (exclusive), then CaughtUp, then new events as they are appended; filtered
//     $all subscriptions also send checkpoints;
//   - event_store.client.streams.Streams/Append: the v1 single-stream append. A
//     failed expected revision is answered, as by KurrentDB, with a
//     WrongExpectedVersion result (current and expected revision, in both the
//     current and the pre-20.6 fields), which the client reports as
//     ErrorCodeWrongExpectedVersion;
//   - kurrentdb.protocol.v2.streams.StreamsService/AppendRecords: an atomic
//     append to any number of streams, in request order, after consistency
//     checks on any streams; failed checks are all reported in one
//     FAILED_PRECONDITION status carrying AppendConsistencyViolationErrorDetails;
//     oversized records and transactions get the size-exceeded details.
//
// Credentials (Options.Users) are checked as HTTP Basic: a wrong password is
// UNAUTHENTICATED, none at all PERMISSION_DENIED.
//
// # Faults
//
// DropConnections cuts every connection as a network failure would; Stop and
// Restart take the server down and bring it back on the same port with the same
// events; InjectAppendFault makes the next append drop the connections before
// or after it is applied, or stop the server after it is applied.
// StartFollower adds a second node on the same events that refuses requests
// carrying "requires-leader" the way a KurrentDB follower does (NOT_FOUND with
// the leader's address in the trailers), and Requests counts how many requests
// carried that header.
//
// # Known differences from KurrentDB
//
// Positions are made-up byte offsets (all records of one append share the
// commit position, as on KurrentDB); regular expressions are Go's RE2, not
// .NET's; subscriptions never fall behind, so FellBehind is never sent; there
// are no soft deletes, tombstones, stream metadata, links, system projections,
// idempotent retries of v1 appends, BatchAppend or v2 AppendSession; the custom
// metadata of AppendRecords events only approximates KurrentDB's.
package kurrenttest
