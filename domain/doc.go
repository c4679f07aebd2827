// Package domain holds caledger's ledger vocabulary and business rules: the event
// envelope and its canonical encoding, the event catalogue, the Subject and
// Certificate aggregates with their invariants, and the command handlers that run
// them.
//
// # Purity
//
// domain imports only the standard library. Storage, key management and signing are
// reached through the small interfaces in ports.go, implemented in eventstore/ and
// crypto/. Time and randomness are passed in, so every rule can be tested with a
// fixed clock and a fixed random source.
//
// # Personal data
//
// An event has a public part, readable by auditors, and an optional sealed part,
// encrypted under a per-subject key. Anything that identifies a person goes in the
// sealed part; docs/events.md lists every field and where it lives. Aggregates only
// ever see public parts: rules that would need personal data do not belong here.
package domain
