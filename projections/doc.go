// Package projections will hold caledger's read models: certificates, subjects
// (searchable), revocations and the access log, each rebuilt from the ledger
// through eventstore.Store.Follow and keeping its own checkpoint.
//
// There are none yet: they come with the CA core (issuance, revocation, CRL and
// OCSP need them). This file only keeps the package in the fixed layout.
package projections
