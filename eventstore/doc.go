// Package eventstore defines Store, the append-only ledger every caledger
// backend implements, and its errors.
//
// Implementations: sqlite (the embedded default) and kurrent (a KurrentDB
// cluster, tested over the kurrenttest protocol double). The storetest package is the
// conformance suite each implementation runs in its own tests.
package eventstore
